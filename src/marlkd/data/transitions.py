"""One-step transitions (o_t, a_t, r_t, o_{t+1}) of an offline dataset, for value-based and adversarial
methods.

Every valid step of every episode is one transition of the whole team: all agents at once, ``(B, N, ...)``.
The tensors are gathered once from the dataset when the sampler is built; a batch is an index into them.

Episode ends. The dataset keeps terminations (no value after them) apart from truncations (the episode was
cut, e.g. by the time limit: the value after them is not zero, but the observation after the cut is not
stored). :func:`bootstrap_weights` turns the two flags into the factor on the next value and a weight
on the transition's TD error under a chosen rule (``TRUNCATION_RULES``).

Agents may finish before their team (a crashed car, a dead unit): ``alive`` is False at the steps after an
agent's own episode ended, and losses of per-agent learners weight by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# "final": a truncation ends the return like a termination (the finite-horizon episode return that
#   evaluation measures; with the time fraction in the observation this is the exact target).
# "drop": a truncated last step has no stored next observation, so its TD error is left out.
TRUNCATION_RULES = ("final", "drop")


@dataclass
class Transitions:
    """A batch of team transitions. Shapes: B transitions, N agents, O obs size, S state size, A actions.

    ``state`` is the dataset's global state, or the agents' observations concatenated (``S = N * O``) when
    the dataset has none. ``next_*`` entries are zeros (``next_avail`` all True) where ``has_next`` is
    False. ``next_actions`` are the dataset's actions at t+1 (for on-data targets such as ICQ's).
    """

    obs: torch.Tensor  # (B, N, O) float32
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
    if rule == "final":
        ended = terminal | truncated
        return (~ended).float(), torch.ones_like(terminal, dtype=torch.float32)
    has_next = has_next.view(-1, *([1] * (terminal.dim() - 1))).expand_as(terminal)
    weight = terminal | ~truncated | has_next
    return (~terminal).float(), weight.float()


class TransitionSampler:
    """Uniform samples of the valid steps of a dataset as :class:`Transitions` (see the module docstring)."""

    def __init__(self, dataset, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.n_agents, self.n_actions, self.obs_dim = dataset.n_agents, dataset.n_actions, dataset.obs_dim
        mask = dataset.mask  # (E, T)
        E, T, N = dataset.actions.shape
        episode, step = np.nonzero(mask)
        following = np.minimum(step + 1, T - 1)
        has_next = (step + 1 < T) & mask[episode, following]  # (V,)
        ended = dataset.terminals | dataset.truncations  # (E, T, N)
        ended_before = np.cumsum(ended, axis=1) - ended  # ends strictly before t
        alive = mask[..., None] & (ended_before == 0)  # (E, T, N)

        def at(array: np.ndarray, s: np.ndarray, fill_missing: bool) -> torch.Tensor:
            values = array[episode, s]
            if fill_missing:
                missing = ~has_next.reshape(-1, *([1] * (values.ndim - 1)))
                values = np.where(missing, np.ones_like(values) if values.dtype == np.bool_ else 0, values)
            return torch.as_tensor(np.ascontiguousarray(values), device=self.device)

        state = dataset.state if dataset.state is not None else dataset.obs.reshape(E, T, -1)
        avail = (
            dataset.avail_actions
            if dataset.avail_actions is not None
            else np.ones((E, T, N, dataset.n_actions), dtype=np.bool_)
        )
        self.obs = at(dataset.obs, step, False)  # (V, N, O)
        self.actions = at(dataset.actions, step, False)  # (V, N)
        self.rewards = at(dataset.rewards, step, False)  # (V, N)
        self.next_obs = at(dataset.obs, following, True)
        self.next_actions = at(dataset.actions, following, True)
        self.terminal = at(dataset.terminals, step, False)
        self.truncated = at(dataset.truncations, step, False)
        self.alive = at(alive, step, False)
        self.has_next = torch.as_tensor(has_next, device=self.device)
        self.state = at(state, step, False)  # (V, S)
        self.next_state = at(state, following, True)
        self.avail = at(avail, step, False)  # (V, N, A)
        self.next_avail = at(avail, following, True)
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
