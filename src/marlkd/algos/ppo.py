"""PPO for multi-agent teams over a batched environment: a centralized expert, or MAPPO.

One rollout is one episode in each of ``num_envs`` environment copies (``spec.max_steps`` steps at most);
advantages come from GAE on per-agent rewards; the update is the clipped surrogate with an entropy bonus
and a squared-error value loss, over a few epochs of minibatches. Two agent layouts (``PPOConfig.mode``):

- ``centralized``: one actor reads the joint observation (all agents' observations concatenated) and has
  one action head per agent; the critic reads the joint observation too. This is the paper's expert for
  the native environments and Highway. It is not a decentralized policy: agent i's action depends on the
  others' observations.
- ``mappo``: one actor with shared weights reads each agent's own observation plus its one-hot agent id
  (decentralized execution); the critic is centralized: it reads the global state when the environment has
  one, else the joint observation.

In both modes the critic has one value output per agent and each agent's advantage comes from its own
reward (``advantage="per_agent"``, the default: on shared-reward tasks this is the team reward, and on
tasks with individual rewards such as Grid-World it credits each agent with what it earned), or from the
team's summed reward (``advantage="team"``). The probability ratio is clipped per agent, as in MAPPO.
Unavailable actions (``BatchedEnv.action_mask``) get zero probability in both modes. The end of an
episode (termination or the time limit) is final: PPO optimises the finite-horizon episode return, which
is what evaluation measures.

Hooks for code that trains a policy with PPO (the API is :func:`train_ppo`):

- ``actor``: your own ``nn.Module`` mapping ``obs (M, N, O)`` to logits ``(M, N, A)`` (M any batch of
  timesteps), e.g. an online finetuning that starts from pretrained students; ``init_actor_state``
  loads a state dict into the actor (built-in or yours) before training.
- ``reward_fn(obs (M,N,O), actions (M,N), next_obs (M,N,O)) -> rewards (M,N)`` (NumPy in, array-like
  out) replaces the environment reward for learning, e.g. the discriminator reward of GAIL or AIRL. It is
  called once per rollout on all its steps. The learning curve keeps reporting the environment's return.
- ``callback(iteration: PPOIteration) -> bool | None`` runs after every update with that iteration's
  rollout (observations, actions, next observations, validity) and statistics; an adversarial imitation
  method updates its discriminator there. Returning True stops training.
- Sequence actors: an actor with an int attribute ``history_len`` K >= 1 (e.g. a pretrained decision
  transformer being finetuned) is called on a :class:`History` (each copy's last K steps: observations,
  earlier actions, the reward received so far, timesteps, mask) instead of the current observation, in the
  rollout and in the update alike; it returns the logits of the current step ``(M, N, A)``.

Outputs in ``out_dir``: ``checkpoint.pt`` (the latest; written atomically), ``checkpoints/step_*.pt``
(every ``checkpoint_every`` environment steps), ``learning_curve.csv`` (environment steps, mean
per-agent episode return, losses), ``learning_curve.png`` and ``config.json``. :func:`load_ppo_policy`
turns a checkpoint into a :class:`marlkd.algos.base.Policy`; its ``act_fn`` is the collection callback of
:func:`marlkd.data.collect.collect_episodes`.

Environment steps are counted per copy: one step of one environment copy (all its agents) is one step.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlkd import atomic
from marlkd.config import check
from marlkd.envs import EnvSpec, make_batched
from marlkd.errors import ConfigError, MarlkdError
from marlkd.models.layouts import masked_logits

MODES = ("centralized", "mappo")
ADVANTAGES = ("per_agent", "team")
CRITIC_INPUTS = ("auto", "joint_obs", "state")
CHECKPOINT_FORMAT = "marlkd-ppo"
CHECKPOINT_VERSION = 1


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
    hidden: int = 128
    lr: float = 3e-4
    critic_lr: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.01
    epochs: int = 4
    minibatches: int = 4

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


# ---------------------------------------------------------------------------------------------- networks


def _mlp(in_dim: int, hidden: int, out_dim: int, out_gain: float) -> nn.Sequential:
    """Two tanh hidden layers, orthogonal initialisation (gain sqrt 2 inside, ``out_gain`` at the output)."""
    layers = [
        nn.Linear(in_dim, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, out_dim),
    ]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, out_gain if layer.out_features == out_dim else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class CentralizedActor(nn.Module):
    """Joint observation -> one action head per agent: obs ``(M, N, O)`` -> logits ``(M, N, A)``."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        self.net = _mlp(n_agents * obs_dim, hidden, n_agents * n_actions, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        logits = self.net(obs.flatten(-2))  # (M, N*A)
        return logits.unflatten(-1, (self.n_agents, self.n_actions))  # (M, N, A)


