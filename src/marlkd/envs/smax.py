"""SMAC-style unit micromanagement from SMAX (jaxmarl) behind marlkd's environment API.

StarCraft II cannot run here, so the SMAC scenarios come from SMAX, a JAX re-implementation with the same
scenario names. Registered ids and scenarios: ``smax-2s3z`` (2s3z), ``smax-3s5z`` (3s5z), ``smax-8m-vs-9m``
(8m_vs_9m, registered here with SMAX's ``register_scenario``: 8 allied against 9 enemy marines) and
``smax-3s5z-vs-3s6z`` (3s5z_vs_3s6z). The enemy team is SMAX's heuristic policy (``HeuristicEnemySMAX``); the
allies are the N agents.

Conventions (SMAC's, where SMAX differs from the BatchedEnv contract the wrapper reconciles them):

* Observations are SMAX's ``unit_list`` features (in [-1, 1]); actions are SMAX's discrete actions:
  0-3 move, 4 stop, ``5 + j`` attack enemy j, so ``A = 5 + n_enemies``; ``action_mask`` gives the available
  ones (a dead unit can only stop).
* Every ally receives the team reward (SMAX's: the enemy health lost, normalized, plus ``won_battle_bonus``
  on a win), dead allies included, as in SMAC. Agents stay in the episode until it ends: ``terminated`` when
  one team is eliminated, ``truncated`` at ``max_steps``; a dead ally just has only "stop" available.
* SMAX resets a finished episode inside ``step``; here the raw ``step_env`` is used instead and a finished
  copy is frozen (state, observation, mask; rewards 0) until the next ``reset``. An episode is truncated
  after ``max_steps`` steps (SMAX alone would run one step more).
* ``state()`` is SMAX's world state: per unit (health fraction, x, y, weapon cooldown, unit-type one-hot),
  then every unit's team, then every unit's type index; ``S = (10 + 2) * (n_allies + n_enemies)``.

The batched form is ``jax.jit(jax.vmap(...))`` over B copies on the CPU (``JAX_PLATFORMS=cpu`` is set if unset
before JAX is imported; the compilations persist on disk across processes, :mod:`marlkd.jax_cache`).
Arrays leave JAX through ``np.asarray`` (a read-only view, no copy). Copy ``b`` of
``reset(seed)`` uses the key ``PRNGKey(seed + b)``, so it plays the same episode as the single form reset
with seed ``seed + b``.

This module is over 500 lines because its one job, adapting SMAX, takes the scenarios, the jitted and
vmapped step kernel, the batched form, rendering and the PettingZoo form together.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from marlkd.envs.base import EnvSpec
from marlkd.envs.registry import register_variants
from marlkd.errors import ConfigError, MarlkdError


@contextlib.contextmanager
def _silenced_stdout() -> Iterator[None]:
    """Silence standard output, also at the file-descriptor level: jaxmarl prints notes about optional
    submodules when imported, and one of its modules resets ``sys.stdout`` to ``sys.__stdout__``."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            if sys.__stdout__ is not None:
                sys.__stdout__.flush()
            saved = os.dup(1)
        except (OSError, ValueError):  # no file descriptor 1 (embedded interpreters)
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            yield
        finally:
            if sys.__stdout__ is not None:
                sys.__stdout__.flush()
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)


os.environ.setdefault("JAX_PLATFORMS", "cpu")
try:
    import gymnasium
    import jax
    import jax.numpy as jnp
    from pettingzoo import ParallelEnv

    with _silenced_stdout():
        from jaxmarl.environments.smax import (
            HeuristicEnemySMAX,
            Scenario,
            map_name_to_scenario,
            register_scenario,
        )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MarlkdError(
        f"the SMAX environments need jaxmarl and jax ({exc}); install them with `pip install 'marlkd[smax]'`"
    ) from exc

from marlkd.jax_cache import enable_compilation_cache  # noqa: E402 - after JAX, before any compilation

enable_compilation_cache(jax)  # a new process loads the jitted reset and step from disk

__all__ = [
    "SMAX_SCENARIOS",
    "BatchedSMAX",
    "InvalidActionError",
    "SMAXParallelEnv",
    "smax_spec",
]

#: Registry id -> SMAX scenario name.
SMAX_SCENARIOS: dict[str, str] = {
    "smax-2s3z": "2s3z",
    "smax-3s5z": "3s5z",
    "smax-8m-vs-9m": "8m_vs_9m",
    "smax-3s5z-vs-3s6z": "3s5z_vs_3s6z",
}
_MARINE = 0  # SMAX unit type index
_N_UNIT_TYPES = 6  # marine, marauder, stalker, zealot, zergling, hydralisk
_N_MOVE_ACTIONS = 5  # four directions and stop
_STOP = 4
_OWN_FEATURES = 4 + _N_UNIT_TYPES  # health, x, y, weapon cooldown, type one-hot
_UNIT_FEATURES = 7 + _N_UNIT_TYPES  # health, x, y, last move x, y, last targeted, cooldown, type one-hot


