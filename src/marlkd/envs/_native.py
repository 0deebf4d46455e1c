"""What the three native environments (fill-in, equal-space, grid-world) share.

- Per-copy random streams: copy ``b`` of a batched environment reset with seed ``s`` draws exactly what a
  single environment reset with seed ``s + b`` draws, from a counter-based generator (SplitMix64 applied to
  ``(seed + b, episode, draw index)``) that is vectorized over copies.
- Configuration checking that raises :class:`~marlkd.errors.ConfigError` naming the argument.
- Grid helpers (window offsets, cell rectangles for rendering).
- :class:`NativeBatched` (and :class:`EndsByFlags`): the frame of a batched environment's class.
- :class:`NativeParallelEnv`: the PettingZoo ``ParallelEnv`` form, a batched environment with one copy, so
  that each environment's rules exist once; :func:`register_native` makes that form for an environment and
  registers both forms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from marlkd.envs.base import EnvSpec
from marlkd.envs.registry import EnvEntry, register
from marlkd.errors import ConfigError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_MASK_64 = (1 << 64) - 1

# Agent colours (RGB) used by every renderer, cycled when there are more agents than colours.
AGENT_COLOURS = np.array(
    [[228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0], [166, 86, 40]],
    dtype=np.uint8,
)


# The grid environments' (Fill-In's, Grid-World's) actions, their moves (A, 2) as (row, col) steps, and the
# side of a cell in their pictures, in pixels.
GRID_ACTION_NAMES = ("stay", "up", "down", "left", "right")
GRID_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
GRID_CELL_PX = 32


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array, elementwise with wrapping arithmetic; a new array."""
    x = x.copy()
    for shift, multiplier in ((30, _MIX_1), (27, _MIX_2)):
        x ^= x >> np.uint64(shift)
        x *= multiplier
    x ^= x >> np.uint64(31)
    return x


class CopyStreams:
    """Reproducible per-copy random draws for ``reset``.

    ``reset(seed)`` with an int starts episode 0 of base seed ``seed``; ``reset(None)`` moves on to the next
    episode of the same base seed (a fresh entropy seed when none was ever given). Copy ``b`` uses key
    ``base + b``, so copy ``b`` of a batch equals a single copy whose base seed is ``base + b``.
    """

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self._base: int | None = None
        self._episode = 0

    def start_episode(self, seed: int | None) -> None:
        """Pick the base seed and episode index for the next ``reset``."""
        if seed is not None:
            self._base, self._episode = int(seed) & _MASK_64, 0
        elif self._base is None:
            self._base, self._episode = int(np.random.SeedSequence().entropy) & _MASK_64, 0
        else:
            self._episode += 1

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform floats in [0, 1), float64 ``(B, *shape)``; copy b's depend only on (base + b, episode)."""
        assert self._base is not None, "start_episode must be called first"
        copies = np.uint64(self._base) + np.arange(self.num_envs, dtype=np.uint64)  # (B,) wraps mod 2**64
        episode = np.full(self.num_envs, self._episode, dtype=np.uint64) * _GOLDEN
        keys = _splitmix64(_splitmix64(copies) + episode)  # (B,)
        count = int(np.prod(shape))
        draws = keys[:, None] + (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]  # (B, count)
        bits = _splitmix64(draws)
        bits >>= np.uint64(11)  # the top 53 bits
        return (bits.astype(np.float64) * 2.0**-53).reshape((self.num_envs, *shape))

    def permutations(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)`` per copy, int64 ``(B, n)``."""
        # Sorting a row depends on that row alone, so copy b's permutation is the same at any batch size.
        return np.argsort(self.uniform((n,)), axis=1)


def env_spec(env_id: str, config: Any, n_actions: int) -> EnvSpec:
    """The :class:`EnvSpec` of a native environment's config dataclass (which has ``n_agents``, ``obs_dim``,
    ``state_dim`` and ``max_steps``); its fields are the spec's constructor arguments."""
    return EnvSpec(
        env_id=env_id,
        n_agents=config.n_agents,
        obs_dim=config.obs_dim,
        n_actions=n_actions,
        state_dim=config.state_dim,
        max_steps=config.max_steps,
        kwargs=recorded_kwargs(config),
    )


