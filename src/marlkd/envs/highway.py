"""Highway driving with several controlled vehicles: highway-env behind marlkd's environment API.

Two registered ids share this module:

* ``highway`` -- highway-env's ``highway-fast-v0`` (``HighwayEnvFast``: 5 Hz simulation, collisions checked
  for controlled vehicles only), with that environment's defaults: 3 lanes, 20 other vehicles, 30 s. The
  default for datasets and evaluation.
* ``highway-slow`` -- ``highway-v0`` (``HighwayEnv``: 15 Hz simulation), 4 lanes, 50 vehicles, 40 s.

Both control ``n_agents`` vehicles (default 3) with highway-env's multi-agent ``DiscreteMetaAction``
(0 lane left, 1 idle, 2 lane right, 3 faster, 4 slower) at ``policy_frequency`` decisions per second
(default 1 Hz), and observe ``Kinematics`` (the ego row then the ``observed_vehicles - 1`` nearest vehicles,
features ``presence, x, y, vx, vy``, normalized as highway-env does), flattened to ``float32``. The
observation is computed with NumPy (:func:`kinematics_observation`, the same values as highway-env's pandas
implementation, which took half of each step's time).

highway-env's ``HighwayEnv`` rewards and terminates on the first controlled vehicle only. Here every
controlled vehicle gets its own reward with highway-env's terms and normalization (collision, right lane,
high forward speed over ``reward_speed_range``, mapped to [0, 1] and multiplied by ``on_road``), and an
agent's episode ends (``terminated``) when its own vehicle crashes. A crashed vehicle stays on the road
(highway-env brakes it to a stop, so it is an obstacle to the others); its later rewards are 0, its actions
are ignored (it is sent ``IDLE``) and its observation is frozen at the crash step. The others drive on until
they crash or the time limit truncates them.

The batched form steps its copies in worker processes (the simulation is pure Python), each worker owning a
contiguous block of copies; ``state()`` is the concatenation of the controlled vehicles' observations.
Copy ``b`` of ``reset(seed)`` is seeded with ``seed + b``, so it matches the single form reset with that seed.

The simulation both forms step, with its settings, rewards and observation, is
:mod:`marlkd.envs._highway_sim`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from marlkd.envs.registry import register_variants
from marlkd.errors import ConfigError, MarlkdError

if TYPE_CHECKING:
    from highway_env.envs.highway_env import HighwayEnv

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
try:
    import highway_env  # noqa: F401 - checked first: every highway id is built on it

    from marlkd.envs._highway_sim import (
        HIGHWAY_VARIANTS,
        IDLE,
        N_ACTIONS,
        HighwayCore,
        HighwaySetup,
        highway_spec,
        kinematics_observation,
        resolve_setup,
        vehicle_reward,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the package
    raise MarlkdError(
        f"the highway environments need highway-env ({exc}); install the extra: "
        "`pip install 'marlkd[highway]'`"
    ) from exc

__all__ = [
    "HIGHWAY_VARIANTS",
    "BatchedHighwayEnv",
    "HighwayParallelEnv",
    "highway_spec",
    "kinematics_observation",
    "vehicle_reward",
]

_PARENT_CHECK_SECONDS = 1.0  # how often an idle worker checks that its parent process is alive


class HighwayParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv`` form: agents ``agent_0 ... agent_{N-1}``, one per controlled vehicle.

    An agent leaves ``agents`` when its vehicle crashes (terminated) or at the time limit (truncated).
    ``render()`` returns highway-env's frame as ``uint8 (H, W, 3)`` (offscreen: ``SDL_VIDEODRIVER`` is set
    to ``offscreen`` if unset). ``state()`` is ``(N * O,)``: all controlled vehicles' observations.
    """

    metadata = {"name": "marlkd_highway_v0", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, env_id: str = "highway", render_mode: str | None = "rgb_array", **kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"{env_id}: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env_id = env_id
        self.render_mode = render_mode
        self._setup = resolve_setup(env_id, **kwargs)
        self.spec = highway_spec(env_id, **kwargs)
        self._core = HighwayCore(self._setup, render_mode="rgb_array")
        self.possible_agents = [f"agent_{i}" for i in range(self._setup.n_agents)]
        self.agents: list[str] = []
        self.observation_spaces = {
            agent: gymnasium.spaces.Box(-np.inf, np.inf, (self.spec.obs_dim,), np.float32)
            for agent in self.possible_agents
        }
        self.action_spaces = {agent: gymnasium.spaces.Discrete(N_ACTIONS) for agent in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.spec.state_dim,), np.float32)

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        obs = self._core.reset(seed)
        self.agents = list(self.possible_agents)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        live = list(self.agents)
        unknown = set(actions) - set(live)
        if unknown:
            raise ValueError(f"{self.env_id}: actions for agents that are not live: {sorted(unknown)}")
        joint = np.full(self._setup.n_agents, IDLE, dtype=np.int64)
        for i, agent in enumerate(self.possible_agents):
            if agent in actions:
                joint[i] = int(actions[agent])
        obs, rewards, terminated, truncated = self._core.step(joint)
        index = {a: i for i, a in enumerate(self.possible_agents)}
        out = (
            {a: obs[index[a]] for a in live},
            {a: float(rewards[index[a]]) for a in live},
            {a: bool(terminated[index[a]]) for a in live},
            {a: bool(truncated[index[a]]) for a in live},
            {a: {"crashed": bool(self._core.env.controlled_vehicles[index[a]].crashed)} for a in live},
        )
        self.agents = [a for a in live if not (terminated[index[a]] or truncated[index[a]])]
        return out

    def state(self) -> np.ndarray:
        return self._core.state()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn(f"{self.env_id}: render() called with render_mode=None")
            return None
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
        frame = self._core.env.render()
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._core.env.close()

    @property
    def unwrapped_highway(self) -> HighwayEnv:
        """The underlying highway-env environment (for inspection and hand-set tests)."""
        return self._core.env