def _register_8m_vs_9m() -> None:
    """8 allied against 9 enemy marines, defined like SMAX's other marine scenarios (e.g. ``5m_vs_6m``)."""
    try:
        map_name_to_scenario("8m_vs_9m")
    except KeyError:
        register_scenario("8m_vs_9m", Scenario(jnp.full((17,), _MARINE, dtype=jnp.uint8), 8, 9, False, False))


_register_8m_vs_9m()


class InvalidActionError(MarlkdError, ValueError):
    """An agent of a running copy was given an action its ``action_mask`` marks unavailable."""


@dataclass(frozen=True)
class _Setup:
    """Resolved constructor arguments (``kwargs`` as recorded in specs and datasets) and sizes."""

    env_id: str
    kwargs: dict[str, Any]
    n_allies: int
    n_enemies: int

    @property
    def obs_dim(self) -> int:
        return _UNIT_FEATURES * (self.n_allies - 1) + _UNIT_FEATURES * self.n_enemies + _OWN_FEATURES

    @property
    def n_actions(self) -> int:
        return _N_MOVE_ACTIONS + self.n_enemies

    @property
    def state_dim(self) -> int:
        return (_OWN_FEATURES + 2) * (self.n_allies + self.n_enemies)


def _resolve(
    env_id: str,
    *,
    scenario: str | None = None,
    max_steps: int = 100,
    enemy_shoots: bool = True,
    attack_mode: str = "closest",
    won_battle_bonus: float = 1.0,
    walls_cause_death: bool = True,
    see_enemy_actions: bool = True,
) -> _Setup:
    """Check the constructor arguments of ``env_id`` and record them with SMAX's defaults filled in."""
    expected = SMAX_SCENARIOS[env_id]
    if scenario is not None and scenario != expected:
        raise ConfigError(f"{env_id}: scenario {scenario!r} does not match this id (it plays {expected!r})")
    if max_steps < 1:
        raise ConfigError(f"{env_id}: max_steps must be >= 1, got {max_steps}")
    if attack_mode not in ("closest", "random"):
        raise ConfigError(f"{env_id}: attack_mode must be 'closest' or 'random', got {attack_mode!r}")
    found = map_name_to_scenario(expected)
    kwargs = {
        "scenario": expected,
        "max_steps": int(max_steps),
        "enemy_shoots": bool(enemy_shoots),
        "attack_mode": attack_mode,
        "won_battle_bonus": float(won_battle_bonus),
        "walls_cause_death": bool(walls_cause_death),
        "see_enemy_actions": bool(see_enemy_actions),
    }
    return _Setup(env_id, kwargs, int(found.num_allies), int(found.num_enemies))


def smax_spec(env_id: str = "smax-2s3z", **kwargs: Any) -> EnvSpec:
    """Sizes of ``env_id`` made with ``kwargs``, from the scenario table (nothing is compiled or run)."""
    setup = _resolve(env_id, **kwargs)
    return EnvSpec(
        env_id=env_id,
        n_agents=setup.n_allies,
        obs_dim=setup.obs_dim,
        n_actions=setup.n_actions,
        state_dim=setup.state_dim,
        max_steps=setup.kwargs["max_steps"],
        has_action_mask=True,
        kwargs=setup.kwargs,
    )


class _Carry(NamedTuple):
    """One copy's running state (a JAX pytree; under ``vmap`` every leaf gains a leading B axis)."""

    key: jax.Array  # PRNG key for the next step
    env_state: Any  # HeuristicEnemySMAX state
    obs: jax.Array  # (N, O) float32
    avail: jax.Array  # (N, A) bool
    world: jax.Array  # (S,) float32
    done: jax.Array  # () bool: the episode has ended
    terminated: jax.Array  # () bool: ended by one team's elimination
    truncated: jax.Array  # () bool: ended by the step limit


