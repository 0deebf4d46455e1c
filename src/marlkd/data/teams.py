"""Several datasets of different team sizes as one training set: their episodes pooled, every team padded
to the largest with absent agents.

A model whose parameters do not depend on the number of agents (the factored teacher) can train on teams
of several sizes at once, provided one agent's observation and action sizes are the same in every dataset
(Grid-World at any ``n_agents``, Highway at one ``observed_vehicles``). Episodes are padded to the longest
(``mask`` False) and teams to the largest (padding agents: zero observations, actions, rewards; every
action available); :meth:`TeamPool.acting` marks them absent, beside each dataset's own absent agents (dead
units, agents whose episode ended: ``marlkd.data.windows.acting_agents``).

The pool does not depend on which dataset is the run's own: its episodes are ordered by dataset checksum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from marlkd.data.dataset import EpisodeArrays
from marlkd.data.format import OfflineDataset
from marlkd.data.windows import acting_agents
from marlkd.errors import ConfigError


@dataclass(frozen=True)
class PoolSource:
    """One dataset of a pool: its name (the path it was given as), checksum, episodes and team size."""

    name: str
    checksum: str
    episodes: int
    n_agents: int


@dataclass(frozen=True, eq=False)
class TeamPool(EpisodeArrays):
    """Pooled episodes ``(E, T, N_max, ...)``, the arrays a :class:`~marlkd.data.windows.WindowSampler`
    reads, with the agents present (``present (E, T, N_max)``: acting, not padding) and each episode's
    dataset (``source (E,)``, an index into ``sources``)."""

    avail_actions: np.ndarray | None  # (E, T, N, A) bool
    present: np.ndarray  # (E, T, N) bool
    source: np.ndarray  # (E,) int64
    sources: tuple[PoolSource, ...]
    n_actions: int

    def acting(self) -> np.ndarray:
        """``(E, T, N)`` bool: the agents that act (neither padding nor absent in their own dataset)."""
        return self.present

    def episode_returns(self) -> np.ndarray:
        """``(E, N)`` float64: each agent's summed rewards (0 for padding agents)."""
        return self.rewards.sum(axis=1, dtype=np.float64)


def _describe(name: str, data: OfflineDataset) -> str:
    return (
        f"{name} ({data.metadata.env_id}, {data.n_agents} agents): observation size {data.obs_dim}, "
        f"{data.n_actions} actions"
    )


def pool_teams(datasets: Sequence[tuple[str, OfflineDataset]], field: str = "algo.teacher_data") -> TeamPool:
    """Pool ``(name, dataset)`` pairs (see the module docstring).

    Raises :class:`ConfigError` (naming ``field``) when the datasets' per-agent observation or action sizes
    differ, naming every dataset with its sizes, or when one dataset is given twice."""
    if not datasets:
        raise ValueError("pool_teams needs at least one dataset")
    sizes = {(data.obs_dim, data.n_actions) for _, data in datasets}
    if len(sizes) > 1:
        listed = "; ".join(_describe(name, data) for name, data in datasets)
        raise ConfigError(
            f"config field {field}: a teacher trains on several datasets only where one agent's observation "
            f"and action sizes are the same in all of them; they differ here: {listed}"
        )
    seen: dict[str, str] = {}
    for name, data in datasets:
        checksum = data.metadata.checksum
        if checksum in seen:
            raise ConfigError(
                f"config field {field}: {name} and {seen[checksum]} are the same dataset (checksum "
                f"{checksum[:16]}...); give each dataset once"
            )
        seen[checksum] = name
    ordered = sorted(datasets, key=lambda item: (item[1].metadata.checksum, item[1].n_episodes))
    E = sum(data.n_episodes for _, data in ordered)
    T = max(data.max_steps for _, data in ordered)
    N = max(data.n_agents for _, data in ordered)
    O, A = ordered[0][1].obs_dim, ordered[0][1].n_actions
    obs = np.zeros((E, T, N, O), np.float32)
    actions = np.zeros((E, T, N), np.int64)
    rewards = np.zeros((E, T, N), np.float32)
    mask = np.zeros((E, T), bool)
    terminals = np.zeros((E, T, N), bool)
    truncations = np.zeros((E, T, N), bool)
    present = np.zeros((E, T, N), bool)
    source = np.zeros(E, np.int64)
    any_avail = any(data.avail_actions is not None for _, data in ordered)
    avail = np.ones((E, T, N, A), bool) if any_avail else None
    start = 0
    for index, (_, data) in enumerate(ordered):
        e, t, n = data.n_episodes, data.max_steps, data.n_agents
        rows = slice(start, start + e)
        obs[rows, :t, :n] = data.obs
        actions[rows, :t, :n] = data.actions
        rewards[rows, :t, :n] = data.rewards
        mask[rows, :t] = data.mask
        terminals[rows, :t, :n] = data.terminals
        truncations[rows, :t, :n] = data.truncations
        present[rows, :t, :n] = acting_agents(data)
        if avail is not None and data.avail_actions is not None:
            avail[rows, :t, :n] = data.avail_actions
        source[rows] = index
        start += e
    if avail is not None:
        avail &= mask[..., None, None]  # zeros after an episode's end, as in a dataset file
    sources = tuple(
        PoolSource(name, data.metadata.checksum, data.n_episodes, data.n_agents) for name, data in ordered
    )
    return TeamPool(obs, actions, rewards, mask, terminals, truncations, avail, present, source, sources, A)
