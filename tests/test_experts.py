"""Experts and quality tiers: recipes, references, tier metadata, bit-for-bit remaking, reuse, the CLI."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import pytest

import tiny_envs
from marlkd import experts
from marlkd.cli import main
from marlkd.data import load_dataset
from marlkd.errors import ConfigError, DatasetError, MarlkdError

ENV = tiny_envs.ENV_ID
QUICK_RECIPE = {"total_steps": 3072, "num_envs": 64, "lr": 3e-3, "critic_lr": 3e-3, "hidden": 32}


@pytest.fixture
def quick_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test environment's expert recipe train in about a second."""
    monkeypatch.setitem(experts.EXPERT_RECIPES, ENV, QUICK_RECIPE)


@pytest.fixture(scope="module")
def expert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("expert")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(experts.EXPERT_RECIPES, ENV, QUICK_RECIPE)
        experts.train_expert(ENV, directory, progress=False, checkpoints=3, checkpoint_growth=0)
    return directory


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_expert_recipes() -> None:
    assert experts.expert_config("grid-world").mode == "centralized"
    assert experts.expert_config("highway").mode == "centralized"
    assert experts.expert_config("smax-2s3z").mode == "mappo"
    config = experts.expert_config("fill-in", steps=1000, seed=3, mode="mappo", checkpoints=4)
    assert (config.total_steps, config.seed, config.mode, config.checkpoint_every) == (1000, 3, "mappo", 250)
    with pytest.raises(ConfigError, match="ppo.mode"):
        experts.expert_config("fill-in", mode="qmix")


def test_train_expert_measures_its_references(expert: Path) -> None:
    info = experts.ExpertInfo.load(expert)
    assert info.env_id == ENV and info.env_kwargs == tiny_envs.spec().kwargs
    assert abs(info.random_return - 8 / 3) < 0.2
    assert info.expert_return > 7.0
    assert info.expert_return == max(info.expert_return_sampled, info.expert_return_greedy)
    assert info.checkpoint_sha256 == _sha256(expert / info.checkpoint)
    assert len(list((expert / "checkpoints").glob("step_*.pt"))) == 3
    assert (expert / "learning_curve.png").is_file()
    assert math.isclose(info.normalized(info.expert_return), 1.0)


def test_quality_tiers_record_how_they_were_made(expert: Path, tmp_path: Path) -> None:
    info = experts.ExpertInfo.load(expert)
    scores = {}
    for quality in experts.QUALITIES:
        data = load_dataset(
            experts.make_dataset(ENV, quality, 300, tmp_path / f"{quality}.h5", expert, seed=2)
        )
        meta = data.metadata
        assert (meta.quality, meta.n_episodes, meta.seed, meta.env_id) == (quality, 300, 2, ENV)
        recipe = meta.behavior_policy
        assert recipe["arguments"]["quality"] == quality and recipe["arguments"]["seed"] == 2
        assert recipe["expert"]["checkpoint_sha256"] == info.checkpoint_sha256
        assert Path(recipe["expert"]["checkpoint"]) == (expert / info.checkpoint).resolve()
        assert math.isclose(meta.normalized_score, info.normalized(meta.mean_return), abs_tol=1e-5)
        scores[quality] = meta.normalized_score
        if quality in experts.TIER_TARGETS:
            assert recipe["mechanism"] == "epsilon_mix" and 0.0 < recipe["epsilon"] < 1.0
            assert recipe["target_normalized_score"] == experts.TIER_TARGETS[quality]
            assert len(recipe["calibration"]["search"]) == experts.CALIBRATION_STEPS
    assert recipe["mechanism"] == "uniform_random"
    assert scores["good"] > 0.9 and abs(scores["random"]) < 0.1
    assert abs(scores["normal"] - 0.5) < 0.1 and abs(scores["poor"] - 0.25) < 0.1


