"""One-step transitions (o_t, a_t, r_t, o_{t+1}) of an offline dataset, for value-based and adversarial
methods.

Every valid step of every episode is one transition of the whole team: all agents at once, ``(B, N, ...)``.
The tensors are gathered once from the dataset when the sampler is built; a batch is an index into them.

Episode ends. The dataset keeps terminations (no value after them) apart from truncations (the episode was
cut, e.g. by the time limit: the value after them is not zero, but the observation after the cut is not
stored). :func:`bootstrap_weights` turns the two flags into the factor on the next value and a weight
on the transition's TD error under a chosen rule (``TRUNCATION_RULES``). At the last stored step of an
episode the ``next_*`` entries repeat that step's own (observation, state, action, available actions):
the stand-in for the unstored observation after a cut, which the ``bootstrap`` rule values (a termination
never reads it).

Windowed history. With ``history = K > 1`` the sampler's ``obs``/``next_obs`` hold each agent's last K
observations, oldest first and flattened: ``(B, N, K * O)``, zeros before the episode's start, so a
memoryless network on them reads a K-step window of its own agent's past (:func:`observation_windows`).

Agents may finish before their team (a crashed car, a dead unit): ``alive`` is False at the steps after an
agent's own episode ended, and losses of per-agent learners weight by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

# "bootstrap" (the default, as the references do: only terminations stop the bootstrap): a truncation is
#   not an end of the value; the last stored step of a cut episode bootstraps from the value of its own
#   observation, the stand-in for the observation after the cut, which the dataset does not store.
# "final": a truncation ends the return like a termination (the finite-horizon return evaluation measures;
#   exact only where the time fraction is in the observation, which Equal Space, SMAX and Highway lack).
# "drop": bootstraps through truncations where the next step is stored and leaves the TD error of a
#   truncated last step out.
TruncationRule = Literal["bootstrap", "final", "drop"]
TRUNCATION_RULES: tuple[str, ...] = get_args(TruncationRule)


@dataclass
class Transitions:
    """A batch of team transitions. Shapes: B transitions, N agents, O obs size, S state size, A actions.

    ``state`` is the dataset's global state, or the agents' observations concatenated (``S = N * O``) when
    the dataset has none. ``next_*`` entries repeat step t's own where ``has_next`` is False (the last
    stored step of an episode). ``next_actions`` are the dataset's actions at t+1 (for on-data targets such
    as ICQ's). With a history window K, ``obs``/``next_obs`` are ``(B, N, K * O)``.
    """

    obs: torch.Tensor  # (B, N, O) float32 (K * O with a history window)
    actions: torch.Tensor  # (B, N) int64
    rewards: torch.Tensor  # (B, N) float32
    next_obs: torch.Tensor  # (B, N, O)
    next_actions: torch.Tensor  # (B, N) int64
    terminal: torch.Tensor  # (B, N) bool: the agent's episode terminated with this step
    truncated: torch.Tensor  # (B, N) bool: the agent's episode was truncated with this step
    alive: torch.Tensor  # (B, N) bool: the agent acted at this step (False after its own end)
    has_next: torch.Tensor  # (B,) bool: step t+1 is stored
    state: torch.Tensor  # (B, S)
    next_state: torch.Tensor  # (B, S)
    avail: torch.Tensor  # (B, N, A) bool
    next_avail: torch.Tensor  # (B, N, A) bool
    episode: torch.Tensor  # (B,) int64
    step: torch.Tensor  # (B,) int64


def bootstrap_weights(
    terminal: torch.Tensor, truncated: torch.Tensor, has_next: torch.Tensor, rule: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bootstrap, weight)``, float tensors shaped like ``terminal`` (any ``(B, ...)``; ``has_next`` (B,)).

    ``bootstrap`` multiplies gamma * V(next): 0 after a termination, and after a truncation under ``final``.
    ``weight`` is 0 for TD errors that cannot be formed: a truncation without a stored next step (``drop``).
    """
    if rule not in TRUNCATION_RULES:
        raise ValueError(f"unknown truncation rule {rule!r}; known: {TRUNCATION_RULES}")
    if rule == "bootstrap":
        return (~terminal).float(), torch.ones_like(terminal, dtype=torch.float32)
    if rule == "final":
        ended = terminal | truncated
        return (~ended).float(), torch.ones_like(terminal, dtype=torch.float32)
    has_next = has_next.view(-1, *([1] * (terminal.dim() - 1))).expand_as(terminal)
    weight = terminal | ~truncated | has_next
    return (~terminal).float(), weight.float()


