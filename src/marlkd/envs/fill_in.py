"""Fill-In: agents cover a grid together; every step costs the fraction of cells still empty.

Rules (defaults in brackets, every number a constructor argument): a ``grid_size`` x ``grid_size`` grid [6],
``n_agents`` agents [3] placed on distinct random cells, actions {0 stay, 1 up, 2 down, 3 left, 4 right}
(a move off the grid stays; agents may share a cell). A cell is filled once any agent stands on it, the
start cells included. After every step each agent receives ``-(empty cells) / (all cells)``. The episode
terminates when every cell is filled and is truncated after ``max_steps`` steps [40].
See docs/environments.md for the observation and state layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from marlkd.envs import _native
from marlkd.envs.base import EnvSpec
from marlkd.errors import ConfigError

ENV_ID = "fill-in"
ACTION_NAMES = _native.GRID_ACTION_NAMES
_MOVES = _native.GRID_MOVES
_CELL_PX = _native.GRID_CELL_PX


@dataclass(frozen=True)
class FillInConfig:
    """Fill-In's constructor arguments.

    Attributes:
        grid_size: side of the square grid, in cells (>= 2).
        n_agents: number of agents N (at most ``grid_size**2``).
        max_steps: episode length limit in steps.
        window: side of the square fill-state window each agent sees, centred on it (odd).
    """

    grid_size: int = 6
    n_agents: int = 3
    max_steps: int = 40
    window: int = 5

    def __post_init__(self) -> None:
        _native.check_ints(ENV_ID, self, grid_size=2, n_agents=1, max_steps=1)
        _native.check_window(ENV_ID, self.window)
        if self.n_agents > self.grid_size**2:
            raise ConfigError(
                f"{ENV_ID}: argument n_agents ({self.n_agents}) exceeds the {self.grid_size**2} cells"
            )

    @property
    def obs_dim(self) -> int:
        return 2 + self.window**2 + 2 * (self.n_agents - 1) + 1

    @property
    def state_dim(self) -> int:
        return 2 * self.n_agents + self.grid_size**2 + 1


def spec(**kwargs: Any) -> EnvSpec:
    """Fill-In's sizes for constructor arguments ``kwargs`` (no simulation is built)."""
    return _native.env_spec(ENV_ID, _native.make_config(FillInConfig, ENV_ID, kwargs), len(ACTION_NAMES))


