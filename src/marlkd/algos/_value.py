"""What the value-based baselines (CQL, BCQ, ICQ) share: their config, their learner's frame
(:class:`ValueLearner`), target networks and the double-Q target."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marlkd.algos.base import BaseAlgorithm, checkpoint_state, load_checkpoint_state
from marlkd.config import check
from marlkd.data.transitions import TRUNCATION_RULES, Transitions, TransitionSampler, TruncationRule
from marlkd.models.agent_nets import AgentMLP, MLPConfig
from marlkd.models.layouts import masked_logits
from marlkd.optim import optimizer_step


@dataclass(frozen=True)
class ValueConfig(MLPConfig):
    """What the value-based baselines (CQL, BCQ, ICQ) share.

    Attributes:
        gamma: discount factor.
        target_tau: Polyak rate of the target networks per update (1.0: copy every update); used when
            ``target_period`` is 0.
        target_period: copy the online networks into the targets every this many updates (a hard update,
            as OG-MARL's systems every 200); 0: Polyak averaging at ``target_tau``.
        update_repeats: gradient updates per training step: the method's update budget is
            ``train.steps * update_repeats`` (value propagation needs more updates than imitation; the
            target period and the learning-rate warm-up count gradient updates).
        truncation: how a truncated episode end is treated (``marlkd.data.transitions.TRUNCATION_RULES``):
            ``bootstrap`` (the default, as the references: only a termination ends the value), ``final`` (a
            time limit ends the return) or ``drop`` (a cut last step's TD error is left out).
    """

    gamma: float = 0.99
    target_tau: float = 0.005
    target_period: int = 0
    update_repeats: int = 1
    truncation: TruncationRule = "bootstrap"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.gamma <= 1.0, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(0.0 < self.target_tau <= 1.0, "algo.target_tau", f"must be in (0, 1], got {self.target_tau}")
        check(self.target_period >= 0, "algo.target_period", f"must be >= 0, got {self.target_period}")
        check(self.update_repeats >= 1, "algo.update_repeats", f"must be >= 1, got {self.update_repeats}")
        check(
            self.truncation in TRUNCATION_RULES,
            "algo.truncation",
            f"must be one of {TRUNCATION_RULES}, got {self.truncation!r}",
        )


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) * target + tau * source`` (tau = 1: copy)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a deep copy of ``module`` without gradients."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def double_q_target(
    online_next: torch.Tensor,
    target_next: torch.Tensor,
    next_avail: torch.Tensor | None,
    rewards: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``r + gamma * bootstrap * Qbar(o', argmax_{a' available} Q(o', a'))``: ``(B, N)``.

    The online Q-values pick the next action, the target network values it. Q-values ``(B, N, A)``;
    rewards, bootstrap ``(B, N)``; next_avail ``(B, N, A)`` bool, or None when ``online_next`` already
    carries -1e9 for the actions it may not pick (BCQ's filter)."""
    next_action = masked_logits(online_next, next_avail).argmax(-1, keepdim=True)  # (B, N, 1)
    return rewards + gamma * bootstrap * target_next.gather(-1, next_action)[..., 0]


def update_targets(pairs: list[tuple[nn.Module, nn.Module]], cfg: ValueConfig, step: int) -> None:
    """After update ``step`` (0-based): each ``(target, online)`` pair gets the hard copy every
    ``cfg.target_period`` updates, or Polyak averaging at ``cfg.target_tau`` when the period is 0."""
    if cfg.target_period:
        if (step + 1) % cfg.target_period == 0:
            for target, online in pairs:
                soft_update(target, online, 1.0)
        return
    for target, online in pairs:
        soft_update(target, online, cfg.target_tau)


class ValueLearner(BaseAlgorithm):
    """The frame of a value-based learner: its config (``self.cfg``), its sampler of transitions and the
    generator the sampler draws with (seeded with the run's seed), ``update_repeats`` gradient updates per
    training step (:meth:`_update_once`, numbered across steps), and a checkpoint of the named parts
    :meth:`_checkpoint_parts` lists."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.cfg = ctx.config
        self.sampler = TransitionSampler(ctx.dataset, ctx.device, self.cfg.history)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def agent_net(self) -> AgentMLP:
        """A per-agent MLP of the config on the run's device: each agent's observation history ``(B, N,
        history * O)`` -> one value per action ``(B, N, A)``."""
        dataset = self.ctx.dataset
        net = self.cfg.agent_mlp(dataset.n_agents, self.cfg.history * dataset.obs_dim, dataset.n_actions)
        return net.to(self.ctx.device)

    def update(self, step: int) -> dict[str, float]:
        """One training step: ``update_repeats`` gradient updates (the last one's metrics)."""
        repeats = self.cfg.update_repeats
        for j in range(repeats):
            metrics = self._update_once(step * repeats + j)
        return metrics

    def _update_once(self, step: int) -> dict[str, float]:
        """Gradient update ``step`` (0-based, counted in gradient updates); its metrics."""
        raise NotImplementedError

    def _checkpoint_parts(self) -> dict[str, Any]:
        """The modules, optimizers and schedulers a checkpoint holds, by name."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return checkpoint_state(self._checkpoint_parts(), self.generator)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_checkpoint_state(self._checkpoint_parts(), self.generator, state)


class QLearner(ValueLearner):
    """A value learner trained on one loss (:meth:`loss`) by one optimizer (``self.optimizer``,
    ``self.scheduler``), whose Q-network ``self.q`` has a target ``self.q_target`` (CQL, BCQ)."""

    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        """The summed per-agent loss and its terms."""
        raise NotImplementedError

    def trained(self) -> list[nn.Module]:
        """The modules the loss trains (put in training mode before each update)."""
        return [self.q]

    def _update_once(self, step: int) -> dict[str, float]:
        for module in self.trained():
            module.train()
        batch = self.sampler.sample(self.ctx.train.batch_size, self.generator)
        loss, metrics = self.loss(batch)
        metrics["grad_norm"] = optimizer_step(
            loss, self.optimizer, self.scheduler, self.ctx.train.grad_clip, self.q.members
        )
        update_targets([(self.q_target, self.q)], self.cfg, step)
        metrics["loss/total"] = float(loss.detach())
        return metrics