def _run(cores: list[HighwayCore], command: str, payload: np.ndarray) -> Any:
    """Apply ``reset`` (payload: seeds ``(k,)``) or ``step`` (payload: actions ``(k, N)``) to ``k`` cores."""
    if command == "reset":
        return np.stack([core.reset(int(seed)) for core, seed in zip(cores, payload, strict=True)])
    if command == "step":
        outputs = [core.step(a) for core, a in zip(cores, payload, strict=True)]
        return tuple(np.stack(parts) for parts in zip(*outputs, strict=True))
    raise ValueError(f"unknown command {command!r}")


def _worker(conn: Connection, setup: HighwaySetup, count: int, parent_pid: int) -> None:
    """Worker process loop: owns ``count`` simulations and answers reset/step/close messages.

    Exits by itself when the parent process is gone: forked siblings hold copies of the parent's pipe
    ends, so a parent killed without ``close`` would not show up as end-of-file on the pipe.
    """
    cores = [HighwayCore(setup) for _ in range(count)]
    while True:
        while not conn.poll(_PARENT_CHECK_SECONDS):
            if os.getppid() != parent_pid:
                return
        command, payload = conn.recv()
        if command == "close":
            for core in cores:
                core.env.close()
            conn.send(("ok", None))
            conn.close()
            return
        try:
            conn.send(("ok", _run(cores, command, payload)))
        except Exception:  # noqa: BLE001 - forwarded to the parent with its traceback
            conn.send(("error", traceback.format_exc()))


