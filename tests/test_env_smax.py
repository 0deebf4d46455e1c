"""SMAX (jaxmarl) scenarios: sizes, PettingZoo API, masks, frozen finished copies, batched/single agreement.

Compiling a scenario's jitted reset and step takes several seconds per batch size (kernels are cached per
configuration and batch size), so the default tests use 2s3z with one copy only (the single form is a
batched form with one copy); the test with several copies compiles once more and is marked slow.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jaxmarl", reason="jaxmarl is not installed (pip install 'marlkd[smax]')")

from pettingzoo.test import parallel_api_test  # noqa: E402

from marlkd.data.collect import collect_episodes, random_act_fn  # noqa: E402
from marlkd.data.format import load_dataset, write_dataset  # noqa: E402
from marlkd.data.windows import dead_agents  # noqa: E402
from marlkd.envs import env_spec, make, make_batched  # noqa: E402
from marlkd.envs.smax import SMAX_SCENARIOS, BatchedSMAX, InvalidActionError, SMAXParallelEnv  # noqa: E402
from marlkd.errors import ConfigError, MarlkdError  # noqa: E402

B = 4
SHORT = {"max_steps": 5}  # the default tests' configuration: short episodes, one compiled kernel


@pytest.fixture(scope="module")
def single() -> SMAXParallelEnv:
    return make("smax-2s3z", **SHORT)


@pytest.fixture(scope="module")
def batched() -> BatchedSMAX:
    return make_batched("smax-2s3z", B)


@pytest.fixture(scope="module")
def batched_one() -> BatchedSMAX:
    return make_batched("smax-2s3z", 1, **SHORT)  # shares the single form's compiled kernel


def _random_valid(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(mask, rng.random(mask.shape), -1.0).argmax(axis=-1)


@pytest.mark.parametrize(
    ("env_id", "allies", "enemies"),
    [("smax-2s3z", 5, 5), ("smax-3s5z", 8, 8), ("smax-8m-vs-9m", 8, 9), ("smax-3s5z-vs-3s6z", 8, 9)],
)
def test_spec_matches_smax_sizes(env_id: str, allies: int, enemies: int) -> None:
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

    spec = env_spec(env_id)
    smax = HeuristicEnemySMAX(scenario=map_name_to_scenario(SMAX_SCENARIOS[env_id]))  # compiles nothing
    assert (spec.n_agents, smax.num_allies, smax.num_enemies) == (allies, allies, enemies)
    assert spec.obs_dim == smax.observation_spaces["ally_0"].shape[0]
    assert spec.n_actions == smax.action_spaces["ally_0"].n == 5 + enemies
    assert spec.state_dim == smax.state_size
    assert spec.has_action_mask and spec.kwargs["scenario"] == SMAX_SCENARIOS[env_id]
    assert env_spec(env_id, **spec.kwargs) == spec


def test_8m_vs_9m_is_all_marines() -> None:
    from jaxmarl.environments.smax import map_name_to_scenario

    scenario = map_name_to_scenario("8m_vs_9m")
    assert (scenario.num_allies, scenario.num_enemies) == (8, 9)
    assert np.asarray(scenario.unit_types).tolist() == [0] * 17


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="scenario"):
        env_spec("smax-2s3z", scenario="3s5z")
    with pytest.raises(ConfigError, match="max_steps"):
        env_spec("smax-2s3z", max_steps=0)


def test_parallel_api_masks_and_render(single: SMAXParallelEnv) -> None:
    parallel_api_test(single, num_cycles=30)
    obs, infos = single.reset(seed=0)
    assert set(obs) == set(single.possible_agents) and len(obs) == 5
    for agent in single.agents:
        mask = infos[agent]["action_mask"]
        assert mask.shape == (10,) and mask.dtype == bool and mask[4]  # stop is always available
        assert single.observation_space(agent).contains(obs[agent])
    assert single.state().shape == (120,)
    frame = single.render()
    assert frame is not None and frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 0


@pytest.mark.slow
def test_batched_matches_single_with_valid_actions(batched: BatchedSMAX) -> None:
    rng = np.random.default_rng(0)
    obs = batched.reset(seed=20)
    single = make("smax-2s3z")
    single_obs, infos = single.reset(seed=22)  # copy 2 uses the key of seed 20 + 2
    np.testing.assert_array_equal(obs[2], np.stack([single_obs[a] for a in single.possible_agents]))
    assert obs.shape == (B, 5, 127) and batched.state().shape == (B, 120)
    returns = np.zeros((B, 5))
    saw_dead_ally = False
    for _ in range(batched.spec.max_steps):
        mask = batched.action_mask()
        assert mask.shape == (B, 5, 10) and mask[..., 4].all()
        for b in np.flatnonzero(~batched.done()):  # the rule the factored teacher reads dead units by
            alive = batched.unit_state(int(b))["alive"][:5]
            np.testing.assert_array_equal(dead_agents(obs[b], mask[b]), ~alive)
        actions = _random_valid(mask, rng)
        assert np.take_along_axis(mask, actions[..., None], axis=2).all()  # never an unavailable action
        np.testing.assert_array_equal(
            mask[2], np.stack([infos[a]["action_mask"] for a in single.possible_agents])
        )
        was_done = batched.done()
        before = obs.copy()
        obs, rewards, terminated, truncated = batched.step(actions)
        if single.agents:
            out = single.step({a: int(actions[2, i]) for i, a in enumerate(single.possible_agents)})
            infos = out[4]
            np.testing.assert_array_equal(np.stack([out[0][a] for a in single.possible_agents]), obs[2])
            assert out[1]["agent_0"] == pytest.approx(float(rewards[2, 0]))
        assert (rewards == rewards[:, :1]).all()  # the team reward, for every ally
        assert (terminated == terminated[:, :1]).all() and not (terminated & truncated).any()
        np.testing.assert_array_equal(obs[was_done], before[was_done])  # finished copies are frozen
        assert (rewards[was_done] == 0).all()
        np.testing.assert_array_equal(batched.done(), (terminated | truncated).all(axis=1))
        dead = (batched.action_mask().sum(axis=2) == 1) & ~batched.done()[:, None]
        saw_dead_ally |= bool(dead.any())
        returns += rewards
        if batched.done().all():
            break
    assert batched.done().all()
    assert saw_dead_ally  # random play loses units, and dead allies only have "stop" and observe zeros
    assert (returns >= 0).all()


def test_invalid_actions_raise(batched_one: BatchedSMAX) -> None:
    batched_one.reset(seed=1)
    mask = batched_one.action_mask()
    actions = np.full((1, 5), 4)
    unavailable = np.flatnonzero(~mask[0, 0])
    assert unavailable.size  # at the start the enemies are out of range: attacks are unavailable
    actions[0, 0] = unavailable[0]
    with pytest.raises(InvalidActionError, match="copy 0, agent 0 is not available"):
        batched_one.step(actions)
    with pytest.raises(ValueError):
        batched_one.step(np.full((1, 5), 99))
    with pytest.raises(ValueError, match="shape"):
        batched_one.step(np.full((2, 5), 4))


def test_episode_semantics_with_one_copy(batched_one: BatchedSMAX) -> None:
    rng = np.random.default_rng(3)
    obs = batched_one.reset(seed=3)
    for _ in range(batched_one.spec.max_steps):
        actions = _random_valid(batched_one.action_mask(), rng)
        obs, rewards, terminated, truncated = batched_one.step(actions)
        assert (rewards == rewards[:, :1]).all() and not (terminated & truncated).any()
        if batched_one.done()[0]:
            break
    assert batched_one.done()[0] and (terminated | truncated).all()
    frozen = obs.copy(), batched_one.state().copy(), batched_one.action_mask().copy()
    obs, rewards, terminated_after, _ = batched_one.step(np.zeros((1, 5), dtype=np.int64))  # ignored
    np.testing.assert_array_equal(obs, frozen[0])
    np.testing.assert_array_equal(batched_one.state(), frozen[1])
    np.testing.assert_array_equal(batched_one.action_mask(), frozen[2])
    assert (rewards == 0).all() and (terminated_after == terminated).all()


def test_time_limit_truncates_after_max_steps(batched_one: BatchedSMAX) -> None:
    batched_one.reset(seed=5)
    steps = 0
    while not batched_one.done()[0]:
        _, _, terminated, truncated = batched_one.step(np.full((1, 5), 4))  # everyone stops
        steps += 1
    assert steps == SHORT["max_steps"] and truncated.all() and not terminated.any()


def test_dataset_round_trip_with_avail_actions(tmp_path: Path) -> None:
    spec = env_spec("smax-2s3z", **SHORT)
    arrays = collect_episodes("smax-2s3z", SHORT, random_act_fn, episodes=2, seed=0, num_envs=1)
    assert arrays["avail_actions"].shape == (2, spec.max_steps, 5, 10)
    metadata = {
        "env_id": "smax-2s3z",
        "env_kwargs": spec.kwargs,
        "behavior_policy": {"name": "random"},
        "quality": "random",
        "seed": 0,
    }
    dataset = load_dataset(write_dataset(tmp_path / "smax.h5", arrays, metadata))
    for name in ("obs", "actions", "rewards", "mask", "state", "avail_actions"):
        np.testing.assert_array_equal(getattr(dataset, name), arrays[name])
    assert dataset.n_actions == 10 and dataset.state_dim == 120
    taken = np.take_along_axis(dataset.avail_actions, dataset.actions[..., None], axis=-1)[..., 0]
    assert taken[dataset.mask].all()


def test_missing_package_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "jaxmarl" or m.startswith("jaxmarl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "jaxmarl", None)
    import marlkd.envs.smax as module

    spec = importlib.util.spec_from_file_location("marlkd_smax_without_package", module.__file__)
    assert spec is not None and spec.loader is not None
    with pytest.raises(MarlkdError, match=r"marlkd\[smax\]"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
