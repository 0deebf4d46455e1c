"""What a person reads: `dataset info`'s summary and return histogram, and the training/evaluation summary
with the data's return beside the policy's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marlkd.cli import main
from marlkd.cli.dataset import describe_behaviour, reference_returns, text_histogram
from marlkd.cli.train import format_results
from marlkd.data.format import load_dataset, write_dataset

BEHAVIOUR = {
    "name": "normal",
    "function": "marlkd.experts.make_dataset",
    "mechanism": "epsilon_mix",
    "epsilon": 0.6394,
    "target_normalized_score": 0.5,
    "calibration": {"episodes": 512, "seed": 7919, "search": [[0.5, 0.61], [0.75, 0.38], [0.625, 0.52]]},
    "expert": {"deterministic": False, "expert_return": 2.5, "random_return": 0.1, "ppo_total_steps": 500000},
}


@pytest.fixture
def normal_dataset(tmp_path: Path, tiny_dataset_arrays: tuple[dict[str, np.ndarray], dict[str, Any]]) -> Path:
    arrays, metadata = tiny_dataset_arrays
    return write_dataset(tmp_path / "normal.h5", arrays, {**metadata, "behavior_policy": BEHAVIOUR})


def test_info_summarizes_how_the_data_was_made(
    normal_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dataset", "info", str(normal_dataset)]) == 0
    out = capsys.readouterr().out
    assert (
        "the PPO expert (sampled, 500,000 PPO steps), each action replaced by a uniformly random one with "
        "probability 0.639 (searched for normalized score 0.5: 3 bisection steps of 512 episodes" in out
    )
    assert "references        expert 2.5, random 0.1" in out
    assert "search" not in out.replace("searched", "")  # no raw calibration trace
    assert "histogram" in out and not list(Path.cwd().glob("normal-returns.png"))
    assert main(["dataset", "info", "--json", str(normal_dataset)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["behavior_policy"]["calibration"]["search"][1] == [0.75, 0.38]
    assert info["reference_returns"] == {"expert": 2.5, "random": 0.1}


def test_info_draws_the_per_agent_histogram(
    normal_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "info", str(normal_dataset), "--plot"]) == 0
    png = tmp_path / "normal-returns.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"return histogram written to {png.name}" in capsys.readouterr().out
    chosen = tmp_path / "plots" / "h.png"
    assert main(["dataset", "info", str(normal_dataset), "--plot", str(chosen), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["histogram_png"] == str(chosen) and chosen.is_file()


def test_behaviour_lines_for_other_recipes() -> None:
    assert describe_behaviour({"mechanism": "uniform_random"}) == "uniformly random available actions"
    good = {"mechanism": "expert", "expert": {"deterministic": True}}
    assert describe_behaviour(good) == "the PPO expert (greedy)"
    assert describe_behaviour({"name": "synthetic"}) == "synthetic"
    assert reference_returns({"name": "synthetic"}) == {}
    assert reference_returns({"expert": {"expert_return": float("nan"), "random_return": 1}}) == {
        "random": 1.0
    }


def test_text_histogram() -> None:
    assert text_histogram(np.array([0.0, 0.0, 0.0, 1.0, 2.0, 2.0]), bins=3) == "0 █▃▆ 2"
    assert text_histogram(np.array([1.5, 1.5])) == "1.5 (all equal)"
    assert text_histogram(np.array([np.nan])) == "n/a"


def test_results_show_the_data_beside_the_policy(normal_dataset: Path) -> None:
    meta = load_dataset(normal_dataset).metadata
    data = {"mean": meta.mean_return, "best": meta.max_return, "quality": "normal", "episodes": 6}
    results = {
        "method": "ours",
        "env_id": "test-tiny",
        "return_mean": 1.3,
        "return_std": 0.2,
        "episodes": 8,
        "train_steps": 40,
        "train_time_s": 3.2,
        "precision": "fp32",
        "teacher/return_mean": 1.5,
    }
    text = format_results(results, {**data, "expert": 2.5, "random": 0.1})
    assert text.splitlines()[0] == "ours on test-tiny (40 updates, 3 s training, fp32)"
    assert "policy return   1.3 ± 0.2 over 8 episodes  (normalized 0.50)" in text
    assert "teacher return  1.5" in text
    assert (
        f"data return     mean {meta.mean_return:.4g}, best {meta.max_return:.4g} (normal, 6 episodes)"
        in text
    )
    assert "references      expert 2.5, random 0.1" in text
    assert "normalized" not in format_results(results, data)  # no references: no normalized score
    assert "data return" not in format_results(results, None)


def test_periodic_evaluation_also_draws_the_teachers_curve(tmp_path: Path) -> None:
    import marlkd
    from marlkd.algos.ours import Config as OursConfig
    from marlkd.config import EvalConfig, TrainConfig
    from marlkd.data.collect import collect_random_dataset
    from marlkd.run_config import RunConfig

    data = collect_random_dataset("grid-world", 12, tmp_path / "gw.h5", seed=3)
    config = RunConfig(
        method="ours",
        data=str(data),
        out=str(tmp_path / "run"),
        algo=OursConfig(context=4, width=16, layers=1, heads=2, head_hidden=16, teacher_steps=2),
        train=TrainConfig(steps=2, batch_size=8, warmup_steps=1, log_every=1, precision="fp32"),
        eval=EvalConfig(episodes=2, every=2),
    )
    results = marlkd.train(config, progress=False)
    meta = load_dataset(data).metadata
    assert results["data/mean_return"] == pytest.approx(meta.mean_return)
    assert "data/expert_return" not in results  # random data records no expert
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    teacher_steps = [int(r.split(",")[0]) for r in rows if ",teacher/eval/return_mean," in r]
    assert teacher_steps == [2]  # evaluated beside the students while the run trains
