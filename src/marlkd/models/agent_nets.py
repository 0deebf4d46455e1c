"""Per-agent networks of the MLP baselines (BC, CQL, BCQ, ICQ, GAIL, AIRL) and their greedy policy.

:class:`AgentMLP` holds N independent MLPs, one per agent, as one ensemble (stacked weights, one batched
matmul per layer, see :mod:`marlkd.models.layers`): agent i's output depends only on agent i's input and
agent i's weights, so N independent learners train in one step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from marlkd.config import check
from marlkd.data.transitions import TRUNCATION_RULES
from marlkd.models.layers import EnsembleLinear
from marlkd.models.sequence import masked_logits


class AgentMLP(nn.Module):
    """N independent MLPs ``in -> hidden (x layers, ReLU) -> out``: ``(..., N, in) -> (..., N, out)``."""

    def __init__(self, n_agents: int, in_features: int, hidden: int, out_features: int, layers: int = 2):
        super().__init__()
        self.n_agents = n_agents
        dims = [in_features] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [EnsembleLinear(n_agents, a, b), nn.ReLU()]
        blocks.append(EnsembleLinear(n_agents, dims[-1], out_features))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members_first = x.movedim(-2, 0)  # (N, ..., in)
        return self.net(members_first).movedim(0, -2)  # (..., N, out)


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


class GreedyPolicy:
    """A memoryless decentralized policy: each agent takes the best available action of its own scores.

    ``scores(obs (B, N, O), action_mask (B, N, A) bool) -> (B, N, A)`` gives per-agent logits or Q-values
    (a filtered Q for BCQ); agent i's row may depend only on its own observation. Actions are the argmax
    over available actions (the ``Policy`` protocol of :mod:`marlkd.algos.base`).
    """

    def __init__(
        self,
        scores: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        modules: list[nn.Module],
        device: torch.device,
    ) -> None:
        self.scores, self.modules, self.device = scores, modules, device

    def reset(self, num_envs: int) -> None:
        """Nothing to reset: the policy is memoryless."""

    @torch.no_grad()
    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        for module in self.modules:
            module.eval()
        # copies: environments may hand out read-only arrays (SMAX's zero-copy views of JAX buffers)
        obs_t = torch.tensor(obs, dtype=torch.float32, device=self.device)  # (B, N, O)
        mask = None if action_mask is None else torch.tensor(action_mask, device=self.device)
        scores = masked_logits(self.scores(obs_t, mask).float(), mask)  # (B, N, A)
        return scores.argmax(-1).cpu().numpy().astype(np.int64)

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """Rewards are not used: the policy is memoryless."""


@dataclass(frozen=True)
class MLPConfig:
    """Network size of the MLP baselines.

    Attributes:
        hidden: width of each hidden layer.
        layers: hidden layers per network.
    """

    hidden: int = 256
    layers: int = 2

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "algo.hidden", f"must be >= 1, got {self.hidden}")
        check(self.layers >= 1, "algo.layers", f"must be >= 1, got {self.layers}")


@dataclass(frozen=True)
class ValueConfig(MLPConfig):
    """What the value-based baselines (CQL, BCQ, ICQ) share.

    Attributes:
        gamma: discount factor.
        target_tau: Polyak rate of the target networks per update (1.0: copy every update).
        truncation: how a truncated episode end is treated (``marlkd.data.transitions.TRUNCATION_RULES``):
            ``final`` (no value after it, the finite-horizon return evaluation measures) or ``drop``.
    """

    gamma: float = 0.99
    target_tau: float = 0.005
    truncation: str = "final"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.gamma <= 1.0, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(0.0 < self.target_tau <= 1.0, "algo.target_tau", f"must be in (0, 1], got {self.target_tau}")
        check(
            self.truncation in TRUNCATION_RULES,
            "algo.truncation",
            f"must be one of {TRUNCATION_RULES}, got {self.truncation!r}",
        )
