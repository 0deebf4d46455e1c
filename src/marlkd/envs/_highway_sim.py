"""One highway-env simulation with several controlled vehicles, each rewarded and observed on its own.

Imported through :mod:`marlkd.envs.highway` (which says how to install highway-env when it is missing).
What its two forms (PettingZoo, worker-process batched) are built on: the checked
constructor arguments of the ``highway`` and ``highway-slow`` ids and the highway-env config they make
(:func:`resolve_setup`, :func:`highway_spec`), a simulation stepped with per-vehicle rewards, crashes and
frozen finished agents (:class:`HighwayCore`), highway-env's reward computed for any vehicle
(:func:`vehicle_reward`) and its Kinematics observation computed with NumPy (:func:`kinematics_observation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from highway_env import utils as highway_utils
from highway_env.envs.common.observation import KinematicObservation
from highway_env.envs.highway_env import HighwayEnv, HighwayEnvFast
from highway_env.vehicle.controller import ControlledVehicle

from marlkd.envs.base import EnvSpec
from marlkd.errors import ConfigError

#: Registry id -> the highway-env environment it is built on.
HIGHWAY_VARIANTS: dict[str, str] = {"highway": "highway-fast-v0", "highway-slow": "highway-v0"}
_VARIANT_CLASSES: dict[str, type[HighwayEnv]] = {"highway-fast-v0": HighwayEnvFast, "highway-v0": HighwayEnv}
_KINEMATICS_FEATURES = ("presence", "x", "y", "vx", "vy")
N_ACTIONS = 5  # DiscreteMetaAction with lateral and longitudinal actions
IDLE = 1


@dataclass(frozen=True)
class HighwaySetup:
    """Resolved constructor arguments: what is recorded (``kwargs``) and the highway-env ``config``."""

    env_id: str
    variant: str
    n_agents: int
    kwargs: dict[str, Any]
    config: dict[str, Any]

    @property
    def obs_dim(self) -> int:
        return int(self.kwargs["observed_vehicles"]) * len(self.kwargs["features"])

    @property
    def max_steps(self) -> int:
        # highway-env advances time by 1 / policy_frequency per step and truncates once time >= duration.
        return int(math.ceil(self.kwargs["duration"] * self.kwargs["policy_frequency"] - 1e-9))


def resolve_setup(
    env_id: str,
    *,
    variant: str | None = None,
    n_agents: int = 3,
    lanes_count: int | None = None,
    vehicles_count: int | None = None,
    duration: float | None = None,
    policy_frequency: int = 1,
    simulation_frequency: int | None = None,
    observed_vehicles: int = 5,
    features: Sequence[str] = _KINEMATICS_FEATURES,
    config: dict[str, Any] | None = None,
) -> HighwaySetup:
    """Check the constructor arguments of ``env_id`` and fill ``None`` with the variant's package defaults."""
    expected = HIGHWAY_VARIANTS[env_id]
    if variant is not None and variant != expected:
        raise ConfigError(
            f"{env_id}: variant {variant!r} does not match this id (it is built on {expected!r}); "
            f"use id {'highway-slow' if variant == 'highway-v0' else 'highway'} instead"
        )
    if n_agents < 1:
        raise ConfigError(f"{env_id}: n_agents must be >= 1, got {n_agents}")
    if observed_vehicles < 2:  # highway-env's Kinematics observation misbehaves with a single row
        raise ConfigError(f"{env_id}: observed_vehicles must be >= 2, got {observed_vehicles}")
    if policy_frequency < 1:
        raise ConfigError(f"{env_id}: policy_frequency must be >= 1, got {policy_frequency}")
    defaults = _VARIANT_CLASSES[expected].default_config()  # a dict: no simulation is built
    extra = dict(config or {})
    for reserved in ("controlled_vehicles", "observation", "action"):
        if reserved in extra:
            raise ConfigError(f"{env_id}: config[{reserved!r}] is set by the wrapper, not by the user")
    kwargs: dict[str, Any] = {
        "variant": expected,
        "n_agents": int(n_agents),
        "lanes_count": int(defaults["lanes_count"] if lanes_count is None else lanes_count),
        "vehicles_count": int(defaults["vehicles_count"] if vehicles_count is None else vehicles_count),
        "duration": float(defaults["duration"] if duration is None else duration),
        "policy_frequency": int(policy_frequency),
        "simulation_frequency": int(
            defaults["simulation_frequency"] if simulation_frequency is None else simulation_frequency
        ),
        "observed_vehicles": int(observed_vehicles),
        "features": list(features),
        "config": extra,
    }
    if kwargs["simulation_frequency"] % kwargs["policy_frequency"]:
        raise ConfigError(
            f"{env_id}: simulation_frequency ({kwargs['simulation_frequency']}) must be a multiple of "
            f"policy_frequency ({kwargs['policy_frequency']})"
        )
    highway_config = {
        **extra,
        "controlled_vehicles": kwargs["n_agents"],
        "lanes_count": kwargs["lanes_count"],
        "vehicles_count": kwargs["vehicles_count"],
        "duration": kwargs["duration"],
        "policy_frequency": kwargs["policy_frequency"],
        "simulation_frequency": kwargs["simulation_frequency"],
        "observation": {
            "type": "MultiAgentObservation",
            "observation_config": {
                "type": "Kinematics",
                "vehicles_count": kwargs["observed_vehicles"],
                "features": kwargs["features"],
            },
        },
        "action": {"type": "MultiAgentAction", "action_config": {"type": "DiscreteMetaAction"}},
    }
    return HighwaySetup(env_id, expected, kwargs["n_agents"], kwargs, highway_config)


