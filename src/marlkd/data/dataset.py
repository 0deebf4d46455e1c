"""A loaded dataset in memory: :class:`OfflineDataset` (arrays padded to ``(E, T, ...)`` and their
metadata) and :class:`EpisodeData` (one episode, trimmed to its length)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marlkd.data.schema import ARRAY_FIELDS, DatasetMetadata, all_fields, array_statistics


@dataclass(frozen=True)
class EpisodeData:
    """One episode's arrays, trimmed to its length L (views into the dataset's arrays).

    Attributes:
        id: index of the episode in its dataset.
        obs: ``(L, N, O)`` float32. actions: ``(L, N)`` int64. rewards: ``(L, N)`` float32.
        terminals, truncations: ``(L, N)`` bool.
        state: ``(L, S)`` float32 or None. avail_actions: ``(L, N, A)`` bool or None.
    """

    id: int
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    state: np.ndarray | None
    avail_actions: np.ndarray | None

    @property
    def length(self) -> int:
        """L, the number of valid steps."""
        return int(self.obs.shape[0])

    @property
    def returns(self) -> np.ndarray:
        """``(N,)`` float64: each agent's summed rewards."""
        return self.rewards.sum(axis=0, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class EpisodeArrays:
    """Episodes' step arrays padded to ``(E, T, ...)`` and the sizes read off them: what a dataset and a pool
    of datasets (:class:`marlkd.data.teams.TeamPool`) share."""

    obs: np.ndarray  # (E, T, N, O) float32
    actions: np.ndarray  # (E, T, N) int64
    rewards: np.ndarray  # (E, T, N) float32
    mask: np.ndarray  # (E, T) bool
    terminals: np.ndarray  # (E, T, N) bool
    truncations: np.ndarray  # (E, T, N) bool

    @property
    def n_episodes(self) -> int:
        return int(self.obs.shape[0])

    @property
    def max_steps(self) -> int:
        """T, the padded episode length."""
        return int(self.obs.shape[1])

    @property
    def n_agents(self) -> int:
        """N (in a pool: the largest team)."""
        return int(self.obs.shape[2])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[3])


@dataclass(frozen=True, eq=False)
class OfflineDataset(EpisodeArrays):
    """A loaded (validated) dataset: the step arrays of :class:`EpisodeArrays`, its optional state and action
    masks, and its metadata.

    Step t of episode e holds the observation o_t, the action a_t taken at it and the reward r_t for a_t;
    ``terminals`` / ``truncations`` are the flags the environment returned with r_t. Steps with
    ``mask == False`` are padding after the episode's end and hold zeros.
    """

    state: np.ndarray | None  # (E, T, S) float32
    avail_actions: np.ndarray | None  # (E, T, N, A) bool
    metadata: DatasetMetadata
    path: Path | None = None

    @property
    def n_actions(self) -> int:
        return self.metadata.n_actions

    @property
    def state_dim(self) -> int:
        """S; 0 when the dataset stores no global state."""
        return 0 if self.state is None else int(self.state.shape[2])

    def __len__(self) -> int:
        return self.n_episodes

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays present, by field name (the input :func:`write_dataset` takes)."""
        return {name: getattr(self, name) for name in ARRAY_FIELDS if getattr(self, name) is not None}

    def episode_lengths(self) -> np.ndarray:
        """``(E,)`` int64: number of valid steps of each episode."""
        return self.mask.sum(axis=1, dtype=np.int64)

    def episode_returns(self) -> np.ndarray:
        """``(E, N)`` float64: each agent's summed rewards in each episode."""
        return self.rewards.sum(axis=1, dtype=np.float64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> OfflineDataset:
        """A new in-memory dataset of the episodes ``indices`` (ints, or a ``(E,)`` bool mask), in that order.

        Its metadata's ``n_episodes``, return statistics and checksum describe the subset; the rest
        (``behavior_policy``, ``seed``, ...) still describes the data it was taken from.
        """
        index = np.asarray(indices)
        if index.dtype == np.bool_:
            if index.shape != (self.n_episodes,):
                raise ValueError(f"a boolean index must have shape ({self.n_episodes},), got {index.shape}")
            index = np.flatnonzero(index)
        elif index.size and (not np.issubdtype(index.dtype, np.integer) or index.ndim != 1):
            raise ValueError("indices must be a 1-D sequence of episode indices or a boolean mask")
        if index.size == 0:
            raise ValueError("a dataset needs at least one episode; the subset is empty")
        if index.min() < -self.n_episodes or index.max() >= self.n_episodes:
            raise IndexError(f"episode index out of range for {self.n_episodes} episodes")
        arrays = {name: array[index] for name, array in self.arrays().items()}
        metadata = dataclasses.replace(self.metadata, n_episodes=int(index.size), **array_statistics(arrays))
        return OfflineDataset(**all_fields(arrays), metadata=metadata, path=None)

    def episode(self, index: int) -> EpisodeData:
        """Episode ``index`` (negative counts from the end) trimmed to its length."""
        if not -self.n_episodes <= index < self.n_episodes:
            raise IndexError(f"episode {index} out of range for {self.n_episodes} episodes")
        index %= self.n_episodes
        length = int(self.mask[index].sum())
        return EpisodeData(
            id=int(index),
            obs=self.obs[index, :length],
            actions=self.actions[index, :length],
            rewards=self.rewards[index, :length],
            terminals=self.terminals[index, :length],
            truncations=self.truncations[index, :length],
            state=None if self.state is None else self.state[index, :length],
            avail_actions=None if self.avail_actions is None else self.avail_actions[index, :length],
        )

    def iterate_episodes(self, indices: Sequence[int] | None = None) -> Iterator[EpisodeData]:
        """Yield the episodes (all, or those at ``indices``) one by one, each trimmed to its length."""
        for index in range(self.n_episodes) if indices is None else indices:
            yield self.episode(int(index))

    def sample_episodes(self, n: int, rng: np.random.Generator | int | None = None) -> list[EpisodeData]:
        """``n`` distinct episodes drawn uniformly at random (without replacement)."""
        if not 0 <= n <= self.n_episodes:
            raise ValueError(f"cannot sample {n} distinct episodes from {self.n_episodes}")
        chosen = np.random.default_rng(rng).choice(self.n_episodes, size=n, replace=False)
        return list(self.iterate_episodes(chosen))

    def filter_episodes(self, fn: Callable[[EpisodeData], bool]) -> OfflineDataset:
        """The subset of episodes for which ``fn(episode)`` is true, in their original order.

        Raises ValueError when no episode passes (a dataset has at least one episode).
        """
        keep = [episode.id for episode in self.iterate_episodes() if fn(episode)]
        return self.subset(np.asarray(keep, dtype=np.int64))