def recorded_kwargs(config: Any) -> dict[str, Any]:
    """The constructor arguments an :class:`EnvSpec` records: every field of ``config``, except those that
    a config class lists in its class attribute ``RECORDED_WHEN_SET`` (``{field: value}``, the rules from
    before the field existed) while they hold that value. So an argument added later leaves the records,
    file names and run ids of the environment made without it as they were."""
    omitted = getattr(type(config), "RECORDED_WHEN_SET", {})
    return {
        name: value
        for name, value in dataclasses.asdict(config).items()
        if not (name in omitted and value == omitted[name])
    }


def make_config(cls: type, env_id: str, kwargs: dict[str, Any]) -> Any:
    """Build the frozen config dataclass ``cls`` from ``kwargs``; unknown names raise ``ConfigError``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ConfigError(
            f"{env_id}: unknown argument {unknown[0]!r}; arguments are: {', '.join(sorted(names))}"
        )
    return cls(**kwargs)


def check_int(env_id: str, name: str, value: Any, minimum: int) -> None:
    """Raise ``ConfigError`` unless ``value`` is an int (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{env_id}: argument {name} must be an integer >= {minimum}, got {value!r}")


def check_ints(env_id: str, config: Any, **minimums: int) -> None:
    """:func:`check_int` on each field of ``config`` named in ``minimums``, against its minimum."""
    for name, minimum in minimums.items():
        check_int(env_id, name, getattr(config, name), minimum)


def check_float(
    env_id: str, name: str, value: Any, low: float, high: float = np.inf, *, open_low: bool = False
) -> None:
    """Raise ``ConfigError`` unless ``value`` is a finite real in ``[low, high]`` (``(low, high]``)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and value <= high and (value > low if open_low else value >= low)
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigError(
            f"{env_id}: argument {name} must be a real in {bracket}{low}, {high}], got {value!r}"
        )


def check_bool(env_id: str, name: str, value: Any) -> None:
    """Raise ``ConfigError`` unless ``value`` is a bool (or NumPy bool)."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{env_id}: argument {name} must be true or false, got {value!r}")


def check_window(env_id: str, window: Any) -> None:
    """The observation window must be a positive odd int (it is centred on the agent)."""
    check_int(env_id, "window", window, 1)
    if window % 2 == 0:
        raise ConfigError(f"{env_id}: argument window must be odd (centred on the agent), got {window}")


def other_agents(n_agents: int) -> np.ndarray:
    """``(N, N-1)`` int64: row i lists the other agents' indices in increasing order."""
    return np.array(
        [[j for j in range(n_agents) if j != i] for i in range(n_agents)], dtype=np.int64
    ).reshape(n_agents, n_agents - 1)


def window_offsets(window: int, padded_width: int) -> np.ndarray:
    """Flat offsets ``(window**2,)`` of a row-major window around a cell, in a grid ``padded_width`` wide."""
    radius = window // 2
    rows, cols = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1), indexing="ij")
    return (rows * padded_width + cols).reshape(-1).astype(np.int64)