def team_end(
    terminal: torch.Tensor, truncated: torch.Tensor, alive: torch.Tensor, has_next: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(team_terminal, team_truncated)`` ``(B,)`` bool from per-agent ``(B, N)`` flags and ``has_next``.

    The team's episode ends at its last stored step. It terminates there only when every agent still acting
    at that step terminated with it; any other end (an agent cut by the time limit, or an end without flags)
    is a truncation. Agents that finished earlier (a crashed car whose ``terminated`` flag stays set) do not
    count: an earlier crash does not make a later time-limit end terminal."""
    last = ~has_next
    team_terminal = last & (terminal | ~alive).all(-1) & (terminal & alive).any(-1)
    return team_terminal, last & ~team_terminal


def observation_windows(obs: np.ndarray, episode: np.ndarray, step: np.ndarray, history: int) -> np.ndarray:
    """Each agent's last ``history`` observations at the steps ``(episode, step)`` of ``obs (E, T, N, O)``:
    ``(V, N, history * O)``, oldest first, zeros before the episode's start."""
    V, N, O = len(episode), obs.shape[2], obs.shape[3]
    windows = np.zeros((V, history, N, O), dtype=obs.dtype)
    for k in range(history):  # K is small (a few steps); each offset is one vectorized gather
        back = step - (history - 1 - k)
        ok = back >= 0
        windows[ok, k] = obs[episode[ok], back[ok]]
    return windows.transpose(0, 2, 1, 3).reshape(V, N, history * O)


class TransitionSampler:
    """Uniform samples of the valid steps of a dataset as :class:`Transitions` (see the module docstring).

    ``history``: K, the observation window of ``obs``/``next_obs`` (1: the current observation alone).
    """

    def __init__(self, dataset, device: torch.device | str = "cpu", history: int = 1) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.device, self.history = torch.device(device), history
        self.n_agents, self.n_actions, self.obs_dim = dataset.n_agents, dataset.n_actions, dataset.obs_dim
        mask = dataset.mask  # (E, T)
        E, T, N = dataset.actions.shape
        episode, step = np.nonzero(mask)
        following = np.minimum(step + 1, T - 1)
        has_next = (step + 1 < T) & mask[episode, following]  # (V,)
        ended = dataset.terminals | dataset.truncations  # (E, T, N)
        ended_before = np.cumsum(ended, axis=1) - ended  # ends strictly before t
        alive = mask[..., None] & (ended_before == 0)  # (E, T, N)

        # the step after t, or t itself at an episode's last stored step (the stand-in after a cut)
        following = np.where(has_next, following, step)

        def at(array: np.ndarray, s: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array[episode, s]), device=self.device)

        def windows(s: np.ndarray) -> torch.Tensor:
            if history == 1:
                return at(dataset.obs, s)
            values = observation_windows(dataset.obs, episode, s, history)
            return torch.as_tensor(values, device=self.device)

        state = dataset.state if dataset.state is not None else dataset.obs.reshape(E, T, -1)
        avail = (
            dataset.avail_actions
            if dataset.avail_actions is not None
            else np.ones((E, T, N, dataset.n_actions), dtype=np.bool_)
        )
        self.obs = windows(step)  # (V, N, K * O)
        self.actions = at(dataset.actions, step)  # (V, N)
        self.rewards = at(dataset.rewards, step)  # (V, N)
        self.next_obs = windows(following)
        self.next_actions = at(dataset.actions, following)
        self.terminal = at(dataset.terminals, step)
        self.truncated = at(dataset.truncations, step)
        self.alive = at(alive, step)
        self.has_next = torch.as_tensor(has_next, device=self.device)
        self.state = at(state, step)  # (V, S)
        self.next_state = at(state, following)
        self.avail = at(avail, step)  # (V, N, A)
        self.next_avail = at(avail, following)
        self.episode = torch.as_tensor(episode, dtype=torch.int64, device=self.device)
        self.step = torch.as_tensor(step, dtype=torch.int64, device=self.device)

    @property
    def num_transitions(self) -> int:
        """The number of valid dataset steps."""
        return int(self.episode.numel())

    @property
    def state_dim(self) -> int:
        """S: the dataset's state size, or N * O when it has no state."""
        return int(self.state.shape[-1])

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement (``generator`` is a CPU generator)."""
        pick = torch.randint(self.num_transitions, (batch_size,), generator=generator).to(self.device)
        return self.gather(pick)

    def gather(self, index: torch.Tensor) -> Transitions:
        """The transitions at positions ``index (B,)`` of the valid steps (in dataset order)."""
        return Transitions(
            obs=self.obs[index],
            actions=self.actions[index],
            rewards=self.rewards[index],
            next_obs=self.next_obs[index],
            next_actions=self.next_actions[index],
            terminal=self.terminal[index],
            truncated=self.truncated[index],
            alive=self.alive[index],
            has_next=self.has_next[index],
            state=self.state[index],
            next_state=self.next_state[index],
            avail=self.avail[index],
            next_avail=self.next_avail[index],
            episode=self.episode[index],
            step=self.step[index],
        )
