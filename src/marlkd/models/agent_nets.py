"""Per-agent networks of the MLP baselines (BC, CQL, BCQ, ICQ, GAIL, AIRL).

:class:`AgentMLP` holds N independent MLPs, one per agent, as one ensemble (stacked weights, one batched
matmul per layer, see :mod:`marlkd.models.layers`): agent i's output depends only on agent i's input and
agent i's weights, so N independent learners train in one step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from marlkd.config import check
from marlkd.models.layers import EnsembleLinear


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