def highway_spec(env_id: str = "highway", **kwargs: Any) -> EnvSpec:
    """Sizes of ``env_id`` (``highway`` or ``highway-slow``) made with ``kwargs``; builds no simulation."""
    setup = resolve_setup(env_id, **kwargs)
    return EnvSpec(
        env_id=env_id,
        n_agents=setup.n_agents,
        obs_dim=setup.obs_dim,
        n_actions=N_ACTIONS,
        state_dim=setup.n_agents * setup.obs_dim,
        max_steps=setup.max_steps,
        has_action_mask=False,
        kwargs=setup.kwargs,
    )


class HighwayCore:
    """One highway-env simulation with per-agent rewards, crashes and frozen finished agents.

    Arrays: ``obs (N, O)`` float32, ``rewards (N,)`` float32, ``terminated``/``truncated`` ``(N,)`` bool.
    ``terminated`` and ``truncated`` are sticky: once an agent is done they stay True until ``reset``.
    """

    def __init__(self, setup: HighwaySetup, render_mode: str | None = None) -> None:
        self.setup = setup
        self.env: HighwayEnv = _VARIANT_CLASSES[setup.variant](config=setup.config, render_mode=render_mode)
        n = setup.n_agents
        self.obs = np.zeros((n, setup.obs_dim), dtype=np.float32)
        self.terminated = np.zeros(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)

    @property
    def agent_done(self) -> np.ndarray:
        """``(N,)`` bool: the agent's episode has ended."""
        return self.terminated | self.truncated

    @property
    def done(self) -> bool:
        return bool(self.agent_done.all())

    def reset(self, seed: int | None) -> np.ndarray:
        self.env.reset(seed=seed)
        self.obs = self.observe()
        self.terminated[:] = False
        self.truncated[:] = False
        return self.obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.setup.n_agents
        rewards = np.zeros(n, dtype=np.float32)
        if self.done:
            return self.obs.copy(), rewards, self.terminated.copy(), self.truncated.copy()
        live = ~self.agent_done
        sent = tuple(int(a) if alive else IDLE for a, alive in zip(actions, live, strict=True))
        # AbstractEnv.step without its observation, reward and info of the first vehicle, which the
        # wrapper computes itself for every vehicle.
        self.env.time += 1 / self.env.config["policy_frequency"]
        self.env._simulate(sent)
        new_obs = self.observe()
        self.obs[live] = new_obs[live]
        config = self.env.config
        time_up = self.env.time >= config["duration"]
        for i, vehicle in enumerate(self.env.controlled_vehicles):
            if not live[i]:
                continue
            rewards[i] = vehicle_reward(self.env, vehicle)
            crashed = vehicle.crashed or (config["offroad_terminal"] and not vehicle.on_road)
            self.terminated[i] = crashed
            self.truncated[i] = time_up and not crashed
        return self.obs.copy(), rewards, self.terminated.copy(), self.truncated.copy()

    def state(self) -> np.ndarray:
        """``(N * O,)`` float32: the controlled vehicles' observations, agent after agent."""
        return self.obs.reshape(-1).copy()

    def observe(self) -> np.ndarray:
        """``(N, O)`` float32: every controlled vehicle's Kinematics observation, flattened row by row."""
        agent_types = self.env.observation_type.agents_observation_types
        return np.stack([kinematics_observation(obs_type).reshape(-1) for obs_type in agent_types])


