"""Equal Space: point masses spread out so that every pair is ``target_distance`` apart.

Rules (defaults in brackets, every number a constructor argument): ``n_agents`` point masses [3] start at
rest, uniformly at random in the box [-1, 1]^2. Actions {0 no-op, 1 +x, 2 -x, 3 +y, 4 -y} push with a force
of ``force`` [5.0] along one axis. Each step (semi-implicit Euler, as in the multi-agent particle
environments): ``v <- v * (1 - damping) + force / mass * dt`` [damping 0.25, mass 1.0, dt 0.1], the speed
is clipped to ``max_speed`` [1.0], ``x <- x + v * dt``; a mass that would leave the box is clipped to the
wall and its velocity component into the wall is zeroed. After every step each agent receives minus the
mean over pairs of ``|d_ij - target_distance|`` [1.0]. Truncated after ``max_steps`` steps [25]; there is
no termination. See docs/environments.md for the observation and state layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from marlkd.envs import _native
from marlkd.envs.base import EnvSpec

ENV_ID = "equal-space"
ACTION_NAMES = ("no-op", "+x", "-x", "+y", "-y")
_DIRECTIONS = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)  # (A, 2) (x, y)
_IMAGE_PX = 256
_AGENT_RADIUS = 0.07  # drawn disc radius, in box units


@dataclass(frozen=True)
class EqualSpaceConfig:
    """Equal Space's constructor arguments (lengths in box units, where the box is [-1, 1]^2; time in s).

    Attributes:
        n_agents: number of point masses N (>= 2, so that there is a pair).
        max_steps: episode length in steps.
        target_distance: d*, the wanted distance between every pair.
        dt: simulation time step, s.
        mass: mass of each point.
        damping: fraction of velocity lost per step, in [0, 1).
        force: magnitude of an action's push.
        max_speed: speed limit, box units per s.
    """

    n_agents: int = 3
    max_steps: int = 25
    target_distance: float = 1.0
    dt: float = 0.1
    mass: float = 1.0
    damping: float = 0.25
    force: float = 5.0
    max_speed: float = 1.0

    def __post_init__(self) -> None:
        _native.check_ints(ENV_ID, self, n_agents=2, max_steps=1)
        _native.check_float(ENV_ID, "target_distance", self.target_distance, 0.0)
        _native.check_float(ENV_ID, "dt", self.dt, 0.0, open_low=True)
        _native.check_float(ENV_ID, "mass", self.mass, 0.0, open_low=True)
        _native.check_float(ENV_ID, "damping", self.damping, 0.0, 0.999)
        _native.check_float(ENV_ID, "force", self.force, 0.0)
        _native.check_float(ENV_ID, "max_speed", self.max_speed, 0.0, open_low=True)

    @property
    def obs_dim(self) -> int:
        return 4 + 2 * (self.n_agents - 1)

    @property
    def state_dim(self) -> int:
        return 4 * self.n_agents + 1


def spec(**kwargs: Any) -> EnvSpec:
    """Equal Space's sizes for constructor arguments ``kwargs`` (no simulation is built)."""
    config = _native.make_config(EqualSpaceConfig, ENV_ID, kwargs)
    return _native.env_spec(ENV_ID, config, len(ACTION_NAMES))


def pair_distance_reward(positions: np.ndarray, target_distance: float) -> np.ndarray:
    """Minus the mean over pairs i < j of ``|‖p_i - p_j‖ - target_distance|``.

    Args:
        positions: ``(B, N, 2)`` point positions.
        target_distance: d*.

    Returns:
        ``(B,)`` float32 rewards.
    """
    first, second = np.triu_indices(positions.shape[1], k=1)  # (P,), (P,)
    gaps = positions[:, first] - positions[:, second]  # (B, P, 2)
    distances = np.sqrt((gaps * gaps).sum(axis=-1))  # (B, P)
    return (-np.abs(distances - np.float32(target_distance)).mean(axis=1)).astype(np.float32)