def test_make_dataset_is_reproducible_bit_for_bit(expert: Path, tmp_path: Path) -> None:
    first = experts.make_dataset(ENV, "poor", 100, tmp_path / "a.h5", expert, seed=4)
    again = experts.make_dataset(ENV, "poor", 100, tmp_path / "b.h5", expert, seed=4)
    other = experts.make_dataset(ENV, "poor", 100, tmp_path / "c.h5", expert, seed=5)
    assert _sha256(first) == _sha256(again)
    assert load_dataset(first).metadata.checksum != load_dataset(other).metadata.checksum


def test_tiers_other_than_random_need_an_expert(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expert_dir"):
        experts.make_dataset(ENV, "normal", 10, tmp_path / "x.h5")
    with pytest.raises(ConfigError, match="quality"):
        experts.make_dataset(ENV, "excellent", 10, tmp_path / "x.h5")
    meta = load_dataset(experts.make_dataset(ENV, "random", 10, tmp_path / "r.h5")).metadata
    assert math.isnan(meta.normalized_score) and meta.behavior_policy["mechanism"] == "uniform_random"


def test_load_expert_checks_the_checkpoint(expert: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(expert, tmp_path / "copy")
    assert experts.load_expert(copy).deterministic == experts.ExpertInfo.load(copy).deterministic
    with open(copy / "checkpoint.pt", "ab") as f:
        f.write(b"changed")
    with pytest.raises(MarlkdError, match="SHA-256"):
        experts.load_expert(copy)
    with pytest.raises(MarlkdError, match="not a trained expert"):
        experts.load_expert(tmp_path)


def test_ensure_dataset_makes_once_and_reuses(expert: Path, tmp_path: Path) -> None:
    shutil.copytree(expert, experts.default_expert_dir(ENV, tmp_path))  # ensure_expert reuses it
    path = experts.ensure_dataset(ENV, "normal", 50, tmp_path, seed=1, progress=False)
    assert path == tmp_path / f"{ENV}-normal-50ep-seed1.h5"
    stamp = path.stat().st_mtime_ns
    assert experts.ensure_dataset(ENV, "normal", 50, tmp_path, seed=1, progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    assert experts.dataset_path(tmp_path, ENV, "good", 1000) == tmp_path / f"{ENV}-good.h5"
    assert (
        experts.dataset_path(tmp_path, ENV, "good", 1000, env_kwargs={"max_steps": 8}).name
        == f"{ENV}-good.h5"
    )
    assert (
        experts.dataset_path(tmp_path, ENV, "good", 1000, env_kwargs={"max_steps": 9}).name
        != f"{ENV}-good.h5"
    )
    shutil.copy(path, experts.dataset_path(tmp_path, ENV, "poor", 50, seed=1))
    with pytest.raises(DatasetError, match="expected"):
        experts.ensure_dataset(ENV, "poor", 50, tmp_path, seed=1, progress=False)


def test_cli_expert_train_and_collect(
    quick_recipe: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["expert", "train", ENV, "--out", str(tmp_path / "exp"), "--steps", "1024", "--seed", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "expert" in out and "random" in out
    assert experts.ExpertInfo.load(tmp_path / "exp").ppo["seed"] == 1

    data = tmp_path / "sets" / "poor.h5"
    assert main(["collect", ENV, "--quality", "poor", "--episodes", "40", "--out", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"training {ENV}'s expert into {tmp_path / 'sets' / 'experts' / ENV}" in out
    assert load_dataset(data).metadata.quality == "poor"
    again = tmp_path / "sets" / "good.h5"
    assert main(["collect", ENV, "--quality", "good", "--episodes", "40", "--out", str(again)]) == 0
    assert "using the expert in" in capsys.readouterr().out

    given = tmp_path / "given.h5"
    args = ["collect", ENV, "--quality", "normal", "--episodes", "40", "--out", str(given)]
    assert main([*args, "--expert", str(tmp_path / "exp")]) == 0
    assert (
        load_dataset(given).metadata.behavior_policy["expert"]["checkpoint"].startswith(str(tmp_path / "exp"))
    )


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["fill-in", "equal-space", "grid-world"])
def test_native_experts_beat_random(env_id: str, tmp_path: Path) -> None:
    info = experts.train_expert(env_id, tmp_path, progress=False)
    assert info.expert_return - info.random_return > 1.0, info