class _Kernel:
    """The per-copy reset and step of one SMAX scenario, jitted over a batch of copies."""

    def __init__(self, setup: _Setup) -> None:
        kw = setup.kwargs
        self.env = HeuristicEnemySMAX(
            enemy_shoots=kw["enemy_shoots"],
            attack_mode=kw["attack_mode"],
            scenario=map_name_to_scenario(kw["scenario"]),
            max_steps=kw["max_steps"],
            won_battle_bonus=kw["won_battle_bonus"],
            walls_cause_death=kw["walls_cause_death"],
            see_enemy_actions=kw["see_enemy_actions"],
        )
        self.agents = list(self.env.agents)  # ally_0 ... ally_{N-1}
        self.n_allies = setup.n_allies
        self.max_steps = setup.kwargs["max_steps"]
        self.reset = jax.jit(jax.vmap(self._reset_one))
        self.step = jax.jit(jax.vmap(self._step_one))

    def _stack(self, per_agent: dict[str, jax.Array]) -> jax.Array:
        return jnp.stack([per_agent[agent] for agent in self.agents])

    def _reset_one(self, key: jax.Array) -> _Carry:
        key, reset_key = jax.random.split(key)
        obs, env_state = self.env.reset(reset_key)
        avail = self._stack(self.env.get_avail_actions(env_state)).astype(bool)
        false = jnp.zeros((), dtype=bool)
        # Strongly typed leaves (SMAX's heuristic enemy starts with weakly typed ones) give reset and step
        # the same carry types, so step compiles once rather than again after its first call.
        env_state = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=leaf.dtype), env_state)
        return _Carry(
            key=key,
            env_state=env_state,
            obs=self._stack(obs).astype(jnp.float32),
            avail=avail,
            world=obs["world_state"].astype(jnp.float32),
            done=false,
            terminated=false,
            truncated=false,
        )

    def _step_one(self, carry: _Carry, actions: jax.Array) -> tuple[_Carry, jax.Array]:
        """One copy: ``actions (N,)`` int32 -> (next carry, team reward ``()`` float32, 0 once frozen)."""
        key, step_key = jax.random.split(carry.key)
        joint = {agent: actions[i] for i, agent in enumerate(self.agents)}
        obs, env_state, rewards, dones, _ = self.env.step_env(step_key, carry.env_state, joint)
        alive = env_state.state.unit_alive
        eliminated = ~alive[: self.n_allies].any() | ~alive[self.n_allies :].any()
        # SMAX compares its step counter with max_steps before incrementing it, so on its own an episode
        # lasts max_steps + 1 steps; end it after max_steps, as the spec says.
        ended = dones["__all__"] | (env_state.state.step >= self.max_steps)
        stepped = _Carry(
            key=key,
            env_state=env_state,
            obs=self._stack(obs).astype(jnp.float32),
            avail=self._stack(self.env.get_avail_actions(env_state)).astype(bool),
            world=obs["world_state"].astype(jnp.float32),
            done=ended,
            terminated=ended & eliminated,
            truncated=ended & ~eliminated,
        )
        frozen = carry.done
        next_carry = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), carry, stepped)
        reward = jnp.where(frozen, 0.0, rewards[self.agents[0]]).astype(jnp.float32)
        return next_carry, reward


_KERNELS: dict[str, _Kernel] = {}


def _kernel_for(setup: _Setup) -> _Kernel:
    """One kernel per distinct configuration, so every environment of it reuses the compiled functions
    (JAX caches compilations per jitted function and batch size)."""
    key = json.dumps(setup.kwargs, sort_keys=True)
    if key not in _KERNELS:
        _KERNELS[key] = _Kernel(setup)
    return _KERNELS[key]