class BatchedHighwayEnv:
    """``num_envs`` highway simulations stepped together, in ``num_workers`` processes.

    Args:
        num_envs: number of copies B.
        env_id: ``highway`` or ``highway-slow``.
        num_workers: worker processes; ``None`` picks ``min(B, os.cpu_count())`` and runs in this process
            when that is 1; ``0`` runs all copies in this process.
        start_method: multiprocessing start method. Default ``fork`` where the platform has it (workers
            start in milliseconds, and scripts without an ``if __name__ == "__main__"`` guard work; the
            workers run only highway-env, never torch or JAX, so the parent's threads do not matter),
            else ``spawn``.
        **kwargs: environment constructor arguments (see :func:`highway_spec`).

    Shapes: obs ``(B, N, O)`` float32, rewards ``(B, N)`` float32, terminated/truncated ``(B, N)`` bool,
    ``state() (B, N * O)``, ``action_mask() (B, N, 5)`` all True. Use as a context manager or call ``close``.
    """

    def __init__(
        self,
        num_envs: int,
        env_id: str = "highway",
        num_workers: int | None = None,
        start_method: str | None = None,
        **kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"{env_id}: num_envs must be >= 1, got {num_envs}")
        self.spec = highway_spec(env_id, **kwargs)
        self.num_envs = num_envs
        self._setup = resolve_setup(env_id, **kwargs)
        if num_workers is None:
            num_workers = min(num_envs, os.cpu_count() or 1)
            num_workers = 0 if num_workers == 1 else num_workers
        if num_workers < 0:
            raise ConfigError(f"{env_id}: num_workers must be >= 0, got {num_workers}")
        self.num_workers = min(num_workers, num_envs)
        n, o = self.spec.n_agents, self.spec.obs_dim
        self._obs = np.zeros((num_envs, n, o), dtype=np.float32)
        self._terminated = np.zeros((num_envs, n), dtype=bool)
        self._truncated = np.zeros((num_envs, n), dtype=bool)
        self._closed = False
        self._cores: list[HighwayCore] = []
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        if self.num_workers == 0:
            self._blocks = [np.arange(num_envs)]
            self._cores = [HighwayCore(self._setup) for _ in range(num_envs)]
            return
        self._blocks = [b for b in np.array_split(np.arange(num_envs), self.num_workers) if len(b)]
        if start_method is None:
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        context = mp.get_context(start_method)
        for block in self._blocks:
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker, args=(child, self._setup, len(block), os.getpid()), daemon=True
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def _call(self, command: str, payloads: list[Any]) -> list[Any]:
        if self._closed:
            raise MarlkdError(f"{self.spec.env_id}: the batched environment is closed")
        if not self._conns:
            return [_run(self._cores, command, payloads[0])]
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send((command, payload))
        results = []
        for conn in self._conns:
            status, result = conn.recv()
            if status != "ok":
                raise RuntimeError(f"{self.spec.env_id}: a worker process failed:\n{result}")
            results.append(result)
        return results

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes; copy ``b`` is seeded with ``seed + b``. Returns obs ``(B, N, O)``."""
        if seed is None:
            seeds = np.random.default_rng().integers(0, 2**31 - 1, size=self.num_envs)
        else:
            seeds = np.arange(seed, seed + self.num_envs)
        results = self._call("reset", [seeds[block] for block in self._blocks])
        self._obs = np.concatenate(results)
        self._terminated[:] = False
        self._truncated[:] = False
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions (B, N)``; returns obs ``(B,N,O)``, rewards, terminated, truncated ``(B,N)``."""
        actions = np.asarray(actions, dtype=np.int64)
        expected = (self.num_envs, self.spec.n_agents)
        if actions.shape != expected:
            raise ValueError(f"{self.spec.env_id}: actions must have shape {expected}, got {actions.shape}")
        live = ~(self._terminated | self._truncated)
        bad = live & ((actions < 0) | (actions >= N_ACTIONS))
        if bad.any():
            b, i = np.argwhere(bad)[0]
            raise ValueError(
                f"{self.spec.env_id}: action {actions[b, i]} (copy {b}, agent {i}) out of [0, {N_ACTIONS})"
            )
        results = self._call("step", [actions[block] for block in self._blocks])
        obs, rewards, terminated, truncated = (np.concatenate(parts) for parts in zip(*results, strict=True))
        self._obs, self._terminated, self._truncated = obs, terminated, truncated
        return obs, rewards, terminated.copy(), truncated.copy()

    def state(self) -> np.ndarray:
        """``(B, N * O)`` float32: each copy's controlled-vehicle observations, agent after agent."""
        return self._obs.reshape(self.num_envs, -1).copy()

    def action_mask(self) -> np.ndarray:
        """``(B, N, 5)`` bool, all True: highway-env accepts every meta-action in every state."""
        return np.ones((self.num_envs, self.spec.n_agents, N_ACTIONS), dtype=bool)

    def done(self) -> np.ndarray:
        """``(B,)`` bool: every agent of the copy is terminated or truncated."""
        return (self._terminated | self._truncated).all(axis=1)

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        for core in self._cores:
            core.env.close()

    def __enter__(self) -> BatchedHighwayEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down modules
            pass


register_variants(
    {
        env_id: (
            f"highway-env {variant} with several controlled vehicles: per-agent rewards, "
            "discrete meta-actions, kinematics observations"
        )
        for env_id, variant in HIGHWAY_VARIANTS.items()
    },
    make=HighwayParallelEnv,
    make_batched=BatchedHighwayEnv,
    spec=highway_spec,
    requires="highway",
)