class SharedActor(nn.Module):
    """MAPPO's actor: shared weights on own observation + one-hot id: obs ``(M, N, O)`` -> ``(M, N, A)``."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.net = _mlp(obs_dim + n_agents, hidden, n_actions, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        agent_id = torch.eye(self.n_agents, device=obs.device, dtype=obs.dtype)  # (N, N)
        agent_id = agent_id.expand(*obs.shape[:-2], -1, -1)  # (M, N, N)
        return self.net(torch.cat([obs, agent_id], dim=-1))  # (M, N, A)


class Critic(nn.Module):
    """Centralized critic: critic input ``(M, C)`` -> one value per agent ``(M, N)``."""

    def __init__(self, in_dim: int, n_agents: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden, n_agents, out_gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_actor(config: PPOConfig, spec: EnvSpec) -> nn.Module:
    """The built-in actor of ``config.mode`` for an environment of shape ``spec``."""
    cls = CentralizedActor if config.mode == "centralized" else SharedActor
    return cls(spec.n_agents, spec.obs_dim, spec.n_actions, config.hidden)


class RunningNorm(nn.Module):
    """Running mean and variance of value targets (MAPPO's ValueNorm without debiasing)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.zeros(()))

    def update(self, x: torch.Tensor) -> None:
        """Fold the values ``x`` (any shape) into the statistics (parallel Welford update)."""
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = x.mean(), x.var(unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.var.clamp_min(1e-8).sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.var.clamp_min(1e-8).sqrt() + self.mean


# ---------------------------------------------------------------------------------------------- losses


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a rollout, per copy and agent.

    Args:
        rewards: ``(T, B, N)`` reward of the action at step t.
        values: ``(T, B, N)`` value estimate of the state at step t.
        dones: ``(T, B, N)`` 1 where the agent's episode ended with step t (no bootstrap past it).
        last_values: ``(B, N)`` value of the state after the last step (used where not done).
        gamma: discount. gae_lambda: GAE lambda.

    Returns:
        advantages ``(T, B, N)`` and value targets ``advantages + values``. Entries after an episode's
        end are not meaningful (mask them out); they never leak into earlier steps.
    """
    not_done = 1.0 - dones.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        running = delta + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


def clipped_surrogate_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    weights: torch.Tensor,
) -> torch.Tensor:
    """PPO's clipped objective as a loss: ``-mean(min(ratio * adv, clip(ratio, 1 +- clip) * adv))``.

    All tensors share one shape (e.g. ``(M, N)``); ``weights`` (0/1) selects the valid entries.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return -(surrogate * weights).sum() / weights.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------- policy


class PPOPolicy:
    """A trained PPO actor as a :class:`marlkd.algos.base.Policy` and as a collection ``act_fn``.

    Actions are the most probable available action (``deterministic=True``) or sampled from the actor's
    distribution with a NumPy generator, so that a collection seeded the same way is reproduced exactly.
    The centralized mode's actor reads all agents' observations: it is a team expert, not a decentralized
    policy.
    """

    def __init__(self, actor: nn.Module, deterministic: bool = False, seed: int = 0, device: str = "cpu"):
        if history_len(actor):
            raise MarlkdError("PPOPolicy runs memoryless actors; a sequence actor needs its own policy")
        self.actor = actor.eval()
        self.deterministic = deterministic
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def probs(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """obs ``(B, N, O)``, action_mask ``(B, N, A)`` or None -> probabilities ``(B, N, A)`` float64."""
        logits = self.actor(torch.tensor(obs, dtype=torch.float32, device=self.device))
        mask = None if action_mask is None else torch.tensor(action_mask, device=self.device)
        logits = masked_logits(logits.float(), mask)
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def act_fn(self, obs: np.ndarray, action_mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """Collection callback: actions ``(B, N)`` int64, sampled with ``rng`` unless deterministic."""
        probs = self.probs(obs, action_mask)
        if self.deterministic:
            return probs.argmax(-1).astype(np.int64)
        return sample_categorical(probs, rng)

    def reset(self, num_envs: int) -> None:
        """Nothing to reset: the actor is memoryless."""

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        return self.act_fn(obs, action_mask, self.rng)

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """Rewards are not used: the actor is memoryless."""


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one index per row of ``probs (..., A)`` by inverse CDF; zero-probability entries never win."""
    cdf = np.cumsum(probs, axis=-1)
    u = (1.0 - rng.random(probs.shape[:-1] + (1,))) * cdf[..., -1:]  # in (0, total]
    return (cdf < u).sum(axis=-1).astype(np.int64)


# ---------------------------------------------------------------------------------------------- training


@dataclass
class Rollout:
    """One rollout: an episode in each of B copies, T = ``spec.max_steps`` steps (padded after the end).

    Shapes: ``obs``/``next_obs`` ``(T, B, N, O)``, ``actions`` ``(T, B, N)`` int64, ``env_rewards``
    ``(T, B, N)`` (the environment's, unscaled), ``valid`` ``(T, B, N)`` bool (the agent acted at step t),
    ``action_mask`` ``(T, B, N, A)`` bool, ``critic_input`` ``(T, B, C)``, ``dones`` ``(T, B, N)`` bool
    (the agent's episode ended with step t). NumPy arrays, except the PPO internals ``log_probs`` and
    ``values`` ``(T, B, N)`` tensors.
    """

    obs: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    env_rewards: np.ndarray
    valid: np.ndarray
    dones: np.ndarray
    action_mask: np.ndarray
    critic_input: np.ndarray
    log_probs: torch.Tensor
    values: torch.Tensor

    def episode_returns(self) -> np.ndarray:
        """``(B, N)`` environment return of each copy's episode, per agent."""
        return self.env_rewards.sum(axis=0)


@dataclass
class PPOIteration:
    """What ``callback`` receives after each update."""

    iteration: int
    env_steps: int
    mean_return: float  # mean per-agent episode return of this rollout (environment reward)
    stats: dict[str, float]
    rollout: Rollout


@dataclass
class PPOResult:
    """What :func:`train_ppo` returns.

    ``curve`` holds ``(env_steps, mean per-agent episode return)`` per iteration; ``final_return`` is the
    mean of the last iterations' returns (a tenth of them, at least one).
    """

    out_dir: Path
    checkpoint: Path
    env_steps: int
    iterations: int
    final_return: float
    curve: list[tuple[int, float]]
    wall_time_s: float


RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]
Callback = Callable[[PPOIteration], "bool | None"]


@dataclass
class History:
    """What a sequence actor reads at M decisions: each copy's last K steps of the current episode.

    Position K-1 is the current step; positions before the episode's start are padding (``mask`` False,
    zeros). Agent i's entries hold agent i's own data, so an actor that reads only them is decentralized.
    """

    obs: torch.Tensor  # (M, K, N, O)
    actions: torch.Tensor  # (M, K, N) int64: the action taken at each step; 0 at the current step
    reward_to_date: torch.Tensor  # (M, K, N): environment reward received in the episode before each step
    timesteps: torch.Tensor  # (M, K) int64: step index in the episode
    mask: torch.Tensor  # (M, K) bool


def history_len(actor: nn.Module) -> int:
    """K of a sequence actor (its ``history_len`` attribute), 0 for a memoryless actor."""
    return int(getattr(actor, "history_len", 0))


def gather_history(
    obs: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    step: torch.Tensor,
    copy: torch.Tensor,
    context: int,
) -> History:
    """The :class:`History` of decisions at ``step (M,)`` of copies ``copy (M,)`` of a rollout's arrays
    ``obs (T, B, N, O)``, ``actions (T, B, N)`` and ``rewards (T, B, N)`` (rollouts start at step 0)."""
    offsets = torch.arange(-context + 1, 1, device=obs.device)  # (K,)
    steps = step[:, None] + offsets  # (M, K)
    padding = (steps < 0)[..., None]  # (M, K, 1)
    at, b = steps.clamp(min=0), copy[:, None]
    reward_to_date = rewards.cumsum(0) - rewards  # (T, B, N)
    current = (offsets == 0)[None, :, None]  # (1, K, 1)
    return History(
        obs=obs[at, b].masked_fill(padding[..., None], 0.0),
        actions=actions[at, b].masked_fill(padding | current, 0),
        reward_to_date=reward_to_date[at, b].masked_fill(padding, 0.0),
        timesteps=at.masked_fill(padding[..., 0], 0),
        mask=~padding[..., 0],
    )


def _critic_input(env: Any, obs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "state":
        return np.array(env.state(), dtype=np.float32)  # (B, S); a copy: jax-backed arrays are read-only
    return obs.reshape(obs.shape[0], -1)  # (B, N*O)


@torch.no_grad()
def collect_rollout(
    env: Any,
    actor: nn.Module,
    critic: Critic,
    value_norm: RunningNorm | None,
    critic_kind: str,
    reset_seed: int,
    generator: torch.Generator,
    device: torch.device,
) -> Rollout:
    """Run one episode in every copy of ``env`` with actions sampled from ``actor``."""
    spec: EnvSpec = env.spec
    T, B, N = spec.max_steps, env.num_envs, spec.n_agents
    obs = env.reset(seed=reset_seed)
    buf: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "next", "act", "rew", "valid", "done", "mask", "crit")
    }
    log_probs, values = [], []
    agent_done = np.zeros((B, N), dtype=bool)
    context = history_len(actor)
    if context:  # the episode so far, for a sequence actor
        seen_obs = torch.zeros(T, B, N, spec.obs_dim, device=device)
        seen_actions = torch.zeros(T, B, N, dtype=torch.int64, device=device)
        seen_rewards = torch.zeros(T, B, N, device=device)
        copies = torch.arange(B, device=device)
    for t in range(T):
        mask = env.action_mask()  # (B, N, A)
        crit = _critic_input(env, obs, critic_kind)
        obs_t = torch.tensor(obs, dtype=torch.float32, device=device)  # (B, N, O)
        if context:
            seen_obs[t] = obs_t
            now = torch.full((B,), t, device=device)
            actor_input = gather_history(seen_obs, seen_actions, seen_rewards, now, copies, context)
        else:
            actor_input = obs_t
        logits = masked_logits(actor(actor_input), torch.tensor(mask, device=device))
        dist = torch.distributions.Categorical(logits=logits.float())
        probs = dist.probs.reshape(B * N, -1)
        actions = torch.multinomial(probs, 1, generator=generator).reshape(B, N)
        value = critic(torch.as_tensor(crit, device=device))  # (B, N)
        if value_norm is not None:
            value = value_norm.denormalize(value)
        actions_np = actions.cpu().numpy().astype(np.int64)
        next_obs, rewards, terminated, truncated = env.step(actions_np)
        valid = ~agent_done
        if context:
            seen_actions[t] = actions
            seen_rewards[t] = torch.as_tensor(rewards * valid, dtype=torch.float32, device=device)
        agent_done = agent_done | terminated | truncated
        for key, value_np in (
            ("obs", obs),
            ("next", next_obs),
            ("act", actions_np),
            ("rew", rewards * valid),
            ("valid", valid),
            ("done", (terminated | truncated) & valid),
            ("mask", mask),
            ("crit", crit),
        ):
            buf[key].append(np.asarray(value_np))
        log_probs.append(dist.log_prob(actions))
        values.append(value)
        obs = next_obs
        if agent_done.all():
            break
    pad = T - len(buf["obs"])
    stacked = {k: np.stack(v) for k, v in buf.items()}
    if pad:  # every copy ended early: pad to T so rollouts keep one shape
        stacked = {
            k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in stacked.items()
        }
        stacked["mask"][-pad:] = True
    log_probs_t = F.pad(torch.stack(log_probs), (0, 0, 0, 0, 0, pad))
    values_t = F.pad(torch.stack(values), (0, 0, 0, 0, 0, pad))
    return Rollout(
        obs=stacked["obs"].astype(np.float32, copy=False),
        next_obs=stacked["next"].astype(np.float32, copy=False),
        actions=stacked["act"],
        env_rewards=stacked["rew"].astype(np.float32, copy=False),
        valid=stacked["valid"],
        dones=stacked["done"],
        action_mask=stacked["mask"],
        critic_input=stacked["crit"].astype(np.float32, copy=False),
        log_probs=log_probs_t,
        values=values_t,
    )


def _learning_rewards(rollout: Rollout, config: PPOConfig, reward_fn: RewardFn | None) -> np.ndarray:
    """``(T, B, N)`` rewards PPO learns from: the environment's or ``reward_fn``'s, scaled, team-summed."""
    if reward_fn is None:
        rewards = rollout.env_rewards
    else:
        T, B = rollout.actions.shape[:2]
        flat = reward_fn(
            rollout.obs.reshape(T * B, *rollout.obs.shape[2:]),
            rollout.actions.reshape(T * B, -1),
            rollout.next_obs.reshape(T * B, *rollout.next_obs.shape[2:]),
        )
        if isinstance(flat, torch.Tensor):
            flat = flat.detach().cpu().numpy()
        rewards = np.asarray(flat, dtype=np.float32).reshape(rollout.env_rewards.shape) * rollout.valid
    if config.advantage == "team":
        rewards = np.broadcast_to(rewards.sum(axis=-1, keepdims=True), rewards.shape)
    return (rewards * config.reward_scale).astype(np.float32)


def ppo_update(
    rollout: Rollout,
    rewards: np.ndarray,
    actor: nn.Module,
    critic: Critic,
    value_norm: RunningNorm | None,
    optimizer: torch.optim.Optimizer,
    config: PPOConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """GAE on ``rewards (T, B, N)``, then ``config.epochs`` epochs of clipped-PPO minibatch steps."""

    def flat(x: np.ndarray | torch.Tensor) -> torch.Tensor:  # (T, B, ...) -> (T*B, ...)
        return torch.as_tensor(x, device=device).flatten(0, 1)

    advantages, returns = compute_gae(
        torch.as_tensor(rewards, device=device),
        rollout.values,
        torch.as_tensor(rollout.dones, device=device),
        torch.zeros_like(rollout.values[0]),
        config.gamma,
        config.gae_lambda,
    )
    valid = flat(rollout.valid)  # (M, N) bool
    advantages, returns = flat(advantages), flat(returns)
    if value_norm is not None:
        value_norm.update(returns[valid])
    advantages = (advantages - advantages[valid].mean()) / (advantages[valid].std() + 1e-8)
    samples = torch.nonzero(valid.any(-1)).squeeze(-1)  # timesteps where some agent acted
    obs, actions, mask = flat(rollout.obs), flat(rollout.actions), flat(rollout.action_mask)
    crit, old_log_probs, valid = flat(rollout.critic_input), flat(rollout.log_probs), valid.float()
    context, copies = history_len(actor), rollout.actions.shape[1]
    if context:
        episodes = tuple(
            torch.as_tensor(x, device=device) for x in (rollout.obs, rollout.actions, rollout.env_rewards)
        )

    stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_frac": 0.0}
    steps = 0
    size = math.ceil(len(samples) / config.minibatches)
    for _ in range(config.epochs):
        order = samples[torch.randperm(len(samples), generator=generator).to(device)]
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            w = valid[idx]  # (m, N)
            actor_input = (
                gather_history(*episodes, idx // copies, idx % copies, context) if context else obs[idx]
            )
            logits = masked_logits(actor(actor_input), mask[idx]).float()  # (m, N, A)
            dist = torch.distributions.Categorical(logits=logits)
            log_probs = dist.log_prob(actions[idx])
            policy_loss = clipped_surrogate_loss(
                log_probs, old_log_probs[idx], advantages[idx], config.clip, w
            )
            entropy = (dist.entropy() * w).sum() / w.sum()
            target = value_norm.normalize(returns[idx]) if value_norm is not None else returns[idx]
            value_loss = 0.5 * (((critic(crit[idx]) - target) ** 2) * w).sum() / w.sum()
            loss = policy_loss - config.ent_coef * entropy + value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(actor.parameters(), config.max_grad_norm)
                nn.utils.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                log_ratio = log_probs - old_log_probs[idx]
                kl = (((log_ratio.exp() - 1) - log_ratio) * w).sum() / w.sum()
                clipped = (((log_ratio.exp() - 1).abs() > config.clip).float() * w).sum() / w.sum()
            for key, value in (
                ("policy_loss", policy_loss),
                ("value_loss", value_loss),
                ("entropy", entropy),
                ("approx_kl", kl),
                ("clip_frac", clipped),
            ):
                stats[key] += float(value.detach())
            steps += 1
    return {k: v / max(steps, 1) for k, v in stats.items()}


def _checkpoint(
    env_id: str,
    env_kwargs: dict[str, Any],
    spec: EnvSpec,
    config: PPOConfig,
    actor: nn.Module,
    critic: Critic,
    value_norm: RunningNorm | None,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    env_steps: int,
    mean_return: float,
    builtin_actor: bool,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "spec": dataclasses.asdict(spec),
        "config": dataclasses.asdict(config),
        "builtin_actor": builtin_actor,
        "actor": actor.state_dict(),
        "critic": critic.state_dict(),
        "value_norm": value_norm.state_dict() if value_norm is not None else None,
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "env_steps": env_steps,
        "mean_return": mean_return,
    }


def plot_learning_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot mean per-agent episode return against environment steps from ``learning_curve.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(r["env_steps"]) for r in rows], [float(r["mean_return"]) for r in rows])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean per-agent episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.replacing(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


_CURVE_FIELDS = (
    "iteration",
    "env_steps",
    "mean_return",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_frac",
    "wall_time_s",
)


def train_ppo(
    env_id: str,
    config: PPOConfig,
    out_dir: str | Path,
    env_kwargs: dict[str, Any] | None = None,
    init_actor_state: dict[str, Any] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    actor: nn.Module | None = None,
    reward_fn: RewardFn | None = None,
) -> PPOResult:
    """Train a team policy with PPO on ``env_id`` for ``config.total_steps`` environment steps.

    Args:
        env_id: a registered environment id; ``env_kwargs`` its constructor arguments.
        config: the hyperparameters (``config.mode`` picks centralized PPO or MAPPO).
        out_dir: receives ``checkpoint.pt``, ``checkpoints/``, ``learning_curve.csv/.png``, ``config.json``.
        init_actor_state: a state dict loaded into the actor before training (e.g. pretrained weights).
        progress: show a tqdm bar over environment steps.
        callback: called after every update with a :class:`PPOIteration`; returning True stops training.
        actor: your own actor module (obs ``(M, N, O)`` -> logits ``(M, N, A)``) instead of the built-in
            one of ``config.mode``; :func:`load_ppo_policy` then needs it again to load the checkpoint.
        reward_fn: replaces the environment reward for learning (see the module docstring).

    Returns:
        A :class:`PPOResult` (checkpoint path, environment steps used, learning curve).
    """
    from tqdm.auto import tqdm

    env_kwargs = dict(env_kwargs or {})
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    seeds = np.random.default_rng(config.seed)

    env = make_batched(env_id, config.num_envs, **env_kwargs)
    spec = env.spec
    critic_kind = config.resolved_critic_input(spec)
    critic_dim = spec.state_dim if critic_kind == "state" else spec.n_agents * spec.obs_dim
    builtin_actor = actor is None
    actor = (build_actor(config, spec) if actor is None else actor).to(device)
    if init_actor_state is not None:
        actor.load_state_dict(init_actor_state)
    critic = Critic(critic_dim, spec.n_agents, config.hidden).to(device)
    value_norm = RunningNorm().to(device) if config.value_norm else None
    optimizer = torch.optim.Adam(
        [
            {"params": actor.parameters(), "lr": config.lr},
            {"params": critic.parameters(), "lr": config.critic_lr},
        ],
        eps=1e-5,
    )
    base_lrs = [config.lr, config.critic_lr]
    (out / "config.json").write_text(
        json.dumps({"env_id": env_id, "env_kwargs": env_kwargs, "ppo": dataclasses.asdict(config)}, indent=2)
        + "\n"
    )
    csv_path = out / "learning_curve.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerow(_CURVE_FIELDS)

    env_steps, iteration, next_keep, next_keep_iteration = 0, 0, config.checkpoint_every, 1
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=config.total_steps, disable=not progress, unit="step", desc=f"ppo {env_id}")

    def save(mean_return: float, keep: bool) -> Path:
        state = _checkpoint(
            env_id,
            env_kwargs,
            spec,
            config,
            actor,
            critic,
            value_norm,
            optimizer,
            iteration,
            env_steps,
            mean_return,
            builtin_actor,
        )
        if keep:
            atomic.torch_save(state, out / "checkpoints" / f"step_{env_steps:010d}.pt")
        atomic.torch_save(state, out / "checkpoint.pt")
        return out / "checkpoint.pt"

    try:
        while env_steps < config.total_steps:
            if config.anneal_lr:
                frac = 1.0 - env_steps / config.total_steps
                for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = lr * frac
            actor.eval()
            rollout = collect_rollout(
                env, actor, critic, value_norm, critic_kind, int(seeds.integers(2**31 - 1)), generator, device
            )
            actor.train()
            rewards = _learning_rewards(rollout, config, reward_fn)
            stats = ppo_update(
                rollout, rewards, actor, critic, value_norm, optimizer, config, generator, device
            )
            new_steps = int(rollout.valid.any(axis=-1).sum())
            env_steps += new_steps
            iteration += 1
            mean_return = float(rollout.episode_returns().mean())
            curve.append((env_steps, mean_return))
            with open(csv_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [iteration, env_steps, mean_return]
                    + [stats[k] for k in _CURVE_FIELDS[3:-1]]
                    + [time.perf_counter() - start]
                )
            bar.update(min(new_steps, config.total_steps - bar.n))
            bar.set_postfix(ret=f"{mean_return:.3f}")
            by_steps = bool(config.checkpoint_every) and env_steps >= next_keep
            by_iteration = config.checkpoint_growth > 1 and iteration >= next_keep_iteration
            if by_steps or by_iteration:
                save(mean_return, keep=True)
                while config.checkpoint_every and next_keep <= env_steps:
                    next_keep += config.checkpoint_every
                if by_iteration:
                    next_keep_iteration = max(
                        iteration + 1, math.ceil(next_keep_iteration * config.checkpoint_growth)
                    )
            if callback is not None and callback(
                PPOIteration(iteration, env_steps, mean_return, stats, rollout)
            ):
                break
    finally:
        bar.close()
    keep_last = config.checkpoint_every > 0 or config.checkpoint_growth > 1
    checkpoint = save(curve[-1][1] if curve else float("nan"), keep=keep_last)
    plot_learning_curve(csv_path, out / "learning_curve.png", f"PPO ({config.mode}) on {env_id}")
    tail = [r for _, r in curve[-max(1, len(curve) // 10) :]]
    return PPOResult(
        out_dir=out,
        checkpoint=checkpoint,
        env_steps=env_steps,
        iterations=iteration,
        final_return=float(np.mean(tail)) if tail else float("nan"),
        curve=curve,
        wall_time_s=time.perf_counter() - start,
    )


def load_ppo_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a PPO checkpoint (a file, or a run directory holding ``checkpoint.pt``) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise MarlkdError(f"no PPO checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MarlkdError(f"{path} is not a marlkd PPO checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        version = state.get("version")
        raise MarlkdError(f"{path}: PPO checkpoint version {version}, expected {CHECKPOINT_VERSION}")
    return state


def load_ppo_policy(
    path: str | Path,
    deterministic: bool = False,
    seed: int = 0,
    actor: nn.Module | None = None,
    device: str = "cpu",
) -> PPOPolicy:
    """A :class:`PPOPolicy` from a checkpoint file or a run directory written by :func:`train_ppo`.

    ``actor`` must be given (un-trained, same architecture) when training used a custom actor.
    """
    state = load_ppo_checkpoint(path)
    if actor is None:
        if not state["builtin_actor"]:
            raise MarlkdError(f"{path}: trained with a custom actor; pass an actor module to load it into")
        actor = build_actor(PPOConfig(**state["config"]), EnvSpec(**state["spec"]))
    actor.load_state_dict(state["actor"])
    return PPOPolicy(actor.to(device), deterministic=deterministic, seed=seed, device=device)
