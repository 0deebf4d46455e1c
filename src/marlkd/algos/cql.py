"""MA-CQL: discrete conservative Q-learning (Kumar et al., 2020) as independent learners.

Each agent i learns Q^i(o^i, .) on its own reward r^i and its own episode end (no weights shared, one
:class:`marlkd.models.agent_nets.AgentMLP` ensemble). Per agent, the loss is

    L^i = 1/2 (Q^i(o, a) - y)^2 + alpha * (logsumexp_a' Q^i(o, a') - Q^i(o, a)),
    y   = r + gamma * bootstrap * Qbar^i(o', argmax_a' Q^i(o', a')),

with (o, a, r, o') a dataset transition, Qbar the target network (Polyak-averaged, or copied every
``target_period`` updates; double-Q: the online network picks the next action, the target network values
it) and the logsumexp over available actions: CQL(H), which pushes down the soft maximum of Q and up the
value of the data's action. Execution is decentralized: each agent takes the greedy available action of
its own Q^i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from marlkd.algos import AlgoEntry, register
from marlkd.algos._value import QLearner, ValueConfig, double_q_target, frozen_copy
from marlkd.algos.base import GreedyPolicy
from marlkd.config import check
from marlkd.data.transitions import Transitions, bootstrap_weights
from marlkd.models.layouts import masked_logits
from marlkd.names import METHOD_NAMES
from marlkd.optim import autocast, make_optimizer


@dataclass(frozen=True)
class Config(ValueConfig):
    """CQL settings (besides the network size and the shared value settings).

    Attributes:
        alpha: weight of the conservative penalty logsumexp_a Q(o, a) - Q(o, a_data).
    """

    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha >= 0, "algo.alpha", f"must be >= 0, got {self.alpha}")


def conservative_penalty(q: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """CQL(H)'s regulariser per sample and agent: ``logsumexp`` over available actions of ``q (B, N, A)``
    minus the Q of the dataset ``actions (B, N)`` -> ``(B, N)``."""
    soft_max = torch.logsumexp(masked_logits(q, avail), dim=-1)
    return soft_max - q.gather(-1, actions[..., None])[..., 0]


class CQL(QLearner):
    """Independent discrete CQL learners (see the module docstring)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.q = self.agent_net()
        self.q_target = frozen_copy(self.q)
        self.optimizer, self.scheduler = make_optimizer(self.q.parameters(), ctx.train)

    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        """The summed per-agent loss and its terms (per agent, averaged over valid samples)."""
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            q = self.q(batch.obs).float()  # (B, N, A)
            with torch.no_grad():
                online_next = self.q(batch.next_obs).float()
                target_next = self.q_target(batch.next_obs).float()
        bootstrap, td_weight = bootstrap_weights(
            batch.terminal, batch.truncated, batch.has_next, self.cfg.truncation
        )
        target = double_q_target(
            online_next, target_next, batch.next_avail, batch.rewards, bootstrap, self.cfg.gamma
        )
        q_data = q.gather(-1, batch.actions[..., None])[..., 0]  # (B, N)
        td = 0.5 * (q_data - target) ** 2
        penalty = conservative_penalty(q, batch.actions, batch.avail)
        alive = batch.alive.float()
        denom = alive.sum(0).clamp(min=1.0)  # (N,)
        td_mean = (td * alive * td_weight).sum(0) / denom
        penalty_mean = (penalty * alive).sum(0) / denom
        loss = (td_mean + self.cfg.alpha * penalty_mean).sum()
        n = self.sampler.n_agents
        return loss, {
            "loss/td": float(td_mean.detach().sum()) / n,
            "loss/cql": float(penalty_mean.detach().sum()) / n,
            "q/data": float((q_data.detach() * alive).sum() / alive.sum().clamp(min=1.0)),
        }

    def policy(self) -> GreedyPolicy:
        return GreedyPolicy(lambda obs, mask: self.q(obs), [self.q], self.ctx.device, self.cfg.history)

    def _checkpoint_parts(self) -> dict[str, Any]:
        return {
            "model": self.q,
            "target": self.q_target,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
        }


register(
    AlgoEntry(
        "cql",
        Config,
        CQL,
        "conservative Q-learning, independent per-agent learners",
        display_name=METHOD_NAMES["cql"],
    )
)
