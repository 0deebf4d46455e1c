"""Per-agent networks of the MLP baselines (BC, CQL, BCQ, ICQ, GAIL, AIRL) and their observation window.

:class:`AgentMLP` holds N independent MLPs, one per agent, as one ensemble (stacked weights, one batched
matmul per layer, see :mod:`marlkd.models.layers`): agent i's output depends only on agent i's input and
agent i's weights, so N independent learners train in one step. It can also be one network shared by the
agents, with their one-hot ids appended (``share``, ``agent_id``). :class:`ObservationWindow` gives an
acting policy each agent's last K observations, the input of a network trained on K-step windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from marlkd.config import check
from marlkd.models.layers import EnsembleLinear


class AgentMLP(nn.Module):
    """Per-agent MLPs ``in -> hidden (x layers, ReLU) -> out``: ``(..., N, in) -> (..., N, out)``.

    By default N independent networks (``members == N``). ``share=True``: one network for all agents
    (``members == 1``, OG-MARL's parameter sharing); ``agent_id=True`` appends each agent's one-hot id to its
    input (what lets a shared network tell the agents apart)."""

    def __init__(
        self,
        n_agents: int,
        in_features: int,
        hidden: int,
        out_features: int,
        layers: int = 2,
        share: bool = False,
        agent_id: bool = False,
    ):
        super().__init__()
        self.n_agents, self.agent_id = n_agents, agent_id
        self.members = 1 if share else n_agents
        dims = [in_features + (n_agents if agent_id else 0)] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [EnsembleLinear(self.members, a, b), nn.ReLU()]
        blocks.append(EnsembleLinear(self.members, dims[-1], out_features))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.agent_id:
            ids = torch.eye(self.n_agents, dtype=x.dtype, device=x.device).expand(
                *x.shape[:-1], self.n_agents
            )
            x = torch.cat((x, ids), dim=-1)
        members_first = x.movedim(-2, 0)  # (N, ..., in): a shared network reads the N agents as rows
        return self.net(members_first).movedim(0, -2)  # (..., N, out)


class ObservationWindow:
    """Each agent's last K observations at acting time, the input of an MLP trained on
    ``TransitionSampler(history=K)``: ``push(obs (B, N, O)) -> (B, N, K * O)``, oldest first, zeros before
    the episode's start (``reset``)."""

    def __init__(self, history: int) -> None:
        self.history = history
        self.buffer: torch.Tensor | None = None

    def reset(self) -> None:
        self.buffer = None

    def push(self, obs: torch.Tensor) -> torch.Tensor:
        if self.history == 1:
            return obs
        if self.buffer is None or self.buffer.shape[0] != obs.shape[0]:
            self.buffer = obs.new_zeros(obs.shape[0], self.history, *obs.shape[1:])  # (B, K, N, O)
        self.buffer = torch.cat((self.buffer[:, 1:], obs[:, None]), dim=1)
        return self.buffer.transpose(1, 2).flatten(2)  # (B, N, K * O)


@dataclass(frozen=True)
class MLPConfig:
    """Network size and inputs of the MLP baselines.

    Attributes:
        hidden: width of each hidden layer.
        layers: hidden layers per network.
        history: observations each agent's network reads: its last ``history`` ones, concatenated (1: the
            current observation only; K > 1: a K-step window, memory under partial observability).
        share_weights: one network for all agents (parameter sharing) instead of one per agent.
        agent_id: append the agent's one-hot id to its input.
    """

    hidden: int = 256
    layers: int = 2
    history: int = 1
    share_weights: bool = False
    agent_id: bool = False

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "algo.hidden", f"must be >= 1, got {self.hidden}")
        check(self.layers >= 1, "algo.layers", f"must be >= 1, got {self.layers}")
        check(self.history >= 1, "algo.history", f"must be >= 1, got {self.history}")

    def agent_mlp(self, n_agents: int, in_features: int, out_features: int) -> AgentMLP:
        """The per-agent network these settings describe: ``(..., N, in) -> (..., N, out)``."""
        return AgentMLP(
            n_agents, in_features, self.hidden, out_features, self.layers, self.share_weights, self.agent_id
        )