def unpad(padded: np.ndarray, radius: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` grid inside grids ``(..., P, P)`` padded by ``radius`` cells (a view)."""
    return padded[..., radius : radius + size, radius : radius + size]


def per_agent(values: np.ndarray, n_agents: int) -> np.ndarray:
    """Per-copy values ``(B,)`` given to every agent: a new ``(B, N)`` array."""
    return np.broadcast_to(values[:, None], (values.shape[0], n_agents)).copy()


def state_vector(parts: list[np.ndarray], t: np.ndarray, max_steps: int) -> np.ndarray:
    """A global state ``(B, S)`` float32: each part ``(B, ...)`` flattened per copy, then the time fraction
    ``t / max_steps`` of the copies' step counts ``t (B,)``."""
    flat = [part.reshape(t.shape[0], -1) for part in parts]
    return np.concatenate([*flat, (t / max_steps)[:, None]], axis=1).astype(np.float32)


class NativeBatched:
    """The frame of a native batched environment: its checked constructor arguments (``config``), its
    ``spec``, per-copy random streams, the step counter ``_t (B,)``, the check of a step's actions, and an
    action mask of all True (every action of a native environment is always available)."""

    def __init__(
        self, env_id: str, config_cls: type, n_actions: int, num_envs: int, kwargs: dict[str, Any]
    ) -> None:
        check_int(env_id, "num_envs", num_envs, 1)
        self.config = make_config(config_cls, env_id, kwargs)
        self.spec = env_spec(env_id, self.config, n_actions)
        self.num_envs = num_envs
        self._streams = CopyStreams(num_envs)
        self._t = np.zeros(num_envs, dtype=np.int64)  # (B,) steps taken
        self._started = False

    def _checked_actions(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """A step's actions ``(B, N)`` checked (:func:`check_actions`) as int64, finished copies' set to 0."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        return check_actions(actions, active, self.spec.n_agents, self.spec.n_actions)

    def action_mask(self) -> np.ndarray:
        """``(B, N, A)`` bool, all True: every action is always available."""
        return np.ones((self.num_envs, self.spec.n_agents, self.spec.n_actions), dtype=bool)


class EndsByFlags(NativeBatched):
    """A native batched environment whose copies end by their ``_terminated`` / ``_truncated`` flags
    ``(B,)``, which every agent of the copy shares."""

    def __init__(
        self, env_id: str, config_cls: type, n_actions: int, num_envs: int, kwargs: dict[str, Any]
    ) -> None:
        super().__init__(env_id, config_cls, n_actions, num_envs, kwargs)
        self._terminated = np.zeros(num_envs, dtype=bool)
        self._truncated = np.zeros(num_envs, dtype=bool)

    def _active(self) -> np.ndarray:
        """``(B,)`` bool: the copy's episode is running."""
        return ~(self._terminated | self._truncated)

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        """The flags given to every agent: terminated, truncated ``(B, N)`` (new arrays)."""
        n = self.spec.n_agents
        return per_agent(self._terminated, n), per_agent(self._truncated, n)

    def done(self) -> np.ndarray:
        """``(B,)`` bool: the copy's episode has ended."""
        return self._terminated | self._truncated


def grid_image(cell_colours: np.ndarray, cell_px: int) -> np.ndarray:
    """Scale a ``(H, W, 3)`` uint8 cell-colour grid to ``(H*cell_px, W*cell_px, 3)``, with grid lines."""
    image = np.repeat(np.repeat(cell_colours, cell_px, axis=0), cell_px, axis=1)
    image[::cell_px, :] = 160
    image[:, ::cell_px] = 160
    image[-1, :] = 160
    image[:, -1] = 160
    return image


def fill_cell(image: np.ndarray, row: int, col: int, cell_px: int, margin: int, colour: np.ndarray) -> None:
    """Paint the square of cell ``(row, col)`` inset by ``margin`` pixels in ``colour`` (in place)."""
    top, left = row * cell_px + margin, col * cell_px + margin
    image[top : (row + 1) * cell_px - margin, left : (col + 1) * cell_px - margin] = colour


class NativeBatchedEnv(Protocol):
    """What :class:`NativeParallelEnv` needs of a native batched environment beyond ``BatchedEnv``."""

    spec: EnvSpec
    num_envs: int
    observation_low: np.ndarray
    observation_high: np.ndarray

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def state(self) -> np.ndarray: ...

    def render_copy(self, index: int) -> np.ndarray: ...


def batched_factory(batched_cls: type, config: Any) -> Callable[[int], NativeBatchedEnv]:
    """``num_envs -> batched_cls(num_envs, **fields of config)``, for :class:`NativeParallelEnv`."""
    return lambda num_envs: batched_cls(num_envs, **dataclasses.asdict(config))


class NativeParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv`` over one copy of a native batched environment.

    ``reset(seed=s)`` here equals copy ``b`` of the batched form reset with seed ``s - b``; the rules run in
    the batched code only. Agents are ``agent_0 ... agent_{N-1}``; all of them end together.
    """

    metadata: dict[str, Any] = {}

    def __init__(self, batched_factory: Callable[[int], NativeBatchedEnv], render_mode: str | None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"argument render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self._env = batched_factory(1)
        spec = self._env.spec
        self.possible_agents = [f"agent_{i}" for i in range(spec.n_agents)]
        self.agents: list[str] = []
        self._agent_index = {agent: i for i, agent in enumerate(self.possible_agents)}
        low, high = self._env.observation_low, self._env.observation_high
        # Built once: PettingZoo requires the same space object for an agent on every call.
        self._observation_spaces = {
            agent: gymnasium.spaces.Box(low, high, shape=(spec.obs_dim,), dtype=np.float32)
            for agent in self.possible_agents
        }
        self._action_spaces = {
            agent: gymnasium.spaces.Discrete(spec.n_actions) for agent in self.possible_agents
        }
        self.observation_spaces = self._observation_spaces
        self.action_spaces = self._action_spaces
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(spec.state_dim,), dtype=np.float32)
        self._started = False

    @property
    def spec(self) -> EnvSpec:
        """The environment's sizes and constructor arguments."""
        return self._env.spec

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self._observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._action_spaces[self._check_agent(agent)]

    def _check_agent(self, agent: str) -> str:
        if agent not in self._agent_index:
            raise KeyError(f"unknown agent {agent!r}; agents are {', '.join(self.possible_agents)}")
        return agent

    def _obs_dict(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {agent: obs[0, i].copy() for i, agent in enumerate(self.possible_agents)}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        obs = self._env.reset(seed)  # (1, N, O)
        self.agents = list(self.possible_agents)
        self._started = True
        return self._obs_dict(obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError("the episode has ended; call reset() to start a new one")
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise ValueError(f"no action given for {', '.join(missing)}")
        action_array = np.array([[int(actions[agent]) for agent in self.possible_agents]], dtype=np.int64)
        obs, rewards, terminated, truncated = self._env.step(action_array)
        live = self.agents
        observations = {agent: obs[0, self._agent_index[agent]].copy() for agent in live}
        reward = {agent: float(rewards[0, self._agent_index[agent]]) for agent in live}
        terminations = {agent: bool(terminated[0, self._agent_index[agent]]) for agent in live}
        truncations = {agent: bool(truncated[0, self._agent_index[agent]]) for agent in live}
        infos: dict[str, dict] = {agent: {} for agent in live}
        self.agents = [agent for agent in live if not (terminations[agent] or truncations[agent])]
        return observations, reward, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Global state ``(S,)`` float32."""
        return self._env.state()[0]

    def render(self) -> np.ndarray | None:
        """The current frame, RGB ``uint8 (H, W, 3)``; None (with a warning) when ``render_mode`` is None."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without render_mode='rgb_array'; nothing is drawn")
            return None
        if not self._started:
            raise RuntimeError("call reset() before render()")
        return self._env.render_copy(0)

    def close(self) -> None:
        """Nothing to release: the simulation is plain NumPy."""


def check_actions(actions: np.ndarray, active: np.ndarray, n_agents: int, n_actions: int) -> np.ndarray:
    """Validate an action batch ``(B, N)`` and return it as int64 with finished copies' actions set to 0.

    ``active`` ``(B,)`` bool marks copies whose episode is running; the actions of the others are ignored
    (any value is accepted there), those of running copies must be ints in ``[0, A)``.
    """
    actions = np.asarray(actions)
    if actions.shape != (active.shape[0], n_agents):
        raise ValueError(f"actions must have shape {(active.shape[0], n_agents)} (B, N), got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
    actions = np.where(active[:, None], actions, 0).astype(np.int64, copy=False)  # (B, N)
    if actions.size and (actions.min() < 0 or actions.max() >= n_actions):
        raise ValueError(
            f"actions must lie in [0, {n_actions}), got values in [{actions.min()}, {actions.max()}]"
        )
    return actions


def register_native(
    env_id: str,
    name: str,
    config_cls: type,
    batched_cls: type,
    spec: Callable[..., EnvSpec],
    render_fps: int,
    description: str,
) -> type[NativeParallelEnv]:
    """Register a native environment: its batched form ``batched_cls(num_envs, **kwargs)`` and its
    PettingZoo form, a :class:`NativeParallelEnv` subclass over one copy, returned for the environment's
    module to hold under ``name`` (checked constructor arguments: ``config_cls``)."""

    def __init__(self: NativeParallelEnv, render_mode: str | None = "rgb_array", **kwargs: Any) -> None:
        config = make_config(config_cls, env_id, kwargs)
        NativeParallelEnv.__init__(self, batched_factory(batched_cls, config), render_mode)

    env_cls = type(
        name,
        (NativeParallelEnv,),
        {
            "__doc__": f"{env_id} as a PettingZoo ``ParallelEnv`` (one copy of ``{batched_cls.__name__}``).",
            "__module__": batched_cls.__module__,
            "__init__": __init__,
            "metadata": {
                "name": env_id,
                "render_modes": ["rgb_array"],
                "render_fps": render_fps,
                "is_parallelizable": True,
            },
        },
    )
    register(
        EnvEntry(env_id=env_id, make=env_cls, make_batched=batched_cls, spec=spec, description=description)
    )
    return env_cls
