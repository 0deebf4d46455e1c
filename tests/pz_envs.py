"""PettingZoo environments marlkd does not ship, registered with one call each (``--import pz_envs``).

- ``test-pz-relay``: a small ParallelEnv written here, unchanged by marlkd, exercising what the adapter
  handles: 2-D Box observations, agents with different action counts, action masks in the observation
  dict (``mask_in="observation"``) or in the info (``mask_in="info"``), an agent that leaves early, a
  global ``state()`` and ``max_cycles``.
- ``test-pz-spread``: MPE's ``simple_spread_v3`` (package ``mpe2``), where installed.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marlkd.envs.pettingzoo import register_parallel_env

RELAY_ID = "test-pz-relay"
SPREAD_ID = "test-pz-spread"


class RelayEnv(ParallelEnv):
    """Three agents; each step an agent earns 1 for choosing the action its observation points at.

    ``runner`` has 4 actions, the others 3 (``start=1`` for ``lookout``). The pointed-at action is always
    available; the action after it (cyclically) is masked out. ``lookout`` leaves (terminates) after
    ``leave_at`` steps; the episode lasts ``max_cycles`` steps. With ``strict`` a masked-out action raises
    (so the tests see that marlkd never sends one); PettingZoo's API test, which ignores masks, runs with
    ``strict=False``.
    """

    metadata = {"name": "relay_v0", "render_modes": ["rgb_array"]}

    def __init__(
        self,
        max_cycles: int = 6,
        leave_at: int = 3,
        mask_in: str = "observation",
        strict: bool = True,
        render_mode=None,
    ) -> None:
        self.strict = strict
        self._limit = max_cycles  # max_cycles is the public attribute marlkd reads
        self.possible_agents = ["runner", "helper", "lookout"]
        self.max_cycles, self.leave_at, self.mask_in, self.render_mode = (
            max_cycles,
            leave_at,
            mask_in,
            render_mode,
        )
        self._counts = {"runner": 4, "helper": 3, "lookout": 3}
        self._starts = {"runner": 0, "helper": 0, "lookout": 1}
        self.agents: list[str] = []

    @functools.cache  # noqa: B019 - PettingZoo's own pattern for fixed spaces
    def observation_space(self, agent):
        box = spaces.Box(0.0, 1.0, (2, 4), np.float32)
        if self.mask_in == "observation":
            return spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(self._counts[agent])})
        return box

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(self._counts[agent], start=self._starts[agent])

    def _observe(self):
        observations, infos = {}, {}
        for agent in self.agents:
            grid = np.zeros((2, 4), np.float32)
            grid[0, self._target[agent]] = 1.0
            grid[1, 0] = self._t / self._limit
            mask = np.ones(self._counts[agent], np.int8)
            mask[(self._target[agent] + 1) % self._counts[agent]] = 0
            if self.mask_in == "observation":
                observations[agent] = {"observation": grid, "action_mask": mask}
                infos[agent] = {}
            else:
                observations[agent] = grid
                infos[agent] = {"action_mask": mask}
        return observations, infos

    def _draw(self):
        self._target = {a: int(self._rng.integers(self._counts[a])) for a in self.possible_agents}

    def reset(self, seed=None, options=None):
        self._rng = np.random.default_rng(seed)
        self._t = 0
        self.agents = list(self.possible_agents)
        self._draw()
        return self._observe()

    def step(self, actions):
        rewards = {}
        for agent in self.agents:
            index = actions[agent] - self._starts[agent]
            if not 0 <= index < self._counts[agent]:
                raise ValueError(f"{agent}: action {actions[agent]} out of range")
            mask_ok = index != (self._target[agent] + 1) % self._counts[agent]
            if self.strict and not mask_ok:
                raise ValueError(f"{agent}: action {actions[agent]} is masked out")
            rewards[agent] = float(index == self._target[agent])
        self._t += 1
        terminations = {a: a == "lookout" and self._t >= self.leave_at for a in self.agents}
        truncations = {a: self._t >= self._limit for a in self.agents}
        self._draw()
        observations, infos = self._observe()
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def state(self):
        return np.array([self._target[a] for a in self.possible_agents], np.float32)

    def render(self):
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[: self._t % 8] = 255
        return frame


def _spread(**kwargs):
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(**kwargs)


register_parallel_env(RELAY_ID, RelayEnv, description="relay: a test ParallelEnv", overwrite=True)
try:
    import mpe2  # noqa: F401
except ImportError:
    pass
else:
    register_parallel_env(SPREAD_ID, _spread, description="MPE simple_spread (mpe2)", overwrite=True)
