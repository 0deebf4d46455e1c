"""Grid-World: each agent collects the objects of its own type; collisions block moves.

Rules (defaults in brackets, every number a constructor argument): a ``grid_size`` x ``grid_size`` grid [8],
``n_agents`` agents [2], each with ``objects_per_agent`` objects of its own type [3]; agents and objects start
on distinct random cells. Actions {0 stay, 1 up, 2 down, 3 left, 4 right}; a move off the grid stays.
Collisions, applied to the targets all agents choose at once: an agent whose target is another agent's
target, or a cell another agent occupied at the start of the step, stays where it is (so two agents
heading for one cell both stay, swaps are blocked, and nobody follows an agent that moves away). An
agent on an object of its own type collects it (+1 to that agent alone); other agents' objects are not
affected by standing on them. The episode terminates once every object is collected and is truncated
after ``max_steps`` steps [30]. See docs/environments.md for the observation and state layouts.

Two switches make it a cooperative task in which the agents must divide the work (both off by default):
``shared_objects`` lets any agent collect any object, and ``team_reward`` gives every agent the team's
reward of the step (so an agent's return is the team's). ``grid-world-coop`` is Grid-World with both on,
10 x 10 cells, 4 objects per agent and 15 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from marlkd.envs import _native
from marlkd.envs.base import EnvSpec
from marlkd.errors import ConfigError

ENV_ID = "grid-world"
COOP_ENV_ID = "grid-world-coop"
ACTION_NAMES = _native.GRID_ACTION_NAMES
_MOVES = _native.GRID_MOVES
_CELL_PX = _native.GRID_CELL_PX
_SHARED_OBJECT_COLOUR = np.array([150, 150, 150], dtype=np.uint8)


@dataclass(frozen=True)
class GridWorldConfig:
    """Grid-World's constructor arguments.

    Attributes:
        grid_size: side of the square grid, in cells (>= 2).
        n_agents: number of agents N (>= 1).
        objects_per_agent: objects of each agent's type placed at reset (>= 1).
        max_steps: episode length limit in steps.
        window: side of the square window each agent sees, centred on it (odd).
        shared_objects: any agent collects any object (there are still ``n_agents * objects_per_agent``
            objects, placed as without it); an agent's "own objects" channel then shows every object and
            its "other objects" channel is empty.
        team_reward: every agent receives the sum of all agents' rewards of the step.
    """

    # The switches added after the first datasets: recorded in ``EnvSpec.kwargs`` only when set, so that
    # Grid-World made without them keeps its records, file names and run ids.
    RECORDED_WHEN_SET: ClassVar[dict[str, Any]] = {"shared_objects": False, "team_reward": False}
    ENV_ID: ClassVar[str] = ENV_ID

    grid_size: int = 8
    n_agents: int = 2
    objects_per_agent: int = 3
    max_steps: int = 30
    window: int = 5
    shared_objects: bool = False
    team_reward: bool = False

    def __post_init__(self) -> None:
        env_id = self.ENV_ID
        _native.check_ints(env_id, self, grid_size=2, n_agents=1, objects_per_agent=1, max_steps=1)
        _native.check_window(env_id, self.window)
        for name in ("shared_objects", "team_reward"):
            _native.check_bool(env_id, name, getattr(self, name))
            object.__setattr__(self, name, bool(getattr(self, name)))  # a NumPy bool as a plain one
        needed = self.n_agents * (1 + self.objects_per_agent)
        if needed > self.grid_size**2:
            raise ConfigError(
                f"{env_id}: arguments n_agents and objects_per_agent need {needed} distinct cells, "
                f"but grid_size {self.grid_size} gives {self.grid_size**2}"
            )

    @property
    def obs_dim(self) -> int:
        return 2 + 3 * self.window**2 + 1

    @property
    def state_dim(self) -> int:
        return 2 * self.n_agents + self.n_agents * self.grid_size**2 + 1


@dataclass(frozen=True)
class CoopGridWorldConfig(GridWorldConfig):
    """``grid-world-coop``'s constructor arguments: Grid-World's, with ``shared_objects`` and
    ``team_reward`` on by default, on a larger grid (10 x 10, 4 objects per agent) and with half the time
    (15 steps), so that the team cannot collect everything and dividing the objects pays (with Grid-World's
    sizes the expert collects 5.99 of 6 objects)."""

    ENV_ID: ClassVar[str] = COOP_ENV_ID

    grid_size: int = 10
    objects_per_agent: int = 4
    max_steps: int = 15
    shared_objects: bool = True
    team_reward: bool = True


def spec(**kwargs: Any) -> EnvSpec:
    """Grid-World's sizes for constructor arguments ``kwargs`` (no simulation is built)."""
    return _native.env_spec(ENV_ID, _native.make_config(GridWorldConfig, ENV_ID, kwargs), len(ACTION_NAMES))


