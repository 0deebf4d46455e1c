"""MA-BCQ: discrete batch-constrained Q-learning (Fujimoto et al., 2019) as independent learners.

Each agent i has a Q-network Q^i(o^i, .) and a generative model G^i(a | o^i) (a behaviour-cloning head),
separate networks as in the discrete BCQ reference. Actions whose relative probability
G^i(a|o) / max_a' G^i(a'|o) is at most ``threshold`` are filtered out, both in the Q-learning target and
when acting, so the policy stays on actions the data supports. Per agent, the loss is

    L^i = Huber(Q^i(o, a) - y) + CE(G^i(. | o), a) + 0.01 * mean(logits_G^2),
    y   = r + gamma * bootstrap * Qbar^i(o', argmax over filtered a' of Q^i(o', a')),

on each agent's own reward (independent learners, one :class:`marlkd.models.agent_nets.AgentMLP` ensemble
each for Q and G). Qbar is the target network (Polyak-averaged, or copied every ``target_period`` updates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from marlkd.algos import AlgoEntry, register
from marlkd.algos._value import QLearner, ValueConfig, double_q_target, frozen_copy
from marlkd.algos.base import GreedyPolicy
from marlkd.config import check
from marlkd.data.transitions import Transitions, bootstrap_weights
from marlkd.models.layouts import NEG_INF, masked_logits
from marlkd.names import METHOD_NAMES
from marlkd.optim import autocast, make_optimizer


@dataclass(frozen=True)
class Config(ValueConfig):
    """BCQ settings (besides the network size and the shared value settings).

    Attributes:
        threshold: tau; an action is allowed when G(a|o) / max_a' G(a'|o) > tau (0: plain Q-learning
            over available actions; close to 1: behaviour cloning's greedy action).
        logit_penalty: weight of the squared generative-model logits (the reference's 1e-2).
    """

    threshold: float = 0.3
    logit_penalty: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.threshold < 1.0, "algo.threshold", f"must be in [0, 1), got {self.threshold}")
        check(self.logit_penalty >= 0, "algo.logit_penalty", f"must be >= 0, got {self.logit_penalty}")


def allowed_actions(g_logits: torch.Tensor, avail: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """BCQ's action filter: ``(B, N, A)`` bool, True where G(a|o) / max_a' G(a'|o) > ``threshold``.

    ``g_logits`` are the generative model's logits ``(B, N, A)``; unavailable actions are never allowed.
    The ratio is computed in log space: log G(a) - max log G = logit(a) - max logit."""
    logits = masked_logits(g_logits.float(), avail)
    log_ratio = logits - logits.max(-1, keepdim=True).values
    bound = math.log(threshold) if threshold > 0 else NEG_INF / 2  # tau = 0: every available action
    return log_ratio > bound


def filtered_q(
    q: torch.Tensor, g_logits: torch.Tensor, avail: torch.Tensor | None, threshold: float
) -> torch.Tensor:
    """Q-values ``(B, N, A)`` with the actions the filter removes set to -1e9 (the greedy one stays)."""
    return q.masked_fill(~allowed_actions(g_logits, avail, threshold), NEG_INF)


class BCQ(QLearner):
    """Independent discrete BCQ learners (see the module docstring)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.q = self.agent_net()
        self.generative = self.agent_net()
        self.q_target = frozen_copy(self.q)
        params = list(self.q.parameters()) + list(self.generative.parameters())
        self.optimizer, self.scheduler = make_optimizer(params, ctx.train)

    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        """The summed per-agent loss and its terms (per agent, averaged over valid samples)."""
        cfg = self.cfg
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            q = self.q(batch.obs).float()  # (B, N, A)
            g_logits = self.generative(batch.obs).float()
            with torch.no_grad():
                next_q = self.q(batch.next_obs).float()
                next_g = self.generative(batch.next_obs).float()
                target_next = self.q_target(batch.next_obs).float()
        bootstrap, td_weight = bootstrap_weights(
            batch.terminal, batch.truncated, batch.has_next, cfg.truncation
        )
        # The filter already removes unavailable actions (and keeps all of a row with none available).
        next_q = filtered_q(next_q, next_g, batch.next_avail, cfg.threshold)
        target = double_q_target(next_q, target_next, None, batch.rewards, bootstrap, cfg.gamma)  # (B, N)
        q_data = q.gather(-1, batch.actions[..., None])[..., 0]
        td = F.smooth_l1_loss(q_data, target, reduction="none")
        ce = F.cross_entropy(
            masked_logits(g_logits, batch.avail).flatten(0, 1), batch.actions.flatten(), reduction="none"
        ).view(batch.actions.shape)
        alive = batch.alive.float()
        denom = alive.sum(0).clamp(min=1.0)  # (N,)
        td_mean = (td * alive * td_weight).sum(0) / denom
        ce_mean = (ce * alive).sum(0) / denom
        logit_mean = ((g_logits**2).mean(-1) * alive).sum(0) / denom
        loss = (td_mean + ce_mean + cfg.logit_penalty * logit_mean).sum()
        n = self.sampler.n_agents
        return loss, {
            "loss/td": float(td_mean.detach().sum()) / n,
            "loss/imitation": float(ce_mean.detach().sum()) / n,
        }

    def trained(self) -> list[torch.nn.Module]:
        return [self.q, self.generative]

    def policy(self) -> GreedyPolicy:
        def scores(obs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            return filtered_q(self.q(obs).float(), self.generative(obs), mask, self.cfg.threshold)

        return GreedyPolicy(scores, [self.q, self.generative], self.ctx.device, self.cfg.history)

    def _checkpoint_parts(self) -> dict[str, Any]:
        return {
            "model": self.q,
            "generative": self.generative,
            "target": self.q_target,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
        }


register(
    AlgoEntry(
        "bcq",
        Config,
        BCQ,
        "batch-constrained Q-learning (discrete), independent learners",
        display_name=METHOD_NAMES["bcq"],
    )
)
