"""Any PettingZoo ``ParallelEnv`` as a marlkd environment, with one call: :func:`register_parallel_env`.

The environment is used as it is. marlkd sees every agent of ``possible_agents`` (fixed order, N agents)
with:

- **observations** flattened to float32 vectors (``gymnasium.spaces.flatten``: Box reshaped, Discrete
  one-hot, Dict/Tuple concatenated), zero-padded to the longest agent's when agents differ; an
  observation that is a dict with ``"observation"`` and ``"action_mask"`` (PettingZoo's classic
  convention) gives its ``"observation"`` part;
- **actions** ``Discrete`` per agent (``start`` offsets honoured); agents with fewer actions than the
  largest have the extra ones masked out;
- **action masks** from the observation's ``"action_mask"`` or the info's ``"action_mask"``, where the
  environment gives them (and whenever agents' action counts differ);
- **global state** from ``state()`` where the environment implements it (flattened), else none;
- **episode ends**: an agent that terminates or is truncated leaves; the episode ends when no agent is
  left, or after ``max_steps`` steps (then every agent still in it is truncated).

The batched form steps B copies in a loop in this process (PettingZoo environments are Python objects);
copy b of ``reset(seed)`` is reset with ``seed + b``.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from marlkd.envs.base import EnvSpec
from marlkd.envs.registry import EnvEntry, register
from marlkd.errors import MarlkdError

_MAX_STEP_ATTRIBUTES = ("max_cycles", "max_steps", "max_episode_steps", "_max_episode_steps")


class ParallelEnvError(MarlkdError):
    """The registered PettingZoo environment does not fit what marlkd needs; names the env and the agent."""


@dataclass(frozen=True)
class _Layout:
    """What marlkd needs to know about a ParallelEnv, found once from a probe instance."""

    agents: tuple[str, ...]
    obs_spaces: tuple[Any, ...]  # per agent: the space to flatten (the "observation" part of a dict)
    obs_dims: tuple[int, ...]
    action_counts: tuple[int, ...]
    action_starts: tuple[int, ...]
    mask_source: str  # "observation", "info" or "" (counts differ: masks made here)
    state_dim: int
    max_steps: int

    @property
    def obs_dim(self) -> int:
        return max(self.obs_dims)

    @property
    def n_actions(self) -> int:
        return max(self.action_counts)

    @property
    def masked(self) -> bool:
        return bool(self.mask_source) or len(set(self.action_counts)) > 1


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _probe(env_id: str, env: Any, max_steps: int | None) -> _Layout:
    from gymnasium import spaces

    _, infos = env.reset(seed=0)
    agents = tuple(env.possible_agents)
    if not agents:
        raise ParallelEnvError(f"{env_id}: the environment has no possible_agents")
    obs_spaces, dims, counts, starts, sources = [], [], [], [], set()
    for agent in agents:
        space = env.observation_space(agent)
        if isinstance(space, spaces.Dict) and "observation" in space.spaces:
            if "action_mask" in space.spaces:
                sources.add("observation")
            space = space.spaces["observation"]
        obs_spaces.append(space)
        dims.append(int(spaces.flatdim(space)))
        action_space = env.action_space(agent)
        if not isinstance(action_space, spaces.Discrete):
            raise ParallelEnvError(
                f"{env_id}: agent {agent!r}: action space {action_space} is not Discrete; marlkd's methods "
                "need discrete actions"
            )
        counts.append(int(action_space.n))
        starts.append(int(action_space.start))
        if "action_mask" in (infos or {}).get(agent, {}):
            sources.add("info")
    state_dim = 0
    try:
        state = env.state()
        if state is not None:
            state_dim = int(np.asarray(state).size)
    except (NotImplementedError, AttributeError):
        state_dim = 0
    if max_steps is None:
        for holder in (env, getattr(env, "unwrapped", None)):
            for name in _MAX_STEP_ATTRIBUTES:
                value = getattr(holder, name, None)
                if isinstance(value, int) and value > 0:
                    max_steps = value
                    break
            if max_steps is not None:
                break
    if max_steps is None or max_steps < 1:
        raise ParallelEnvError(
            f"{env_id}: cannot tell the episode's step limit (no max_cycles / max_steps attribute); pass "
            "max_steps= to register_parallel_env"
        )
    source = "observation" if "observation" in sources else ("info" if "info" in sources else "")
    return _Layout(
        agents, tuple(obs_spaces), tuple(dims), tuple(counts), tuple(starts), source, state_dim, max_steps
    )


class FlatParallelEnv(ParallelEnv):
    """A PettingZoo ``ParallelEnv`` with marlkd's view of it: flat float32 observations ``(O,)``, actions
    ``0..n_i-1`` (``Discrete(n_i)``, n_i the agent's own count), ``info["action_mask"]`` (bool ``(A,)``, A the
    largest count) when masked, ``state()`` flattened, and the step limit.

    The single-copy form that ``marlkd.envs.make`` returns (rendering, GIFs, PettingZoo's API test).
    """

    metadata: dict[str, Any] = {"name": "marlkd_flat_parallel", "is_parallelizable": True}

    def __init__(self, env: Any, layout: _Layout, env_id: str) -> None:
        from gymnasium import spaces

        self.env, self.layout, self.env_id = env, layout, env_id
        self.possible_agents = list(layout.agents)
        self.agents: list[str] = []
        self.render_mode = getattr(env, "render_mode", None)
        self._obs_space = spaces.Box(-np.inf, np.inf, (layout.obs_dim,), np.float32)
        self._action_spaces = {
            agent: spaces.Discrete(n) for agent, n in zip(layout.agents, layout.action_counts, strict=True)
        }
        self._index = {agent: i for i, agent in enumerate(layout.agents)}
        self._t = 0

    def observation_space(self, agent: str) -> Any:
        return self._obs_space

    def action_space(self, agent: str) -> Any:
        return self._action_spaces[agent]

    def _flat(self, agent: str, value: Any) -> np.ndarray:
        from gymnasium import spaces

        i = self._index[agent]
        if isinstance(value, Mapping) and "observation" in value:
            value = value["observation"]
        flat = np.asarray(spaces.flatten(self.layout.obs_spaces[i], value), dtype=np.float32).reshape(-1)
        out = np.zeros(self.layout.obs_dim, dtype=np.float32)
        out[: flat.size] = flat
        return out

    def _mask(self, agent: str, observation: Any, info: Mapping[str, Any] | None) -> np.ndarray:
        i = self._index[agent]
        mask = np.zeros(self.layout.n_actions, dtype=bool)
        given = None
        if self.layout.mask_source == "observation" and isinstance(observation, Mapping):
            given = observation.get("action_mask")
        elif self.layout.mask_source == "info" and info:
            given = info.get("action_mask")
        count = self.layout.action_counts[i]
        mask[:count] = True if given is None else np.asarray(given, dtype=bool).reshape(-1)[:count]
        return mask

    def _convert(self, observations: Mapping[str, Any], infos: Mapping[str, Any]):
        flat, out_infos = {}, {}
        for agent, value in observations.items():
            flat[agent] = self._flat(agent, value)
            info = dict(infos.get(agent, {}) or {})
            if self.layout.masked:
                info["action_mask"] = self._mask(agent, value, info)
            out_infos[agent] = info
        return flat, out_infos

    def reset(self, seed: int | None = None, options: dict | None = None):
        observations, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        self._t = 0
        return self._convert(observations, infos or {})

    def step(self, actions: Mapping[str, int]):
        given = {
            agent: int(action) + self.layout.action_starts[self._index[agent]]
            for agent, action in actions.items()
            if agent in self.env.agents
        }
        observations, rewards, terminations, truncations, infos = self.env.step(given)
        self._t += 1
        terminations, truncations = dict(terminations), dict(truncations)
        if self._t >= self.layout.max_steps:  # marlkd's step limit: every agent still in is truncated
            for agent in self.env.agents:
                truncations[agent] = not terminations.get(agent, False)
            self.agents = []
        else:
            self.agents = list(self.env.agents)
        flat, out_infos = self._convert(observations, infos or {})
        return flat, dict(rewards), terminations, truncations, out_infos

    def state(self) -> np.ndarray:
        if not self.layout.state_dim:
            raise NotImplementedError(f"{self.env_id} has no global state")
        return np.asarray(self.env.state(), dtype=np.float32).reshape(-1)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class BatchedParallelEnv:
    """``num_envs`` copies of a PettingZoo environment stepped together (:class:`marlkd.envs.BatchedEnv`)."""

    def __init__(self, copies: list[FlatParallelEnv], spec: EnvSpec) -> None:
        self.copies, self.spec, self.num_envs = copies, spec, len(copies)
        layout = copies[0].layout
        self._layout = layout
        B, N, O, A = self.num_envs, spec.n_agents, spec.obs_dim, spec.n_actions
        self._obs = np.zeros((B, N, O), dtype=np.float32)
        self._mask = np.ones((B, N, A), dtype=bool)
        self._state = np.zeros((B, spec.state_dim), dtype=np.float32)
        self._terminated = np.zeros((B, N), dtype=bool)
        self._truncated = np.zeros((B, N), dtype=bool)
        self._done = np.zeros(B, dtype=bool)
        self._index = {agent: i for i, agent in enumerate(layout.agents)}
        self._no_op = np.zeros(A, dtype=bool)
        self._no_op[0] = True  # what an agent that has left may "choose" (its action is ignored)

    def _record(self, b: int, observations: Mapping[str, Any], infos: Mapping[str, Any]) -> None:
        for agent, value in observations.items():
            i = self._index[agent]
            self._obs[b, i] = value
            if self.spec.has_action_mask:
                self._mask[b, i] = infos[agent]["action_mask"]
        if self.spec.state_dim:
            self._state[b] = self.copies[b].state()

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._obs[:] = 0.0
        self._mask[:] = True
        self._terminated[:] = False
        self._truncated[:] = False
        self._done[:] = False
        for b, env in enumerate(self.copies):
            observations, infos = env.reset(seed=None if seed is None else seed + b)
            self._record(b, observations, infos)
            self._done[b] = not env.agents
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        actions = np.asarray(actions)
        rewards = np.zeros((self.num_envs, self.spec.n_agents), dtype=np.float32)
        agents = self._layout.agents
        for b in np.flatnonzero(~self._done):
            env = self.copies[b]
            live = [agent for agent in agents if agent in env.agents]
            observations, given, terminations, truncations, infos = env.step(
                {agent: int(actions[b, self._index[agent]]) for agent in live}
            )
            for agent, value in given.items():
                rewards[b, self._index[agent]] = value
            for agent in live:
                i = self._index[agent]
                self._terminated[b, i] |= bool(terminations.get(agent, False))
                self._truncated[b, i] |= bool(truncations.get(agent, False))
                if agent not in env.agents and not (self._terminated[b, i] or self._truncated[b, i]):
                    self._terminated[b, i] = True  # left without a flag: counted as terminated
            self._record(b, observations, infos)
            gone = self._terminated[b] | self._truncated[b]
            if self.spec.has_action_mask:
                self._mask[b, gone] = self._no_op
            self._done[b] = not env.agents
        return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy()

    def state(self) -> np.ndarray:
        return self._state.copy()

    def action_mask(self) -> np.ndarray:
        return self._mask.copy()

    def done(self) -> np.ndarray:
        return self._done.copy()

    def close(self) -> None:
        for env in self.copies:
            env.close()

    def __enter__(self) -> BatchedParallelEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ParallelEnvSource:
    """What a registered PettingZoo environment is made from: its factory, and the layout found from one
    instance per distinct set of arguments (made when first needed)."""

    def __init__(self, env_id: str, factory: Callable[..., Any], max_steps: int | None) -> None:
        self.env_id, self.factory, self.max_steps = env_id, factory, max_steps
        self.layouts: dict[str, _Layout] = {}
        self.lock = threading.Lock()
        self.takes_render_mode = _accepts(factory, "render_mode")

    def build(self, kwargs: Mapping[str, Any], render_mode: str | None = None) -> Any:
        arguments = dict(kwargs)
        if render_mode is not None and self.takes_render_mode:
            arguments["render_mode"] = render_mode
        try:
            return self.factory(**arguments)
        except TypeError as exc:
            raise ParallelEnvError(
                f"{self.env_id}: the factory refused the arguments {arguments} ({exc})"
            ) from exc

    def layout(self, kwargs: Mapping[str, Any]) -> _Layout:
        key = json.dumps(kwargs, sort_keys=True, default=repr)
        with self.lock:
            if key not in self.layouts:
                env = self.build(kwargs)
                try:
                    self.layouts[key] = _probe(self.env_id, env, self.max_steps)
                finally:
                    env.close()
            return self.layouts[key]

    def spec(self, **kwargs: Any) -> EnvSpec:
        found = self.layout(kwargs)
        return EnvSpec(
            env_id=self.env_id,
            n_agents=len(found.agents),
            obs_dim=found.obs_dim,
            n_actions=found.n_actions,
            state_dim=found.state_dim,
            max_steps=found.max_steps,
            has_action_mask=found.masked,
            kwargs=dict(kwargs),
        )

    def make(self, render_mode: str | None = None, **kwargs: Any) -> FlatParallelEnv:
        return FlatParallelEnv(self.build(kwargs, render_mode), self.layout(kwargs), self.env_id)

    def make_batched(self, num_envs: int, **kwargs: Any) -> BatchedParallelEnv:
        found = self.layout(kwargs)
        copies = [FlatParallelEnv(self.build(kwargs), found, self.env_id) for _ in range(num_envs)]
        return BatchedParallelEnv(copies, self.spec(**kwargs))


def register_parallel_env(
    env_id: str,
    factory: Callable[..., Any],
    *,
    max_steps: int | None = None,
    description: str = "",
    overwrite: bool = False,
) -> EnvEntry:
    """Register the PettingZoo ``ParallelEnv`` made by ``factory(**kwargs)`` as the marlkd environment
    ``env_id``: data collection (random or a PPO expert), every method, evaluation, GIFs and sweeps then
    work with it.

    Args:
        env_id: the id to use everywhere (``marlkd collect ENV_ID``, specs, datasets).
        factory: makes one environment from keyword arguments (for example
            ``mpe2.simple_spread_v3.parallel_env``); called with ``render_mode="rgb_array"`` for GIFs when
            it accepts a ``render_mode``. The arguments are recorded in datasets and runs.
        max_steps: the episode step limit; default: the environment's ``max_cycles`` / ``max_steps``
            attribute. Episodes are truncated there.
        description: one line for ``marlkd envs``.

    Returns the registry entry. The layout (agents, sizes, masks, state) is found from one instance per
    distinct set of arguments, made when first needed. To make the environment visible to the command line
    and sweep workers, call this in a module loaded with ``--import`` or a ``marlkd.envs`` entry point.
    """
    source = _ParallelEnvSource(env_id, factory, max_steps)
    entry = EnvEntry(
        env_id=env_id,
        make=source.make,
        make_batched=source.make_batched,
        spec=source.spec,
        description=description or f"PettingZoo {getattr(factory, '__module__', '')}".strip(),
    )
    register(entry, overwrite=overwrite)
    return entry
