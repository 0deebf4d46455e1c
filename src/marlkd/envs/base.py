"""What every marlkd environment offers: a static spec and a batched NumPy form.

The single-copy form of each environment is a PettingZoo ``ParallelEnv``; the batched form below steps
``num_envs`` copies at once with array operations and is what collection, training of experts and
evaluation use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Sizes that models and datasets need to know about an environment.

    Attributes:
        env_id: registry id, e.g. ``"grid-world"``.
        n_agents: number of agents N (fixed; PettingZoo ``possible_agents``).
        obs_dim: length of one agent's flat float observation.
        n_actions: number of discrete actions A (the same for every agent).
        state_dim: length of the global state vector (``state()``), 0 when there is none.
        max_steps: episode length limit T in environment steps.
        has_action_mask: whether some actions may be unavailable (SMAX); native envs: False.
        kwargs: the constructor arguments the environment was made with (recorded in datasets).
    """

    env_id: str
    n_agents: int
    obs_dim: int
    n_actions: int
    state_dim: int
    max_steps: int
    has_action_mask: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` copies of one environment stepped together. Shapes: B copies, N agents.

    Semantics: every copy runs one episode after ``reset``. A copy whose episode has ended (all agents
    terminated or truncated) keeps being stepped as a no-op: its rewards are 0, its ``done`` stays True and
    its observation is frozen. Call ``reset`` to start new episodes in all copies. Actions of agents that
    are done are ignored.
    """

    spec: EnvSpec
    num_envs: int

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes in all copies; returns obs ``(B, N, obs_dim)`` float32."""
        ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply actions ``(B, N)`` int64. Returns ``(obs (B,N,O) float32, rewards (B,N) float32,
        terminated (B,N) bool, truncated (B,N) bool)``."""
        ...

    def state(self) -> np.ndarray:
        """Global state ``(B, state_dim)`` float32 (an empty last axis when ``state_dim == 0``)."""
        ...

    def action_mask(self) -> np.ndarray:
        """Available actions ``(B, N, A)`` bool; all True for environments without masks."""
        ...

    def done(self) -> np.ndarray:
        """``(B,)`` bool: the copy's episode has ended."""
        ...
