"""The agent layouts: how a team's K-step window becomes decision-transformer inputs, and how the
model's logits become per-agent logits again. Inputs carry a member axis M first:

- ``independent``: M = N members, member i sees only agent i (IDT, the students);
- ``shared``: M = 1, agents folded into the batch, one-hot agent id appended to o^i (MADT);
- ``centralized``: M = 1, all agents' R, o, a concatenated per timestep (the teacher);
- ``factored``: M = 1, agents kept on their own axis, ``(1, B, K, N, ...)`` (the factored teacher,
  :mod:`marlkd.models.factored_teacher`).

A window is anything with the tensors of :class:`StepWindow` (the sampler's ``marlkd.data.windows.Window``
and a policy's rolling buffers both are).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import torch
import torch.nn.functional as F

NEG_INF = -1e9


class Layout(StrEnum):
    INDEPENDENT = "independent"
    SHARED = "shared"
    CENTRALIZED = "centralized"
    FACTORED = "factored"


class StepWindow(Protocol):
    """A batch of B windows of K steps of N agents (O obs size). A window may also carry ``present``
    ``(B, K, N)`` bool, the agents that act (``marlkd.data.windows``; missing or None: all of them), which
    the factored layout passes on to the model."""

    returns: torch.Tensor  # (B, K, N) float32, return-to-go divided by the return scale
    obs: torch.Tensor  # (B, K, N, O) float32
    actions: torch.Tensor  # (B, K, N) int64 (0 on padding)
    timesteps: torch.Tensor  # (B, K) int64
    mask: torch.Tensor  # (B, K) bool, False on left padding


@dataclass
class DTInputs:
    """Model inputs with the member axis first (see ``DecisionTransformer.forward``); ``presence`` only
    under the factored layout, where some agents do not act (see ``FactoredTeacher.forward``)."""

    returns: torch.Tensor  # (M, B', K, R)
    obs: torch.Tensor  # (M, B', K, O')
    actions: torch.Tensor  # (M, B', K, A') one-hot float
    timesteps: torch.Tensor  # (M, B', K)
    mask: torch.Tensor  # (M, B', K)
    presence: torch.Tensor | None = None  # (1, B, K, N) bool

    def args(self) -> tuple[torch.Tensor, ...]:
        """The positional inputs every model takes."""
        return self.returns, self.obs, self.actions, self.timesteps, self.mask

    def kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword inputs: ``presence`` where there is one (only the factored teacher takes it)."""
        return {} if self.presence is None else {"presence": self.presence}


def to_inputs(window: StepWindow, layout: Layout, n_actions: int) -> DTInputs:
    """Model inputs for ``layout`` from a window (see the module docstring)."""
    B, K, N = window.actions.shape
    onehot = F.one_hot(window.actions, n_actions).float()  # (B, K, N, A)
    if layout == Layout.INDEPENDENT:
        return DTInputs(
            returns=window.returns.permute(2, 0, 1).unsqueeze(-1),  # (N, B, K, 1)
            obs=window.obs.permute(2, 0, 1, 3),  # (N, B, K, O)
            actions=onehot.permute(2, 0, 1, 3),  # (N, B, K, A)
            timesteps=window.timesteps.expand(N, B, K),
            mask=window.mask.expand(N, B, K),
        )
    if layout == Layout.FACTORED:
        present = getattr(window, "present", None)
        return DTInputs(
            returns=window.returns.unsqueeze(0),  # (1, B, K, N)
            obs=window.obs.unsqueeze(0),  # (1, B, K, N, O)
            actions=onehot.unsqueeze(0),  # (1, B, K, N, A)
            timesteps=window.timesteps.unsqueeze(0),
            mask=window.mask.unsqueeze(0),
            presence=None if present is None else present.unsqueeze(0),  # (1, B, K, N)
        )
    if layout == Layout.SHARED:
        ids = torch.eye(N, device=window.obs.device).expand(B, K, N, N)
        obs = torch.cat((window.obs, ids), dim=-1)  # (B, K, N, O+N)
        return DTInputs(
            returns=window.returns.permute(0, 2, 1).reshape(1, B * N, K, 1),
            obs=obs.permute(0, 2, 1, 3).reshape(1, B * N, K, -1),
            actions=onehot.permute(0, 2, 1, 3).reshape(1, B * N, K, n_actions),
            timesteps=window.timesteps.repeat_interleave(N, dim=0).unsqueeze(0),
            mask=window.mask.repeat_interleave(N, dim=0).unsqueeze(0),
        )
    return DTInputs(
        returns=window.returns.unsqueeze(0),  # (1, B, K, N)
        obs=window.obs.reshape(1, B, K, -1),  # (1, B, K, N*O)
        actions=onehot.reshape(1, B, K, N * n_actions),
        timesteps=window.timesteps.unsqueeze(0),
        mask=window.mask.unsqueeze(0),
    )


def per_agent_logits(logits: torch.Tensor, layout: Layout, n_agents: int) -> torch.Tensor:
    """Model output ``(M, B', K, H, A)`` back to ``(B, K, N, A)`` for any layout."""
    if layout == Layout.INDEPENDENT:
        return logits[..., 0, :].permute(1, 2, 0, 3)  # (N, B, K, A) -> (B, K, N, A)
    if layout == Layout.SHARED:
        _, BN, K, _, A = logits.shape
        return logits[0, :, :, 0].reshape(BN // n_agents, n_agents, K, A).permute(0, 2, 1, 3)
    return logits[0]  # centralized, factored: (B, K, N heads, A)


def model_input_sizes(layout: Layout, n_agents: int, obs_dim: int, n_actions: int) -> dict[str, int]:
    """``DTConfig`` sizes (return_dim, obs_dim, action_dim, n_heads_out, members) for a layout."""
    if layout == Layout.FACTORED:
        raise ValueError("the factored layout feeds a FactoredTeacher, whose sizes do not depend on n")
    if layout == Layout.INDEPENDENT:
        return dict(return_dim=1, obs_dim=obs_dim, action_dim=n_actions, n_heads_out=1, members=n_agents)
    if layout == Layout.SHARED:
        return dict(return_dim=1, obs_dim=obs_dim + n_agents, action_dim=n_actions, n_heads_out=1, members=1)
    return dict(
        return_dim=n_agents,
        obs_dim=n_agents * obs_dim,
        action_dim=n_agents * n_actions,
        n_heads_out=n_agents,
        members=1,
    )


def masked_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Unavailable actions get a logit of -1e9 (``logits`` (..., A), ``action_mask`` (..., A) bool)."""
    return logits if action_mask is None else logits.masked_fill(~action_mask, NEG_INF)
