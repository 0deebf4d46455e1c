"""Multi-agent adversarial imitation (the loop GAIL and AIRL share): MAPPO against a per-agent discriminator.

One update of the training loop is one iteration: a rollout of one episode in each of ``num_envs``
environment copies with the decentralized MAPPO actor (:mod:`marlkd.ppo`), a PPO update on the
discriminator's rewards, then ``disc_steps`` discriminator steps separating dataset transitions (label 1)
from the rollout's (label 0). The discriminator has one member per agent, D^i(o^i, a^i, ...), trained on
agent i's own transitions; a method defines its logit and the reward it gives (:class:`Discriminator`).
The environment's own reward is never used for learning, only reported (``return/env``).

Budget: ``env_steps`` environment steps (one step of one copy; the training loop reports the steps
taken in results.json). The loop is counted in environment steps: iterations continue until the budget is
spent, so episodes that end early buy more iterations, and the last rollout overshoots the budget by less
than one rollout (``num_envs * max_steps`` steps). ``num_updates`` is the iterations taken plus an estimate
of those left (full-length rollouts); the training loop re-reads it after every update. The learning rates
decay linearly in the fraction of the budget spent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos.base import BaseAlgorithm
from marlkd.config import check
from marlkd.data.transitions import TRUNCATION_RULES, TransitionSampler, bootstrap_weights
from marlkd.envs import make_batched
from marlkd.errors import ConfigError
from marlkd.models.layouts import masked_logits
from marlkd.ppo import (
    Critic,
    MAPPOSettings,
    PPOPolicy,
    RunningNorm,
    build_actor,
    collect_rollout,
    ppo_update,
)


@dataclass(frozen=True)
class AdversarialConfig(MAPPOSettings):
    """Settings GAIL and AIRL share: the budget and MAPPO's hyperparameters (``MAPPOSettings``; both
    learning rates decay linearly to 0; ``gamma`` is also AIRL's shaping discount) and the discriminator's.

    Attributes:
        disc_hidden: width of the discriminator's two hidden layers.
        disc_lr: discriminator Adam learning rate.
        disc_steps: discriminator steps per iteration.
        disc_batch: transitions per discriminator step from each side (dataset, rollout).
    """

    disc_hidden: int = 128
    disc_lr: float = 3e-4
    disc_steps: int = 4
    disc_batch: int = 256

    def __post_init__(self) -> None:
        check(self.disc_hidden >= 1, "algo.disc_hidden", f"must be >= 1, got {self.disc_hidden}")
        check(self.disc_lr > 0, "algo.disc_lr", f"must be > 0, got {self.disc_lr}")
        check(self.disc_steps >= 0, "algo.disc_steps", f"must be >= 0, got {self.disc_steps}")
        check(self.disc_batch >= 1, "algo.disc_batch", f"must be >= 1, got {self.disc_batch}")
        super().__post_init__()


@dataclass
class Batch:
    """Per-agent transitions a discriminator reads. Shapes: B transitions, N agents, O obs size."""

    obs: torch.Tensor  # (B, N, O)
    actions: torch.Tensor  # (B, N) int64
    next_obs: torch.Tensor  # (B, N, O)
    done: torch.Tensor  # (B, N) float: the agent's episode ended with this step
    log_pi: torch.Tensor  # (B, N) log-probability of the action under the current policy
    weight: torch.Tensor  # (B, N) float: 1 where the agent acted


class Discriminator(Protocol):
    """What a method defines (an ``nn.Module``): the logit of D^i = P(transition is data) and the reward
    the policy learns from, both ``(B, N)``."""

    def logits(self, batch: Batch) -> torch.Tensor: ...

    def reward(self, batch: Batch) -> torch.Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def discriminator_loss(
    data_logits: torch.Tensor,
    policy_logits: torch.Tensor,
    data_weight: torch.Tensor,
    policy_weight: torch.Tensor,
) -> torch.Tensor:
    """Binary cross-entropy, data labelled 1 and policy 0: ``-E_data log D - E_policy log(1 - D)``.

    Logits and weights ``(B, N)``; each side's mean is over its weighted entries per agent, then summed over
    agents (each member D^i gets its own loss)."""
    data = F.binary_cross_entropy_with_logits(data_logits, torch.ones_like(data_logits), reduction="none")
    policy = F.binary_cross_entropy_with_logits(
        policy_logits, torch.zeros_like(policy_logits), reduction="none"
    )
    data_mean = (data * data_weight).sum(0) / data_weight.sum(0).clamp(min=1.0)  # (N,)
    policy_mean = (policy * policy_weight).sum(0) / policy_weight.sum(0).clamp(min=1.0)
    return (data_mean + policy_mean).sum()


class AdversarialImitation(BaseAlgorithm):
    """MAPPO trained on a discriminator's rewards (see the module docstring)."""

    def __init__(self, ctx, discriminator: nn.Module, truncation: str = "bootstrap") -> None:
        """``truncation`` (``marlkd.data.transitions.TRUNCATION_RULES``) sets the ``done`` flag a
        discriminator reads: ``bootstrap`` and ``drop``, terminations only (a time limit is not an end;
        ``drop`` also leaves out dataset steps cut without a stored next observation); ``final``, every
        end of an agent's episode."""
        cfg: AdversarialConfig = ctx.config
        super().__init__(ctx)
        if truncation not in TRUNCATION_RULES:
            raise ValueError(f"unknown truncation rule {truncation!r}; known: {TRUNCATION_RULES}")
        self.truncation = truncation
        self.cfg, self.device = cfg, ctx.device
        dataset = ctx.dataset
        env_id, env_kwargs = dataset.metadata.env_id, dict(dataset.metadata.env_kwargs)
        self.env = make_batched(env_id, cfg.num_envs, **env_kwargs)
        spec = self.env.spec
        shapes = (spec.n_agents, spec.obs_dim, spec.n_actions)
        if shapes != (dataset.n_agents, dataset.obs_dim, dataset.n_actions):
            raise ConfigError(
                f"config field data: {env_id} with {env_kwargs} has (agents, obs, actions) {shapes}, the "
                f"dataset {(dataset.n_agents, dataset.obs_dim, dataset.n_actions)}"
            )
        self.ppo = cfg.ppo_config(ctx.seed, ctx.device.type)
        self.critic_kind = self.ppo.resolved_critic_input(spec)
        critic_dim = spec.state_dim if self.critic_kind == "state" else spec.n_agents * spec.obs_dim
        self.actor = build_actor(self.ppo, spec).to(self.device)
        self.critic = Critic(critic_dim, spec.n_agents, cfg.hidden).to(self.device)
        self.value_norm = RunningNorm().to(self.device)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.actor.parameters(), "lr": cfg.lr},
                {"params": self.critic.parameters(), "lr": cfg.critic_lr},
            ],
            eps=1e-5,
        )
        self.discriminator: Discriminator = discriminator.to(self.device)
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr)
        self.sampler = TransitionSampler(dataset, self.device)
        self.rollout_steps = cfg.num_envs * spec.max_steps  # the most steps one rollout can take
        self.env_steps = 0
        self.iterations = 0
        self._count_updates()
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.reset_seeds = np.random.default_rng(ctx.seed)

    def _count_updates(self) -> None:
        """``num_updates``: iterations taken plus those the unspent budget needs at full-length rollouts (at
        least one more while any budget is left); the training loop re-reads it after every update."""
        remaining = max(0, self.cfg.env_steps - self.env_steps)
        self.num_updates = self.iterations + math.ceil(remaining / self.rollout_steps)

    def log_pi(self, obs: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
        """log pi(a^i | o^i) under the current actor: obs ``(B, N, O)``, actions ``(B, N)`` -> ``(B, N)``."""
        logits = masked_logits(self.actor(obs), avail).float()
        return torch.distributions.Categorical(logits=logits).log_prob(actions)

    def update(self, step: int) -> dict[str, float]:
        frac = max(0.0, 1.0 - self.env_steps / self.cfg.env_steps)
        for group, lr in zip(self.optimizer.param_groups, (self.cfg.lr, self.cfg.critic_lr), strict=True):
            group["lr"] = lr * frac
        self.actor.eval()
        rollout = collect_rollout(
            self.env,
            self.actor,
            self.critic,
            self.value_norm,
            self.critic_kind,
            int(self.reset_seeds.integers(2**31 - 1)),
            self.generator,
            self.device,
        )
        self.actor.train()

        def tensor(x: np.ndarray) -> torch.Tensor:  # (T, B, ...) -> (T*B, ...)
            return torch.as_tensor(x, device=self.device).flatten(0, 1)

        valid = tensor(rollout.valid).float()  # (M, N)
        policy_side = Batch(
            obs=tensor(rollout.obs),
            actions=tensor(rollout.actions),
            next_obs=tensor(rollout.next_obs),
            done=tensor(rollout.dones if self.truncation == "final" else rollout.terminated).float(),
            log_pi=rollout.log_probs.flatten(0, 1),
            weight=valid,
        )
        with torch.no_grad():
            self.discriminator.eval()
            rewards = (self.discriminator.reward(policy_side) * valid).view(rollout.env_rewards.shape)
        stats = ppo_update(
            rollout,
            rewards.cpu().numpy(),
            self.actor,
            self.critic,
            self.value_norm,
            self.optimizer,
            self.ppo,
            self.generator,
            self.device,
        )
        disc = self._update_discriminator(policy_side, tensor(rollout.action_mask))
        self.env_steps += int(rollout.valid.any(axis=-1).sum())
        self.iterations += 1
        self._count_updates()
        metrics = {f"ppo/{k}": v for k, v in stats.items()}
        metrics.update(disc)
        metrics["return/env"] = float(rollout.episode_returns().mean())
        metrics["reward/imitation"] = float(rewards.sum() / valid.sum().clamp(min=1.0))
        metrics["env_steps"] = float(self.env_steps)
        return metrics

    def _update_discriminator(self, policy_side: Batch, policy_avail: torch.Tensor) -> dict[str, float]:
        """``disc_steps`` steps on dataset vs rollout transitions; the last step's loss and accuracies."""
        self.discriminator.train()
        rows = torch.nonzero(policy_side.weight.any(-1)).squeeze(-1)  # timesteps where some agent acted
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.disc_steps):
            data = self.sampler.sample(self.cfg.disc_batch, self.generator)
            pick = rows[
                torch.randint(len(rows), (self.cfg.disc_batch,), generator=self.generator).to(rows.device)
            ]
            with torch.no_grad():
                data_log_pi = self.log_pi(data.obs, data.actions, data.avail)
                policy_log_pi = self.log_pi(
                    policy_side.obs[pick], policy_side.actions[pick], policy_avail[pick]
                )
            bootstrap, weight = bootstrap_weights(
                data.terminal, data.truncated, data.has_next, self.truncation
            )
            data_batch = Batch(
                data.obs,
                data.actions,
                data.next_obs,
                1.0 - bootstrap,
                data_log_pi,
                data.alive.float() * weight,
            )
            policy_batch = Batch(
                policy_side.obs[pick],
                policy_side.actions[pick],
                policy_side.next_obs[pick],
                policy_side.done[pick],
                policy_log_pi,
                policy_side.weight[pick],
            )
            data_logits = self.discriminator.logits(data_batch)
            policy_logits = self.discriminator.logits(policy_batch)
            loss = discriminator_loss(data_logits, policy_logits, data_batch.weight, policy_batch.weight)
            self.disc_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.disc_optimizer.step()
            with torch.no_grad():
                data_acc = ((data_logits > 0).float() * data_batch.weight).sum() / data_batch.weight.sum()
                policy_acc = (
                    (policy_logits < 0).float() * policy_batch.weight
                ).sum() / policy_batch.weight.sum()
            metrics = {
                "disc/loss": float(loss.detach()),
                "disc/accuracy_data": float(data_acc),
                "disc/accuracy_policy": float(policy_acc),
            }
        return metrics

    def policy_network(self) -> nn.Module:
        """The decentralized MAPPO actor, obs ``(M, N, O)`` -> logits ``(M, N, A)``."""
        return self.actor

    def policy(self) -> PPOPolicy:
        return PPOPolicy(self.actor, deterministic=True, seed=self.ctx.seed, device=self.device.type)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "value_norm": self.value_norm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict(),
            "env_steps": self.env_steps,
            "iterations": self.iterations,
            "generator": self.generator.get_state(),
            "reset_seeds": self.reset_seeds.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["model"])
        self.critic.load_state_dict(state["critic"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.env_steps = int(state["env_steps"])
        self.iterations = int(state["iterations"])
        self._count_updates()
        self.generator.set_state(state["generator"])
        self.reset_seeds.bit_generator.state = state["reset_seeds"]
