"""PPO's settings: :class:`PPOConfig` (every hyperparameter) and :class:`MAPPOSettings` (the subset a
method or a finetuning run exposes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from marlkd.config import check
from marlkd.envs import EnvSpec
from marlkd.errors import ConfigError

MODES = ("centralized", "mappo")
ADVANTAGES = ("per_agent", "team")
CRITIC_INPUTS = ("auto", "joint_obs", "state")


@dataclass(frozen=True)
class PPOConfig:
    """Every PPO hyperparameter.

    Attributes:
        mode: ``centralized`` (joint-observation actor, one head per agent) or ``mappo`` (shared actor on
            own observation + agent id, centralized critic).
        total_steps: training budget in environment steps (one step of one copy).
        num_envs: environment copies per rollout; a rollout is one episode in each.
        hidden: width of the actor's and the critic's two hidden layers.
        lr: actor Adam learning rate.
        critic_lr: critic Adam learning rate.
        anneal_lr: decay both learning rates linearly to zero over ``total_steps``.
        gamma: discount factor.
        gae_lambda: GAE lambda.
        clip: PPO ratio clip epsilon.
        ent_coef: entropy bonus coefficient (per agent, averaged).
        epochs: passes over each rollout.
        minibatches: minibatches per epoch (a sample is one timestep of one copy, all agents).
        max_grad_norm: gradient-norm clip, applied to the actor and the critic separately; 0 disables.
        advantage: ``per_agent`` (each agent's own reward) or ``team`` (the sum over agents for everyone).
        critic_input: ``auto`` (centralized: joint observation; mappo: the global state when the
            environment has one, else the joint observation), ``joint_obs`` or ``state``.
        value_norm: learn the value in units of running return statistics (as MAPPO's ValueNorm).
        reward_scale: multiplies rewards for learning only (curves report unscaled returns).
        checkpoint_every: environment steps between kept checkpoints in ``checkpoints/``; 0 keeps only
            the final one.
        checkpoint_growth: when above 1, also keep the checkpoints of iterations 1, 2, 3, ... spaced
            geometrically by this factor (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, ... for 1.2): dense early,
            where the return changes fastest (the checkpoint dataset tiers pick from them); 0 disables.
        seed: seeds network initialisation, action sampling and the environment resets.
        device: torch device of the networks (the environments are NumPy).
    """

    mode: str = "centralized"
    total_steps: int = 300_000
    num_envs: int = 64
    hidden: int = 128
    lr: float = 3e-4
    critic_lr: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.01
    epochs: int = 4
    minibatches: int = 4
    max_grad_norm: float = 0.5
    advantage: str = "per_agent"
    critic_input: str = "auto"
    value_norm: bool = True
    reward_scale: float = 1.0
    checkpoint_every: int = 0
    checkpoint_growth: float = 0.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check(self.mode in MODES, "ppo.mode", f"must be one of {MODES}, got {self.mode!r}")
        check(self.total_steps >= 1, "ppo.total_steps", f"must be >= 1, got {self.total_steps}")
        check(self.num_envs >= 1, "ppo.num_envs", f"must be >= 1, got {self.num_envs}")
        check(self.hidden >= 1, "ppo.hidden", f"must be >= 1, got {self.hidden}")
        check(self.lr > 0, "ppo.lr", f"must be > 0, got {self.lr}")
        check(self.critic_lr > 0, "ppo.critic_lr", f"must be > 0, got {self.critic_lr}")
        check(0 <= self.gamma <= 1, "ppo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(0 <= self.gae_lambda <= 1, "ppo.gae_lambda", f"must be in [0, 1], got {self.gae_lambda}")
        check(self.clip > 0, "ppo.clip", f"must be > 0, got {self.clip}")
        check(self.ent_coef >= 0, "ppo.ent_coef", f"must be >= 0, got {self.ent_coef}")
        check(self.epochs >= 1, "ppo.epochs", f"must be >= 1, got {self.epochs}")
        check(self.minibatches >= 1, "ppo.minibatches", f"must be >= 1, got {self.minibatches}")
        check(self.max_grad_norm >= 0, "ppo.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        check(self.advantage in ADVANTAGES, "ppo.advantage", f"must be one of {ADVANTAGES}")
        check(self.critic_input in CRITIC_INPUTS, "ppo.critic_input", f"must be one of {CRITIC_INPUTS}")
        check(self.reward_scale > 0, "ppo.reward_scale", f"must be > 0, got {self.reward_scale}")
        check(self.checkpoint_every >= 0, "ppo.checkpoint_every", "must be >= 0")
        check(
            self.checkpoint_growth == 0 or self.checkpoint_growth > 1,
            "ppo.checkpoint_growth",
            f"must be 0 (off) or > 1, got {self.checkpoint_growth}",
        )
        check(self.device in ("cpu", "cuda"), "ppo.device", f"must be cpu or cuda, got {self.device!r}")

    def resolved_critic_input(self, spec: EnvSpec) -> str:
        """``joint_obs`` or ``state``: what the critic reads on the environment ``spec``."""
        if self.critic_input == "auto":
            return "state" if self.mode == "mappo" and spec.state_dim > 0 else "joint_obs"
        if self.critic_input == "state" and spec.state_dim == 0:
            raise ConfigError(f"config field ppo.critic_input: {spec.env_id!r} has no global state")
        return self.critic_input


@dataclass(frozen=True)
class MAPPOSettings:
    """The MAPPO settings a method or a finetuning run exposes: a subset of :class:`PPOConfig` under the
    same names, with ``env_steps`` for its ``total_steps`` (GAIL/AIRL's and finetuning's configs extend
    it). Validated by PPO's own checks; an error names the field under ``SECTION``.

    Attributes:
        env_steps: environment-step budget (one step of one copy).
        num_envs: environment copies per rollout.
        hidden: width of the MAPPO actor's and critic's hidden layers.
        lr: actor learning rate (decays linearly to 0).
        critic_lr: critic learning rate (decays linearly to 0).
        gamma: discount factor.
        gae_lambda: GAE lambda.
        clip: PPO ratio clip epsilon.
        ent_coef: entropy bonus coefficient.
        epochs: PPO passes over each rollout.
        minibatches: minibatches per pass.
    """

    SECTION: ClassVar[str] = "algo"

    env_steps: int = 200_000
    num_envs: int = 32
    # PPO's own defaults for the rest
    hidden: int = PPOConfig.hidden
    lr: float = PPOConfig.lr
    critic_lr: float = PPOConfig.critic_lr
    gamma: float = PPOConfig.gamma
    gae_lambda: float = PPOConfig.gae_lambda
    clip: float = PPOConfig.clip
    ent_coef: float = PPOConfig.ent_coef
    epochs: int = PPOConfig.epochs
    minibatches: int = PPOConfig.minibatches

    def __post_init__(self) -> None:
        check(self.env_steps >= 1, f"{self.SECTION}.env_steps", f"must be >= 1, got {self.env_steps}")
        try:
            self.ppo_config(0, "cpu")
        except ConfigError as exc:
            raise ConfigError(
                str(exc).replace("config field ppo.", f"config field {self.SECTION}.")
            ) from None

    def ppo_config(self, seed: int, device: str) -> PPOConfig:
        """The MAPPO configuration these settings stand for."""
        return PPOConfig(
            mode="mappo",
            total_steps=self.env_steps,
            num_envs=self.num_envs,
            hidden=self.hidden,
            lr=self.lr,
            critic_lr=self.critic_lr,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            clip=self.clip,
            ent_coef=self.ent_coef,
            epochs=self.epochs,
            minibatches=self.minibatches,
            seed=seed,
            device=device,
        )