def coop_spec(**kwargs: Any) -> EnvSpec:
    """``grid-world-coop``'s sizes for constructor arguments ``kwargs`` (no simulation is built)."""
    config = _native.make_config(CoopGridWorldConfig, COOP_ENV_ID, kwargs)
    return _native.env_spec(COOP_ENV_ID, config, len(ACTION_NAMES))


def resolve_moves(cells: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Apply the collision rule to chosen moves.

    Args:
        cells: ``(B, N)`` int cell index of each agent at the start of the step (all distinct per copy).
        targets: ``(B, N)`` int cell index each agent tries to enter (its own cell when staying).

    Returns:
        ``(B, N)`` cell index after the step: the target, or the start cell when the target is another
        agent's target or another agent's start cell.
    """
    n = cells.shape[1]
    other = ~np.eye(n, dtype=bool)  # (N, N)
    same_target = (targets[:, :, None] == targets[:, None, :]) & other  # (B, N, N)
    occupied = (targets[:, :, None] == cells[:, None, :]) & other  # (B, N, N)
    blocked = (same_target | occupied).any(axis=2)  # (B, N)
    return np.where(blocked, cells, targets)


class GridWorldBatched(_native.EndsByFlags):
    """``num_envs`` copies of Grid-World stepped with array operations (the :class:`BatchedEnv` protocol).

    Copy ``b`` reset with seed ``s`` plays exactly the episode of :class:`GridWorldEnv` reset with seed
    ``s + b``. Objects and agents live in one grid per copy, padded by ``window // 2`` empty cells on
    every side, whose cell code is ``object_owner * (N + 1) + occupant`` (owner and occupant: agent index
    + 1, 0 for none), so an agent's window is one gather of codes. With ``shared_objects`` the owners are
    drawn as without it and ignored by the rules.
    """

    _config_cls: type[GridWorldConfig] = GridWorldConfig

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        config_cls = self._config_cls
        super().__init__(config_cls.ENV_ID, config_cls, len(ACTION_NAMES), num_envs, kwargs)
        config = self.config
        n = config.n_agents
        self._padded_side = config.grid_size + 2 * (config.window // 2)
        self._offsets = _native.window_offsets(config.window, self._padded_side)  # (w*w,)
        self._copy_base = np.arange(num_envs, dtype=np.int64)[:, None] * self._padded_side**2  # (B, 1)
        self._agent_ids = np.arange(1, n + 1, dtype=np.int16)  # (N,) agent i's id in cell codes
        self._object_unit = np.int16(n + 1)  # cell code of an object = owner id * this
        self.observation_low = np.zeros(config.obs_dim, dtype=np.float32)
        self.observation_high = np.ones(config.obs_dim, dtype=np.float32)
        cells = num_envs * self._padded_side**2
        self._codes = np.zeros(cells, dtype=np.int16)  # flattened (B, P, P) cell codes
        self._pos = np.zeros((num_envs, n, 2), dtype=np.int64)  # (B, N, 2) (row, col) in grid cells
        self._remaining = np.zeros(num_envs, dtype=np.int64)  # (B,) objects not yet collected

    def _flat(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Flat indices into the padded grids of grid cells ``(rows, cols)`` of shape ``(B, M)``."""
        radius = self.config.window // 2
        return self._copy_base + (rows + radius) * self._padded_side + (cols + radius)

    def _observe(self) -> np.ndarray:
        config = self.config
        n = config.n_agents
        window = self._flat(self._pos[..., 0], self._pos[..., 1])[..., None] + self._offsets  # (B, N, w*w)
        codes = self._codes[window]  # (B, N, w*w)
        owner = codes // self._object_unit
        occupant = codes - owner * self._object_unit
        me = self._agent_ids[None, :, None]  # (1, N, 1)
        if config.shared_objects:  # every object is the agent's own to collect
            objects = (owner != 0, np.zeros_like(owner, dtype=bool))
        else:
            objects = (owner == me, (owner != 0) & (owner != me))
        channels = (*objects, (occupant != 0) & (occupant != me))
        obs = np.empty((self.num_envs, n, config.obs_dim), dtype=np.float32)  # (B, N, O)
        obs[..., 0:2] = self._pos / (config.grid_size - 1)
        obs[..., 2:-1] = np.stack(channels, axis=-1).reshape(self.num_envs, n, -1)  # cell-major, channel last
        obs[..., -1] = (self._t / config.max_steps)[:, None]
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes in all copies; returns obs ``(B, N, O)`` float32."""
        config = self.config
        n, k, size = config.n_agents, config.objects_per_agent, config.grid_size
        self._streams.start_episode(seed)
        cells = self._streams.permutations(size * size)[:, : n * (1 + k)]  # (B, N + N*K) distinct cells
        rows, cols = cells // size, cells % size
        self._pos = np.stack([rows[:, :n], cols[:, :n]], axis=-1)  # (B, N, 2)
        self._codes[:] = 0
        owners = np.repeat(self._agent_ids, k)  # (N*K,) object j belongs to agent j // K
        self._codes[self._flat(rows[:, n:], cols[:, n:])] = owners * self._object_unit
        self._codes[self._flat(rows[:, :n], cols[:, :n])] = self._agent_ids  # distinct from object cells
        self._remaining[:] = n * k
        self._t[:] = 0
        self._terminated[:] = False
        self._truncated[:] = False
        self._started = True
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply actions ``(B, N)``; returns obs ``(B,N,O)``, rewards, terminated, truncated ``(B,N)``."""
        config = self.config
        active = self._active()  # (B,)
        actions = self._checked_actions(actions, active)  # finished copies stay
        targets = np.clip(self._pos + _MOVES[actions], 0, config.grid_size - 1)  # (B, N, 2)
        cells = self._flat(self._pos[..., 0], self._pos[..., 1])  # (B, N)
        new_cells = resolve_moves(cells, self._flat(targets[..., 0], targets[..., 1]))  # (B, N)
        moved = new_cells != cells  # (B, N)
        self._pos = np.where(moved[..., None], targets, self._pos)
        # Agents' cells are distinct before and after the step, so these fancy-index updates never collide.
        self._codes[cells] -= self._agent_ids
        self._codes[new_cells] += self._agent_ids
        owner = self._codes[new_cells] // self._object_unit  # (B, N) owner of the object here, 0 for none
        collected = owner != 0 if config.shared_objects else owner == self._agent_ids  # (B, N)
        self._codes[new_cells] -= collected * self._object_unit * owner  # remove collected objects
        n_collected = collected.sum(axis=1)  # (B,)
        self._remaining -= n_collected
        self._t += active
        self._terminated = self._remaining == 0
        self._truncated = (self._t >= config.max_steps) & ~self._terminated
        if config.team_reward:
            rewards = _native.per_agent(n_collected.astype(np.float32), config.n_agents)
        else:
            rewards = collected.astype(np.float32)
        return (self._observe(), rewards, *self._ends())

    def _object_grids(self) -> np.ndarray:
        """``(B, N, H, W)`` bool: agent i's uncollected objects (with ``shared_objects``: every uncollected
        object in grid 0, the others empty, as an agent's observation channels show them)."""
        radius, size, side = self.config.window // 2, self.config.grid_size, self._padded_side
        codes = _native.unpad(self._codes.reshape(self.num_envs, side, side), radius, size)
        owner = codes // self._object_unit  # (B, H, W)
        if self.config.shared_objects:
            grids = np.zeros((self.num_envs, self.config.n_agents, size, size), dtype=bool)
            grids[:, 0] = owner != 0
            return grids
        return owner[:, None] == self._agent_ids[None, :, None, None]

    def state(self) -> np.ndarray:
        """Global state ``(B, S)`` float32: positions, per-owner object grids, time fraction."""
        config = self.config
        positions = self._pos / (config.grid_size - 1)
        return _native.state_vector([positions, self._object_grids()], self._t, config.max_steps)

    def render_copy(self, index: int) -> np.ndarray:
        """Copy ``index`` drawn as RGB ``uint8 (H, W, 3)``: objects as small squares in a lighter shade of
        their owner's colour (grey with ``shared_objects``), agents as large ones."""
        colours = _native.AGENT_COLOURS
        image = _native.grid_image(
            np.full((self.config.grid_size,) * 2 + (3,), 255, dtype=np.uint8), _CELL_PX
        )
        pale = (255 - (255 - colours.astype(np.int64)) // 2).astype(np.uint8)  # objects: lighter agent colour
        for agent, grid in enumerate(self._object_grids()[index]):
            colour = _SHARED_OBJECT_COLOUR if self.config.shared_objects else pale[agent % len(colours)]
            for row, col in zip(*np.nonzero(grid), strict=True):
                _native.fill_cell(image, row, col, _CELL_PX, 11, colour)
        for agent, (row, col) in enumerate(self._pos[index]):
            _native.fill_cell(image, row, col, _CELL_PX, 4, colours[agent % len(colours)])
        return image


GridWorldEnv = _native.register_native(
    ENV_ID,
    "GridWorldEnv",
    GridWorldConfig,
    GridWorldBatched,
    spec,
    render_fps=4,
    description="collection: each agent collects its own objects; +1 per own object; blocked collisions",
)


class CoopGridWorldBatched(GridWorldBatched):
    """``grid-world-coop``: :class:`GridWorldBatched` with ``shared_objects`` and ``team_reward`` on by
    default."""

    _config_cls = CoopGridWorldConfig


CoopGridWorldEnv = _native.register_native(
    COOP_ENV_ID,
    "CoopGridWorldEnv",
    CoopGridWorldConfig,
    CoopGridWorldBatched,
    coop_spec,
    render_fps=4,
    description="collection, divided: any agent collects any object; team reward; blocked collisions",
)