def _copy_keys(seed: int | None, num_envs: int) -> jax.Array:
    """``(B, 2)`` uint32 PRNG keys: copy ``b`` gets ``PRNGKey(seed + b)`` (seeds taken modulo 2**32)."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    seeds = (np.arange(num_envs, dtype=np.uint64) + np.uint64(seed % 2**32)) % np.uint64(2**32)
    return jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds.astype(np.uint32)))


class BatchedSMAX:
    """``num_envs`` copies of an SMAX scenario stepped by one jitted, vmapped JAX function on the CPU.

    Args:
        num_envs: number of copies B.
        env_id: one of :data:`SMAX_SCENARIOS`.
        check_actions: raise :class:`InvalidActionError` when a running copy's agent is given an action its
            mask marks unavailable (default). Off: unavailable actions reach SMAX, which ignores them (an
            out-of-range attack does nothing, a dead unit does not move).
        **kwargs: environment constructor arguments (see :func:`smax_spec`).

    Shapes: obs ``(B, N, O)`` float32, rewards ``(B, N)`` float32 (the team reward for every ally),
    terminated/truncated ``(B, N)`` bool (the same for every agent of a copy), ``state() (B, S)``,
    ``action_mask() (B, N, A)`` bool. Returned arrays are read-only views of JAX buffers; copy them to modify.
    The first ``reset`` and ``step`` compile (a few seconds); later calls with the same B do not.
    """

    def __init__(self, num_envs: int, env_id: str = "smax-2s3z", check_actions: bool = True, **kwargs: Any):
        if num_envs < 1:
            raise ConfigError(f"{env_id}: num_envs must be >= 1, got {num_envs}")
        self._setup = _resolve(env_id, **kwargs)
        self.spec = smax_spec(env_id, **kwargs)
        self.num_envs = num_envs
        self.check_actions = check_actions
        self._kernel = _kernel_for(self._setup)
        self._carry: _Carry | None = None
        self._done = np.zeros(num_envs, dtype=bool)
        self._mask: np.ndarray | None = None

    def _started(self) -> _Carry:
        if self._carry is None:
            raise MarlkdError(f"{self.spec.env_id}: call reset() before step(), state() or action_mask()")
        return self._carry

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start new episodes; copy ``b`` uses ``PRNGKey(seed + b)``. Returns obs ``(B, N, O)``."""
        self._carry = self._kernel.reset(_copy_keys(seed, self.num_envs))
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._mask = np.asarray(self._carry.avail)
        return np.asarray(self._carry.obs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions (B, N)``; returns obs ``(B,N,O)``, rewards, terminated, truncated ``(B,N)``."""
        carry = self._started()
        actions = np.asarray(actions)
        expected = (self.num_envs, self.spec.n_agents)
        if actions.shape != expected:
            raise ValueError(f"{self.spec.env_id}: actions must have shape {expected}, got {actions.shape}")
        # Finished copies are frozen; give them a valid action so SMAX computes nothing undefined.
        actions = np.where(self._done[:, None], _STOP, actions).astype(np.int32)
        if self.check_actions:
            self._check(actions)
        carry, reward = self._kernel.step(carry, jnp.asarray(actions))
        self._carry = carry
        self._done = np.asarray(carry.done)
        self._mask = np.asarray(carry.avail)
        n = self.spec.n_agents
        rewards = np.repeat(np.asarray(reward)[:, None], n, axis=1)  # (B, N)
        terminated = np.repeat(np.asarray(carry.terminated)[:, None], n, axis=1)
        truncated = np.repeat(np.asarray(carry.truncated)[:, None], n, axis=1)
        return np.asarray(carry.obs), rewards, terminated, truncated

    def _check(self, actions: np.ndarray) -> None:
        """Raise if an action (``(B, N)`` int32) of a running copy is out of range or masked out."""
        assert self._mask is not None
        in_range = (actions >= 0) & (actions < self.spec.n_actions)
        clipped = np.clip(actions, 0, self.spec.n_actions - 1)
        chosen = np.take_along_axis(self._mask, clipped[..., None], axis=2)[..., 0]  # (B, N)
        bad = ~(in_range & chosen)
        if bad.any():
            b, i = (int(x) for x in np.argwhere(bad)[0])
            available = np.flatnonzero(self._mask[b, i]).tolist()
            raise InvalidActionError(
                f"{self.spec.env_id}: action {int(actions[b, i])} of copy {b}, agent {i} is not available "
                f"(available: {available}); {int(bad.sum())} invalid action(s) in this step"
            )

    def state(self) -> np.ndarray:
        """``(B, S)`` float32: SMAX's world state of each copy."""
        return np.asarray(self._started().world)

    def action_mask(self) -> np.ndarray:
        """``(B, N, A)`` bool: the actions each ally may take now (a dead ally: only stop)."""
        self._started()
        assert self._mask is not None
        return self._mask

    def done(self) -> np.ndarray:
        """``(B,)`` bool: the copy's episode has ended (it stays frozen until ``reset``)."""
        return self._done.copy()

    def unit_state(self, index: int = 0) -> dict[str, np.ndarray]:
        """Positions ``(U, 2)``, health ``(U,)``, alive ``(U,)``, teams ``(U,)``, types ``(U,)`` of copy
        ``index`` (U = allies then enemies), e.g. for drawing."""
        smax_state = self._started().env_state.state
        return {
            name: np.asarray(getattr(smax_state, field))[index]
            for name, field in (
                ("positions", "unit_positions"),
                ("health", "unit_health"),
                ("alive", "unit_alive"),
                ("teams", "unit_teams"),
                ("types", "unit_types"),
            )
        }

    def close(self) -> None:
        """Drop the JAX state (nothing else to release)."""
        self._carry = None


_TEAM_COLOURS = np.array([[40, 110, 230], [220, 50, 40]], dtype=np.float64)  # allies blue, enemies red
_BACKGROUND = np.array([235, 235, 225], dtype=np.float64)


def draw_units(
    units: dict[str, np.ndarray], map_size: float, radii: np.ndarray, pixels: int = 256
) -> np.ndarray:
    """A top-down RGB ``uint8 (pixels, pixels, 3)`` picture: one disc per living unit, coloured by team,
    sized by unit type (``radii`` in map units per type), faded towards the background as health drops.
    """
    image = np.empty((pixels, pixels, 3), dtype=np.float64)
    image[:] = _BACKGROUND
    scale = pixels / map_size
    centres = (np.arange(pixels) + 0.5) / scale  # map coordinate of each pixel centre
    health_fraction = units["health"] / np.maximum(units["health_max"], 1e-6)
    for k in np.flatnonzero(units["alive"]):
        x, y = units["positions"][k]
        radius = max(float(radii[int(units["types"][k])]), 1.5 / scale)
        inside = (centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2 <= radius**2  # (rows=y, cols=x)
        strength = 0.35 + 0.65 * float(np.clip(health_fraction[k], 0.0, 1.0))
        image[inside] = _BACKGROUND + strength * (_TEAM_COLOURS[int(units["teams"][k])] - _BACKGROUND)
    return np.ascontiguousarray(image[::-1].astype(np.uint8))  # y grows upwards on the map


class SMAXParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv`` form: agents ``agent_0 ... agent_{N-1}`` are the allies.

    Each agent's info holds ``action_mask`` (bool ``(A,)``). All agents stay in ``agents`` until the
    episode ends (a dead ally may only stop). ``check_actions`` defaults to False here, so an unavailable
    action is handled as SMAX handles it (ignored); set it to raise instead. ``render()`` draws the units
    top-down with NumPy (``uint8 (256, 256, 3)``). Built on :class:`BatchedSMAX` with one copy, so it plays
    exactly the batched form's episodes.
    """

    metadata = {"name": "marlkd_smax_v0", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(
        self,
        env_id: str = "smax-2s3z",
        render_mode: str | None = "rgb_array",
        check_actions: bool = False,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"{env_id}: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env_id = env_id
        self.render_mode = render_mode
        self._batched = BatchedSMAX(1, env_id, check_actions=check_actions, **kwargs)
        self.spec = self._batched.spec
        n, o, a = self.spec.n_agents, self.spec.obs_dim, self.spec.n_actions
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self.observation_spaces = {
            agent: gymnasium.spaces.Box(-1.0, 1.0, (o,), np.float32) for agent in self.possible_agents
        }
        self.action_spaces = {agent: gymnasium.spaces.Discrete(a) for agent in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.spec.state_dim,), np.float32)

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self.action_spaces[agent]

    def _infos(self) -> dict[str, dict[str, np.ndarray]]:
        mask = self._batched.action_mask()[0]
        return {agent: {"action_mask": mask[i].copy()} for i, agent in enumerate(self.possible_agents)}

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        obs = self._batched.reset(seed)[0]
        self.agents = list(self.possible_agents)
        return {agent: obs[i].copy() for i, agent in enumerate(self.agents)}, self._infos()

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise ValueError(f"{self.env_id}: actions for agents that are not live: {sorted(unknown)}")
        joint = np.array([[int(actions.get(agent, _STOP)) for agent in self.possible_agents]])
        obs, rewards, terminated, truncated = self._batched.step(joint)
        live = self.agents
        index = {agent: i for i, agent in enumerate(self.possible_agents)}
        infos = self._infos()
        out = (
            {a: obs[0, index[a]].copy() for a in live},
            {a: float(rewards[0, index[a]]) for a in live},
            {a: bool(terminated[0, index[a]]) for a in live},
            {a: bool(truncated[0, index[a]]) for a in live},
            {a: infos[a] for a in live},
        )
        if self._batched.done()[0]:
            self.agents = []
        return out

    def state(self) -> np.ndarray:
        return self._batched.state()[0].copy()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn(f"{self.env_id}: render() called with render_mode=None")
            return None
        units = self._batched.unit_state(0)
        smax = self._batched._kernel.env
        units["health_max"] = np.asarray(smax.unit_type_health)[units["types"].astype(int)]
        return draw_units(units, float(smax.map_width), np.asarray(smax.unit_type_radiuses))

    def close(self) -> None:
        self._batched.close()


register_variants(
    {
        env_id: f"SMAX {scenario} (jaxmarl, heuristic enemies): SMAC micromanagement, action masks"
        for env_id, scenario in SMAX_SCENARIOS.items()
    },
    make=SMAXParallelEnv,
    make_batched=BatchedSMAX,
    spec=smax_spec,
    requires="smax",
)
