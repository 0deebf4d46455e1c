"""Checkpoint tiers (medium, early, replay, mixed): which policies act, per episode and per agent, what the
file records, and bit-for-bit remaking."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import tiny_envs
from marlkd import experts, tiers
from marlkd.data import collect_episodes, load_dataset
from marlkd.errors import MarlkdError

ENV = tiny_envs.ENV_ID
QUICK_RECIPE = {"total_steps": 3072, "num_envs": 64, "lr": 3e-3, "critic_lr": 3e-3, "hidden": 32}


@pytest.fixture(scope="module")
def expert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("expert")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(experts.EXPERT_RECIPES, ENV, QUICK_RECIPE)
        experts.train_expert(ENV, directory, progress=False, checkpoints=4, reference_episodes=200)
    return directory


def _constant(action: int):
    return lambda obs, mask, rng: np.full(obs.shape[:2], action, dtype=np.int64)


def test_episode_policies_fix_each_agents_policy_for_its_episode() -> None:
    draw = lambda start, b, n, rng: rng.integers(0, 3, size=(b, n))  # noqa: E731
    act_fn = tiers.EpisodePolicies([_constant(0), _constant(1), _constant(2)], draw, n_agents=2)
    arrays = collect_episodes(ENV, None, act_fn, episodes=40, seed=0, num_envs=16, on_reset=act_fn.on_reset)
    actions = arrays["actions"]  # (E, T, N): pool member k always plays action k
    assert (actions == actions[:, :1]).all()  # one policy per (episode, agent) for the whole episode
    chosen = actions[:, 0]  # (E, N)
    assert set(np.unique(chosen)) == {0, 1, 2}
    assert (chosen[:, 0] != chosen[:, 1]).any()  # agents of one episode draw independently
    with pytest.raises(RuntimeError, match="on_reset"):
        tiers.EpisodePolicies([_constant(0)], draw, 2)(
            np.zeros((4, 2, 4), np.float32), np.ones((4, 2, 3), bool), None
        )


def test_medium_and_early_take_the_checkpoint_closest_to_their_target(expert: Path, tmp_path: Path) -> None:
    info = experts.ExpertInfo.load(expert)
    for quality, target in tiers.CHECKPOINT_TARGETS.items():
        path = experts.make_dataset(
            ENV, quality, 200, tmp_path / f"{quality}.h5", expert, seed=1, calibration_episodes=256
        )
        meta = load_dataset(path).metadata
        recipe = meta.behavior_policy
        scores = [entry["normalized_score"] for entry in recipe["checkpoints"]]
        assert len(scores) == 6 and recipe["mechanism"] == "checkpoint"
        assert recipe["target_normalized_score"] == target
        picked = recipe["checkpoint"]["normalized_score"]
        assert abs(picked - target) == min(abs(s - target) for s in scores)
        for entry in recipe["checkpoints"]:
            assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
        assert abs(meta.normalized_score - picked) < 0.15  # the data scores as its checkpoint did
        assert recipe["calibration"]["episodes"] == 256
        assert recipe["expert"]["checkpoint_sha256"] == info.checkpoint_sha256


def test_replay_takes_equal_shares_in_training_order(expert: Path) -> None:
    act_fn, record = tiers.checkpoint_tier(
        "replay", expert, _constant(0), n_agents=2, episodes=12, score=None, sha256=lambda p: "x"
    )
    assert record["mechanism"] == "checkpoint_replay" and len(record["checkpoints"]) == 6
    act_fn.on_reset(0, 8, np.random.default_rng(0))
    first = act_fn.assignment[:, 0].tolist()
    act_fn.on_reset(8, 4, np.random.default_rng(0))
    assert first + act_fn.assignment[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert (act_fn.assignment == act_fn.assignment[:, :1]).all()  # the whole team acts from one checkpoint


def test_mixed_is_remade_bit_for_bit_and_mixes_skills(expert: Path, tmp_path: Path) -> None:
    first = experts.make_dataset(
        ENV, "mixed", 300, tmp_path / "a.h5", expert, seed=3, calibration_episodes=128
    )
    again = experts.make_dataset(
        ENV, "mixed", 300, tmp_path / "b.h5", expert, seed=3, calibration_episodes=128
    )
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    data = load_dataset(first)
    recipe = data.metadata.behavior_policy
    assert (
        recipe["mechanism"] == "mixed_skill"
        and recipe["pool"][0] == "expert"
        and recipe["pool"][-1] == "random"
    )
    per_agent = data.rewards.sum(axis=1)  # (E, N): agents of one episode differ in skill
    assert np.abs(per_agent[:, 0] - per_agent[:, 1]).mean() > 1.0
    info = experts.ExpertInfo.load(expert)
    assert 0.1 < data.metadata.normalized_score < 0.9 and info.expert_return > 7.0


def test_experts_keep_geometrically_spaced_early_checkpoints(expert: Path) -> None:
    # 3,072 steps of 64 copies x 8 steps: 6 iterations, all kept at growth 1.2 (1, 2, 3, 4, 5, 6)
    kept = [int(p.stem.split("_")[1]) for p in tiers.kept_checkpoints(expert)]
    assert kept == [512 * i for i in range(1, 7)]
    config = experts.expert_config("grid-world")
    assert config.checkpoint_growth == experts.CHECKPOINT_GROWTH


def test_checkpoint_tiers_need_kept_checkpoints(expert: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(expert, tmp_path / "bare")
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(MarlkdError, match="checkpoints"):
        experts.make_dataset(ENV, "medium", 10, tmp_path / "x.h5", copy)


def test_dataset_paths_of_calibrated_tiers_carry_their_calibration(tmp_path: Path) -> None:
    tagged = experts.dataset_path(tmp_path, ENV, "mixed", 100, calibration_episodes=64)
    assert tagged.name.endswith("-c64.h5")
    assert experts.dataset_path(tmp_path, ENV, "replay", 100, calibration_episodes=64).name.endswith(
        "seed0.h5"
    )