def kinematics_observation(obs_type: KinematicObservation) -> np.ndarray:
    """highway-env's ``KinematicObservation.observe()``: the same values, computed without pandas.

    Rows: the observer, then the nearest vehicles (``road.close_objects_to``, sorted by lane distance),
    relative to the observer unless ``absolute``; the features selected, normalized to [-1, 1] over
    ``features_range`` and clipped as highway-env does, then zero rows up to ``vehicles_count``.
    Returns ``float32 (vehicles_count, len(features))``. Shuffled rows (``order="shuffled"``) draw from the
    environment's generator, so they are left to highway-env.
    """
    if obs_type.order != "sorted" or not obs_type.features_range or not obs_type.env.road:
        # highway-env computes and caches features_range on its first observation; let it.
        return np.asarray(obs_type.observe(), dtype=np.float32)
    observer = obs_type.observer_vehicle
    count = obs_type.vehicles_count
    rows = [observer.to_dict()]
    close = obs_type.env.road.close_objects_to(
        observer,
        obs_type.env.PERCEPTION_DISTANCE,
        count=count - 1,
        see_behind=obs_type.see_behind,
        sort=True,
        vehicles_only=not obs_type.include_obstacles,
    )
    if close:
        origin = observer if not obs_type.absolute else None
        intentions = obs_type.observe_intentions
        rows += [v.to_dict(origin, observe_intentions=intentions) for v in close[-count + 1 :]]
    values = np.array([[row[name] for name in obs_type.features] for row in rows], dtype=np.float64)
    if obs_type.normalize:
        for column, name in enumerate(obs_type.features):
            if name in obs_type.features_range:
                low, high = obs_type.features_range[name]
                values[:, column] = highway_utils.lmap(values[:, column], [low, high], [-1, 1])
                if obs_type.clip:
                    values[:, column] = np.clip(values[:, column], -1, 1)
    out = np.zeros((count, len(obs_type.features)), dtype=np.float64)
    out[: len(values)] = values
    return out.astype(np.float32)


def vehicle_reward(env: HighwayEnv, vehicle: Any) -> float:
    """highway-env's ``HighwayEnv._reward`` computed for ``vehicle`` instead of the first controlled vehicle.

    Terms (weights from ``env.config``): ``collision_reward * crashed + right_lane_reward * lane / (lanes - 1)
    + high_speed_reward * clip(lmap(forward speed, reward_speed_range, [0, 1]), 0, 1)``; with
    ``normalize_reward`` the sum is mapped from ``[collision_reward, high_speed_reward + right_lane_reward]``
    to ``[0, 1]``; the result is multiplied by ``on_road``.
    """
    config = env.config
    neighbours = env.road.network.all_side_lanes(vehicle.lane_index)
    lane = vehicle.target_lane_index[2] if isinstance(vehicle, ControlledVehicle) else vehicle.lane_index[2]
    forward_speed = vehicle.speed * np.cos(vehicle.heading)
    scaled_speed = highway_utils.lmap(forward_speed, config["reward_speed_range"], [0, 1])
    terms = {
        "collision_reward": float(vehicle.crashed),
        "right_lane_reward": lane / max(len(neighbours) - 1, 1),
        "high_speed_reward": float(np.clip(scaled_speed, 0, 1)),
    }
    reward = sum(config.get(name, 0) * value for name, value in terms.items())
    if config["normalize_reward"]:
        reward = highway_utils.lmap(
            reward,
            [config["collision_reward"], config["high_speed_reward"] + config["right_lane_reward"]],
            [0, 1],
        )
    return float(reward * float(vehicle.on_road))
