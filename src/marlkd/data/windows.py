"""K-step windows of an offline dataset for decision transformers.

A window ends at a valid step t of an episode and covers steps t-K+1 .. t; steps before the episode's
start are left padding (mask False, zeros). Sampling gathers from tensors built once per dataset, never
copying the dataset per batch. How a window becomes model inputs under each agent layout is
:mod:`marlkd.models.layouts`.

An agent *acts* at a valid step unless it has left the episode: its own episode ended at an earlier step
(a crashed Highway car, whose later actions the environment ignores), or it is a dead unit, which SMAX
marks by an all-zero observation with only one available action ("stop") (:func:`dead_agents`). A sampler
built with ``presence=True`` hands out which agents act (``Window.present``); the factored teacher hides
the others from its attention and leaves them out of its loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Window:
    """A batch of windows. Shapes: B windows, K steps, N agents, O obs size, A actions."""

    returns: torch.Tensor  # (B, K, N) float32, return-to-go divided by the return scale
    obs: torch.Tensor  # (B, K, N, O) float32
    actions: torch.Tensor  # (B, K, N) int64 (0 on padding)
    timesteps: torch.Tensor  # (B, K) int64
    mask: torch.Tensor  # (B, K) bool, False on left padding
    action_mask: torch.Tensor | None  # (B, K, N, A) bool, or None when the env has no masks
    episode: torch.Tensor  # (B,) int64 episode index in the dataset
    step: torch.Tensor  # (B, K) int64 dataset step index of each position (clipped at 0 on padding)
    present: torch.Tensor | None = None  # (B, K, N) bool: the agent acts (True on padding); None: all act


def returns_to_go(rewards: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """R_t = sum_{t' >= t} r_t' per episode and agent.

    rewards ``(E, T, N)``, mask ``(E, T)`` -> ``(E, T, N)``."""
    r = rewards * mask[..., None]
    return np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1).astype(np.float32)


def dead_agents(obs, avail_actions):
    """Dead units: an all-zero observation and at most one available action (SMAX's dead ally, which
    observes nothing and may only stop). ``obs`` ``(..., N, O)``, ``avail_actions`` ``(..., N, A)`` or None
    (no masks: no agent is dead by this rule) -> ``(..., N)`` bool; NumPy arrays or tensors alike."""
    if avail_actions is None:
        if isinstance(obs, torch.Tensor):
            return torch.zeros(obs.shape[:-1], dtype=torch.bool, device=obs.device)
        return np.zeros(obs.shape[:-1], dtype=bool)
    return ~(obs != 0).any(-1) & (avail_actions.sum(-1) <= 1)


def acting_agents(dataset) -> np.ndarray:
    """``(E, T, N)`` bool: the agents that act at each valid step (False on padding): not after their own
    episode's end (a terminal or truncation flag at an earlier step) and not dead (:func:`dead_agents`).
    A dataset that knows better (a pool of teams padded with absent agents) gives its own ``acting()``."""
    own = getattr(dataset, "acting", None)
    if own is not None:
        return own()
    ended = dataset.terminals | dataset.truncations  # (E, T, N)
    ended_before = (np.cumsum(ended, axis=1) - ended) > 0
    return dataset.mask[..., None] & ~ended_before & ~dead_agents(dataset.obs, dataset.avail_actions)


def default_return_scale(dataset) -> float:
    """Divide returns-to-go by the largest absolute per-agent episode return, so they lie in [-1, 1]."""
    returns = dataset.episode_returns()  # (E, N)
    return float(max(1e-6, np.abs(returns).max()))


class WindowSampler:
    """Samples windows ending at uniformly drawn valid steps of a dataset.

    ``presence``: the windows carry which agents act (``Window.present``, :func:`acting_agents`); left
    None when every agent acts at every valid step, so such data gives the same windows either way."""

    def __init__(
        self,
        dataset,
        context: int,
        return_scale: float,
        device: torch.device | str = "cpu",
        presence: bool = False,
    ) -> None:
        self.context, self.return_scale, self.device = context, float(return_scale), torch.device(device)
        self.n_agents, self.n_actions = dataset.n_agents, dataset.n_actions
        self.obs = torch.as_tensor(dataset.obs, dtype=torch.float32, device=self.device)  # (E, T, N, O)
        self.actions = torch.as_tensor(dataset.actions, dtype=torch.int64, device=self.device)  # (E, T, N)
        rtg = returns_to_go(dataset.rewards, dataset.mask) / self.return_scale
        self.rtg = torch.as_tensor(rtg, device=self.device)  # (E, T, N)
        self.mask = torch.as_tensor(dataset.mask, dtype=torch.bool, device=self.device)  # (E, T)
        self.avail = (
            None
            if dataset.avail_actions is None
            else torch.as_tensor(dataset.avail_actions, dtype=torch.bool, device=self.device)
        )
        episode, step = np.nonzero(dataset.mask)
        self.valid_episode = torch.as_tensor(episode, dtype=torch.int64, device=self.device)
        self.valid_step = torch.as_tensor(step, dtype=torch.int64, device=self.device)
        self.offsets = torch.arange(-context + 1, 1, device=self.device)  # (K,)
        self.present = self._presence(dataset) if presence else None  # (E, T, N) bool or None

    def _presence(self, dataset) -> torch.Tensor | None:
        acting = acting_agents(dataset)
        if acting[dataset.mask].all():
            return None
        return torch.as_tensor(acting, dtype=torch.bool, device=self.device)

    def for_model(self, dataset, return_scale: float, presence: bool) -> WindowSampler:
        """The same windows of ``dataset`` (this sampler's) with returns-to-go divided by ``return_scale``
        and, with ``presence``, the acting agents: a shallow copy sharing the dataset's tensors (another
        model's view of the data, e.g. the teacher's of the students' windows)."""
        view = copy.copy(self)
        if float(return_scale) != self.return_scale:
            view.return_scale = float(return_scale)
            rtg = returns_to_go(dataset.rewards, dataset.mask) / view.return_scale
            view.rtg = torch.as_tensor(rtg, device=self.device)
        view.present = self._presence(dataset) if presence else None
        return view

    @property
    def num_positions(self) -> int:
        return int(self.valid_episode.numel())

    def sample(self, batch_size: int, generator: torch.Generator) -> Window:
        pick = torch.randint(self.num_positions, (batch_size,), generator=generator, device="cpu")
        pick = pick.to(self.device)
        return self.gather(self.valid_episode[pick], self.valid_step[pick])

    def gather(self, episode: torch.Tensor, end: torch.Tensor) -> Window:
        """Windows ending at step ``end (B,)`` of episodes ``episode (B,)``."""
        step = end[:, None] + self.offsets  # (B, K)
        valid = step >= 0
        step = step.clamp(min=0)
        e = episode[:, None]
        mask = valid & self.mask[e, step]  # (B, K)
        zero = ~mask
        obs = self.obs[e, step].masked_fill(zero[..., None, None], 0.0)
        actions = self.actions[e, step].masked_fill(zero[..., None], 0)
        returns = self.rtg[e, step].masked_fill(zero[..., None], 0.0)
        avail = None if self.avail is None else self.avail[e, step] | zero[..., None, None]
        timesteps = step.masked_fill(zero, 0)
        present = None if self.present is None else self.present[e, step] | zero[..., None]
        return Window(returns, obs, actions, timesteps, mask, avail, episode, step, present)

    def all_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(episode, step) of every valid step, for computing per-step caches."""
        return self.valid_episode, self.valid_step
