"""Highway (highway-env with several controlled vehicles): API, per-agent rewards, batched form, datasets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highway_env", reason="highway-env is not installed")

from pettingzoo.test import parallel_api_test  # noqa: E402

from marlkd.data.collect import collect_episodes, random_act_fn  # noqa: E402
from marlkd.data.format import load_dataset, write_dataset  # noqa: E402
from marlkd.envs import env_spec, make, make_batched  # noqa: E402
from marlkd.envs.highway import vehicle_reward  # noqa: E402
from marlkd.errors import ConfigError, MarlkdError  # noqa: E402

SHORT = {"duration": 6}  # 6 decisions per episode keeps the tests fast


def test_spec_records_variant_and_package_defaults() -> None:
    fast, slow = env_spec("highway"), env_spec("highway-slow")
    assert (fast.n_agents, fast.obs_dim, fast.n_actions, fast.state_dim) == (3, 25, 5, 75)
    assert fast.kwargs["variant"] == "highway-fast-v0" and slow.kwargs["variant"] == "highway-v0"
    assert (fast.kwargs["lanes_count"], fast.kwargs["vehicles_count"], fast.max_steps) == (3, 20, 30)
    assert (slow.kwargs["lanes_count"], slow.kwargs["vehicles_count"], slow.max_steps) == (4, 50, 40)
    assert not fast.has_action_mask
    custom = env_spec("highway", n_agents=2, observed_vehicles=4, duration=10, policy_frequency=5)
    assert (custom.n_agents, custom.obs_dim, custom.max_steps) == (2, 20, 50)
    with pytest.raises(ConfigError, match="multiple of policy_frequency"):
        env_spec("highway", policy_frequency=2)
    assert env_spec("highway", **fast.kwargs) == fast  # recorded kwargs remake the same environment
    with pytest.raises(ConfigError, match="variant"):
        env_spec("highway", variant="highway-v0")


def test_parallel_api_and_render() -> None:
    env = make("highway", **SHORT)
    parallel_api_test(env, num_cycles=20)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"agent_0", "agent_1", "agent_2"}
    assert all(o.shape == (25,) and o.dtype == np.float32 for o in obs.values())
    assert env.state().shape == (75,)
    frame = env.render()
    assert frame is not None and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # offscreen rendering draws something (the dummy SDL driver gives black frames)
    env.close()


def test_vehicle_reward_equals_highway_env_for_first_vehicle() -> None:
    env = make("highway", **SHORT)
    env.reset(seed=1)
    highway = env.unwrapped_highway
    for _ in range(3):
        env.step({agent: 3 for agent in env.agents})
        if highway.controlled_vehicles[0].crashed:
            break
        assert vehicle_reward(highway, highway.controlled_vehicles[0]) == pytest.approx(highway._reward(3))


@pytest.mark.parametrize("env_id", ["highway", "highway-slow"])
def test_observations_equal_highway_env_kinematics(env_id: str) -> None:
    env = make(env_id, duration=4)
    env.reset(seed=4)
    agent_types = env.unwrapped_highway.observation_type.agents_observation_types
    rng = np.random.default_rng(4)
    while env.agents:
        obs, *_ = env.step({agent: int(rng.integers(0, 5)) for agent in env.agents})
        for i, agent in enumerate(env.possible_agents):  # the pandas implementation, value for value
            if agent in obs:
                np.testing.assert_array_equal(obs[agent], agent_types[i].observe().reshape(-1))


def test_hand_set_speed_lane_and_crash_rewards() -> None:
    env = make("highway", **SHORT)
    env.reset(seed=2)
    highway = env.unwrapped_highway
    vehicle = highway.controlled_vehicles[1]
    lanes = highway.config["lanes_count"]
    rightmost, leftmost = ("0", "1", lanes - 1), ("0", "1", 0)
    vehicle.heading = 0.0
    vehicle.lane_index = vehicle.target_lane_index = rightmost
    vehicle.speed = 30.0  # top of reward_speed_range: collision 0, right lane 0.1, speed 0.4 -> 1 normalized
    assert vehicle_reward(highway, vehicle) == pytest.approx(1.0)
    vehicle.speed = 25.0  # half the speed term: (0.1 + 0.2 + 1) / 1.5
    assert vehicle_reward(highway, vehicle) == pytest.approx(1.3 / 1.5)
    vehicle.lane_index = vehicle.target_lane_index = leftmost
    vehicle.speed = 20.0  # no lane or speed term: (0 + 1) / 1.5
    assert vehicle_reward(highway, vehicle) == pytest.approx(1.0 / 1.5)
    vehicle.crashed = True  # collision -1 maps to 0 normalized
    assert vehicle_reward(highway, vehicle) == pytest.approx(0.0)


def test_a_crash_ends_only_that_agent() -> None:
    env = make("highway", **SHORT)
    env.reset(seed=3)
    highway = env.unwrapped_highway
    highway.controlled_vehicles[0].crashed = True
    obs, rewards, terminated, truncated, infos = env.step({agent: 1 for agent in env.agents})
    assert terminated["agent_0"] and infos["agent_0"]["crashed"]
    assert not terminated["agent_1"] and not terminated["agent_2"]
    assert env.agents == ["agent_1", "agent_2"]
    frozen = obs["agent_0"]
    core = env._core
    for _ in range(2):
        out = core.step(np.array([0, 1, 1]))  # agent 0's action is ignored, its observation frozen
        np.testing.assert_array_equal(out[0][0], frozen)
        assert out[1][0] == 0.0 and out[2][0]


def test_batched_matches_single_and_freezes_finished_copies() -> None:
    rng = np.random.default_rng(0)
    with make_batched("highway", 2, num_workers=0, **SHORT) as batched:
        obs = batched.reset(seed=10)
        assert obs.shape == (2, 3, 25) and obs.dtype == np.float32
        single = make("highway", **SHORT)
        single_obs, _ = single.reset(seed=11)  # copy 1 is seeded with 10 + 1
        np.testing.assert_array_equal(obs[1], np.stack([single_obs[a] for a in single.possible_agents]))
        agent_done = np.zeros((2, 3), dtype=bool)
        for _ in range(SHORT["duration"] + 2):
            actions = rng.integers(0, 5, size=(2, 3))
            was_done = batched.done()
            before = obs.copy()
            obs, rewards, terminated, truncated = batched.step(actions)
            assert rewards.shape == terminated.shape == truncated.shape == (2, 3)
            assert batched.state().shape == (2, 75) and batched.action_mask().all()
            assert not (terminated & truncated).any()
            assert (rewards[agent_done] == 0).all()
            np.testing.assert_array_equal(obs[agent_done], before[agent_done])  # finished agents frozen
            assert (batched.done() >= was_done).all()
            if single.agents:
                live = [(i, a) for i, a in enumerate(single.possible_agents) if a in single.agents]
                out = single.step({a: int(actions[1, i]) for i, a in live})
                for i, agent in enumerate(single.possible_agents):
                    if agent in out[0]:
                        np.testing.assert_array_equal(out[0][agent], obs[1, i])
                        assert out[1][agent] == pytest.approx(float(rewards[1, i]))
            agent_done = terminated | truncated
        assert batched.done().all()
        batched.step(np.full((2, 3), 5))  # every agent is done: actions are ignored, even invalid ones
        batched.reset(seed=0)
        with pytest.raises(ValueError, match="out of"):
            batched.step(np.full((2, 3), 5))


def test_worker_processes_agree_with_in_process() -> None:
    actions = np.random.default_rng(1).integers(0, 5, size=(4, 3, 3))
    results = []
    for workers in (0, 2):
        with make_batched("highway", 3, num_workers=workers, **SHORT) as batched:
            steps = [batched.reset(seed=5)]
            steps += [batched.step(a)[0] for a in actions]
            results.append(np.stack(steps))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="looks processes up in /proc")
def test_workers_exit_when_the_parent_is_killed() -> None:
    script = (
        "import os, signal\n"
        "from marlkd.envs import make_batched\n"
        "env = make_batched('highway', 2, num_workers=2, duration=3)\n"
        "env.reset(seed=0)\n"
        "print(' '.join(str(p.pid) for p in env._procs), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_dataset_round_trip(tmp_path: Path) -> None:
    spec = env_spec("highway", **SHORT)
    arrays = collect_episodes("highway", spec.kwargs, random_act_fn, episodes=3, seed=0, num_envs=3)
    metadata = {
        "env_id": "highway",
        "env_kwargs": spec.kwargs,
        "n_actions": spec.n_actions,
        "behavior_policy": {"name": "random"},
        "quality": "random",
        "seed": 0,
    }
    dataset = load_dataset(write_dataset(tmp_path / "highway.h5", arrays, metadata))
    assert dataset.obs.shape == (3, spec.max_steps, 3, 25) and dataset.state.shape == (3, spec.max_steps, 75)
    np.testing.assert_array_equal(dataset.rewards, arrays["rewards"])
    assert dataset.metadata.env_kwargs["variant"] == "highway-fast-v0"
    assert ((dataset.rewards >= 0) & (dataset.rewards <= 1)).all()


def test_missing_package_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "highway_env", None)
    import marlkd.envs.highway as module

    spec = importlib.util.spec_from_file_location("marlkd_highway_without_package", module.__file__)
    assert spec is not None and spec.loader is not None
    with pytest.raises(MarlkdError, match="highway-env"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