class FillInBatched(_native.EndsByFlags):
    """``num_envs`` copies of Fill-In stepped with array operations (the :class:`BatchedEnv` protocol).

    Copy ``b`` reset with seed ``s`` plays exactly the episode of :class:`FillInEnv` reset with seed
    ``s + b``. The fill grid is stored padded by ``window // 2`` cells of "filled" on every side, so each
    agent's window is one gather.
    """

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        super().__init__(ENV_ID, FillInConfig, len(ACTION_NAMES), num_envs, kwargs)
        config = self.config
        n, size, radius = config.n_agents, config.grid_size, config.window // 2
        self._padded_side = size + 2 * radius
        self._offsets = _native.window_offsets(config.window, self._padded_side)  # (w*w,)
        self._copy_base = np.arange(num_envs, dtype=np.int64)[:, None] * self._padded_side**2  # (B, 1)
        self._others = _native.other_agents(n)  # (N, N-1)
        self._n_cells = size * size
        self.observation_low = np.concatenate(
            [np.zeros(2 + config.window**2), -np.ones(2 * (n - 1)), np.zeros(1)]
        ).astype(np.float32)
        self.observation_high = np.ones(config.obs_dim, dtype=np.float32)
        padded = np.ones((num_envs, self._padded_side, self._padded_side), dtype=bool)
        padded[:, radius : radius + size, radius : radius + size] = False
        self._empty_padded = padded
        self._filled = padded.reshape(num_envs, -1).copy()  # (B, P*P) True = filled or outside the grid
        self._pos = np.zeros((num_envs, n, 2), dtype=np.int64)  # (B, N, 2) (row, col) in grid cells

    def _flat_cells(self) -> np.ndarray:
        """Indices of the agents' cells in the flattened padded grids, ``(B, N)``."""
        radius = self.config.window // 2
        rows, cols = self._pos[..., 0] + radius, self._pos[..., 1] + radius
        return self._copy_base + rows * self._padded_side + cols

    def _n_empty(self) -> np.ndarray:
        border = self._padded_side**2 - self._n_cells
        return self._n_cells - (np.count_nonzero(self._filled, axis=1) - border)  # (B,)

    def _observe(self) -> np.ndarray:
        config = self.config
        scale = config.grid_size - 1
        n, area = config.n_agents, config.window**2
        obs = np.empty((self.num_envs, n, config.obs_dim), dtype=np.float32)  # (B, N, O)
        obs[..., 0:2] = self._pos / scale
        obs[..., 2 : 2 + area] = self._filled.reshape(-1)[self._flat_cells()[..., None] + self._offsets]
        relative = self._pos[:, None, :, :] - self._pos[:, :, None, :]  # (B, N, N, 2): [b, i, j] = p_j - p_i
        others = relative[:, np.arange(n)[:, None], self._others]  # (B, N, N-1, 2)
        obs[..., 2 + area : -1] = others.reshape(self.num_envs, n, -1) / scale
        obs[..., -1] = (self._t / config.max_steps)[:, None]
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes in all copies; returns obs ``(B, N, O)`` float32."""
        config = self.config
        self._streams.start_episode(seed)
        cells = self._streams.permutations(config.grid_size**2)[:, : config.n_agents]  # (B, N) distinct
        self._pos = np.stack([cells // config.grid_size, cells % config.grid_size], axis=-1)
        self._filled = self._empty_padded.reshape(self.num_envs, -1).copy()
        self._filled.reshape(-1)[self._flat_cells()] = True
        self._t[:] = 0
        self._terminated = self._n_empty() == 0
        self._truncated[:] = False
        self._started = True
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply actions ``(B, N)``; returns obs ``(B,N,O)``, rewards, terminated, truncated ``(B,N)``."""
        config = self.config
        active = self._active()  # (B,)
        actions = self._checked_actions(actions, active)  # finished copies stay
        self._pos = np.clip(self._pos + _MOVES[actions], 0, config.grid_size - 1)  # (B, N, 2)
        self._filled.reshape(-1)[self._flat_cells()] = True
        self._t += active
        n_empty = self._n_empty()  # (B,)
        self._terminated = n_empty == 0
        self._truncated = (self._t >= config.max_steps) & ~self._terminated
        reward = np.where(active, -n_empty / self._n_cells, 0.0).astype(np.float32)  # (B,)
        return (self._observe(), _native.per_agent(reward, config.n_agents), *self._ends())

    def state(self) -> np.ndarray:
        """Global state ``(B, S)`` float32: positions ``/(grid_size-1)``, the fill grid, the time fraction."""
        config = self.config
        radius, size = config.window // 2, config.grid_size
        grid = self._filled.reshape(self.num_envs, self._padded_side, self._padded_side)
        grid = _native.unpad(grid, radius, size)
        return _native.state_vector([self._pos / (size - 1), grid], self._t, config.max_steps)

    def render_copy(self, index: int) -> np.ndarray:
        """Copy ``index`` as RGB ``uint8 (H, W, 3)``: filled cells grey, empty white, agents coloured."""
        config = self.config
        radius, size = config.window // 2, config.grid_size
        grid = _native.unpad(self._filled[index].reshape(self._padded_side, self._padded_side), radius, size)
        cells = np.where(grid[..., None], np.uint8(200), np.uint8(255)).repeat(3, axis=-1)  # (H, W, 3)
        image = _native.grid_image(cells, _CELL_PX)
        colours = _native.AGENT_COLOURS
        for agent, (row, col) in enumerate(self._pos[index]):
            _native.fill_cell(image, row, col, _CELL_PX, 4 + 3 * (agent % 4), colours[agent % len(colours)])
        return image


FillInEnv = _native.register_native(
    ENV_ID,
    "FillInEnv",
    FillInConfig,
    FillInBatched,
    spec,
    render_fps=4,
    description="coverage: fill every cell of a grid together; reward -(fraction of cells still empty)",
)