class EqualSpaceBatched(_native.NativeBatched):
    """``num_envs`` copies of Equal Space stepped with array operations (the :class:`BatchedEnv` protocol).

    Copy ``b`` reset with seed ``s`` plays exactly the episode of :class:`EqualSpaceEnv` reset with seed
    ``s + b``. The simulation runs in float32.
    """

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        super().__init__(ENV_ID, EqualSpaceConfig, len(ACTION_NAMES), num_envs, kwargs)
        config = self.config
        n = config.n_agents
        self._others = _native.other_agents(n)  # (N, N-1)
        self._push = _DIRECTIONS * np.float32(
            config.force / config.mass * config.dt
        )  # (A, 2) velocity change
        speed = config.max_speed
        self.observation_low = np.array([-1, -1, -speed, -speed] + [-2] * (2 * (n - 1)), dtype=np.float32)
        self.observation_high = -self.observation_low
        self._pos = np.zeros((num_envs, n, 2), dtype=np.float32)  # (B, N, 2) (x, y)
        self._vel = np.zeros((num_envs, n, 2), dtype=np.float32)  # (B, N, 2)

    def _observe(self) -> np.ndarray:
        n = self.config.n_agents
        obs = np.empty((self.num_envs, n, self.config.obs_dim), dtype=np.float32)  # (B, N, O)
        obs[..., 0:2] = self._pos
        obs[..., 2:4] = self._vel
        relative = self._pos[:, None, :, :] - self._pos[:, :, None, :]  # (B, N, N, 2): [b, i, j] = p_j - p_i
        obs[..., 4:] = relative[:, np.arange(n)[:, None], self._others].reshape(self.num_envs, n, -1)
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes in all copies; returns obs ``(B, N, O)`` float32."""
        self._streams.start_episode(seed)
        self._pos = (self._streams.uniform((self.config.n_agents, 2)) * 2.0 - 1.0).astype(np.float32)
        self._vel = np.zeros_like(self._pos)
        self._t[:] = 0
        self._started = True
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply actions ``(B, N)``; returns obs ``(B,N,O)``, rewards, terminated, truncated ``(B,N)``."""
        config = self.config
        active = self._t < config.max_steps  # (B,)
        actions = self._checked_actions(actions, active)
        vel = self._vel * np.float32(1.0 - config.damping) + self._push[actions]  # (B, N, 2)
        speed = np.sqrt((vel * vel).sum(axis=-1, keepdims=True))  # (B, N, 1)
        vel = vel * np.minimum(np.float32(1.0), np.float32(config.max_speed) / np.maximum(speed, 1e-12))
        pos = self._pos + vel * np.float32(config.dt)
        outside = np.abs(pos) > 1.0  # (B, N, 2) hit a wall on this axis
        pos = np.clip(pos, -1.0, 1.0)
        vel = np.where(outside, np.float32(0.0), vel)
        # Finished copies are frozen: they keep their positions and velocities and get no reward.
        self._pos = np.where(active[:, None, None], pos, self._pos)
        self._vel = np.where(active[:, None, None], vel, self._vel)
        self._t += active
        reward = np.where(active, pair_distance_reward(self._pos, config.target_distance), np.float32(0.0))
        return (
            self._observe(),
            _native.per_agent(reward, config.n_agents),
            np.zeros((self.num_envs, config.n_agents), dtype=bool),
            _native.per_agent(self._t >= config.max_steps, config.n_agents),
        )

    def state(self) -> np.ndarray:
        """Global state ``(B, S)`` float32: all positions, all velocities, the time fraction."""
        return _native.state_vector([self._pos, self._vel], self._t, self.config.max_steps)

    def done(self) -> np.ndarray:
        """``(B,)`` bool: the copy's episode has ended."""
        return self._t >= self.config.max_steps

    def render_copy(self, index: int) -> np.ndarray:
        """Copy ``index`` drawn as RGB ``uint8 (H, W, 3)``: the box (y up), agents as coloured discs."""
        pixel = (np.arange(_IMAGE_PX) + 0.5) / _IMAGE_PX * 2.0 - 1.0  # pixel centres in box units
        x, y = np.meshgrid(pixel, -pixel)  # (H, W) each; image row 0 is y = +1
        positions = self._pos[index]  # (N, 2)
        dist2 = (x[None] - positions[:, 0, None, None]) ** 2 + (y[None] - positions[:, 1, None, None]) ** 2
        nearest = dist2.argmin(axis=0)  # (H, W) agent drawn at each pixel
        inside = dist2.min(axis=0) <= _AGENT_RADIUS**2  # (H, W)
        colours = _native.AGENT_COLOURS[np.arange(self.config.n_agents) % len(_native.AGENT_COLOURS)]
        image = np.full((_IMAGE_PX, _IMAGE_PX, 3), 255, dtype=np.uint8)
        image[inside] = colours[nearest[inside]]
        image[[0, -1], :] = 0
        image[:, [0, -1]] = 0
        return image


EqualSpaceEnv = _native.register_native(
    ENV_ID,
    "EqualSpaceEnv",
    EqualSpaceConfig,
    EqualSpaceBatched,
    spec,
    render_fps=10,
    description="particles: spread point masses so every pair is d* apart; reward -mean |d_ij - d*|",
)
