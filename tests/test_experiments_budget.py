"""Expert budgets of sweeps: the ``[expert]`` tables, their validation, what they change (dataset keys, run
ids, expert directories, dataset files) and what they must not (the ids of specs that set none)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from marlkd import experts
from marlkd.data import load_dataset
from marlkd.errors import ConfigError
from marlkd.experiments import builtin_spec_names, expand, load_spec, parse_spec
from marlkd.experiments.runner import make_dataset
from marlkd.experiments.spec import DatasetKey, RunSpec, expert_budget
from marlkd.names import PAPER_ABLATIONS

BASE = """
name = "budget"

[grid]
envs = ["grid-world", "fill-in", "highway"]
methods = ["idt"]
seeds = 1
steps = [10]
eval_episodes = [2]
dataset_episodes = [20]

[quick]
steps = [5]
"""

BUDGET = """
[expert]
reference_episodes = 500

[per_env.highway.expert]
steps_scale = 0.5

[quick.expert]
steps_scale = 0.1
calibration_episodes = 64

[quick.per_env.grid-world.expert]
steps_scale = 1
"""

# Digests of the run ids of every built-in spec's full variant, as they were before expert budgets existed
# (hundreds of finished runs under runs/experiments live under these ids), and one id in the clear. The
# specs with baselines changed theirs with the baselines' tuned settings (docs/baselines.md, "Tuning"):
# every baseline run is trained again, the decision-transformer runs keep their ids.
PINNED_FULL_IDS = {
    "convergence": "cd7758a5b343ffb0",
    "coordination": "c06e7462f27e2670",  # added with grid-world-coop
    "data-efficiency": "1e7288a790755eb1",
    "finetune": "c993a867bf1228b8",
    "method": "66cb1e0f39ea2179",
    "precision": "ac6ea1cf2585ac24",
    "table1": "6220a451546bfa14",
    "table2": "0ef5ccaca6e846d5",
    "table3": "dca7bc150877c608",  # head_hidden = 64 since shared-mapping needs it
    "tiers": "1cd55c18ac9935f0",
}


def _spec(text: str) -> str:
    """BASE with ``text`` added: tables after it, top-level keys before it."""
    text = text.lstrip()
    return BASE + text if text.startswith("[") else text + BASE


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def test_default_budget_leaves_the_run_ids_unchanged() -> None:
    assert set(PINNED_FULL_IDS) == set(builtin_spec_names())
    for name, digest in PINNED_FULL_IDS.items():
        runs = expand(load_spec(name))
        assert all(not run.dataset.expert for run in runs), name
        # table3's remedy rows, its IDT reference row and Grid-World's normal and poor columns are new runs;
        # the paper's seven variants on the paper's data keep their ids
        if name == "table3":
            runs = [
                r
                for r in runs
                if r.method == "ours"
                and r.quality in ("good", "random")
                and r.config["algo"]["ablation"] in PAPER_ABLATIONS
            ]
        assert _digest([run.run_id for run in runs]) == digest, name
    table1 = expand(load_spec("table1"))
    assert table1[0].run_id == "fill-in/bc/random/s0-d9d31f96"
    assert table1[0].dataset.key() == (
        '{"env":"fill-in","env_kwargs":{},"episodes":1000,"quality":"random","seed":0}'
    )
    assert "expert" not in table1[0].to_dict()["dataset"]
    assert RunSpec.from_dict(json.loads(json.dumps(table1[0].to_dict()))) == table1[0]
    # The quick variants' native environments keep the default budget, and their ids too.
    assert expand(load_spec("table1"), quick=True)[0].run_id == "fill-in/bc/random/s0-4971d2e8"


def test_budget_tables_merge_per_env_and_quick() -> None:
    spec = parse_spec(_spec(BUDGET))
    assert spec.expert == {"reference_episodes": 500}
    assert spec.per_env["highway"] == {"expert": {"steps_scale": 0.5}}
    assert spec.quick.expert == {"steps_scale": 0.1, "calibration_episodes": 64}
    assert spec.quick.per_env == {"grid-world": {"expert": {"steps_scale": 1.0}}}
    assert expert_budget(spec, "fill-in") == {"reference_episodes": 500}
    assert expert_budget(spec, "highway") == {"reference_episodes": 500, "steps_scale": 0.5}
    assert expert_budget(spec, "highway", quick=True) == {
        "reference_episodes": 500,
        "steps_scale": 0.1,
        "calibration_episodes": 64,
    }
    assert expert_budget(spec, "grid-world", quick=True) == {
        "reference_episodes": 500,
        "steps_scale": 1.0,
        "calibration_episodes": 64,
    }
    keys = {run.env: run.dataset for run in expand(spec, quick=True)}
    assert keys["highway"].expert["steps_scale"] == 0.1
    assert json.loads(keys["highway"].key())["expert"] == expert_budget(spec, "highway", quick=True)
    # A budget is part of the run ids; the same spec without one keeps its ids.
    plain = {run.env: run.run_id for run in expand(parse_spec(BASE))}
    budgeted = {run.env: run.run_id for run in expand(spec)}
    assert all(plain[env] != budgeted[env] for env in plain)
    assert [r.run_id for r in expand(parse_spec(BASE))] == [r.run_id for r in expand(parse_spec(BASE))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[expert]\nsteps_scale = 0\n", r"expert\.steps_scale: must be a number in \(0, 1\]"),
        ("[expert]\nsteps_scale = 1.5\n", r"expert\.steps_scale: must be a number in \(0, 1\]"),
        ("[expert]\nsteps_scale = true\n", r"expert\.steps_scale: must be a number"),
        ('[expert]\nsteps_scale = "half"\n', r"expert\.steps_scale: must be a number"),
        ("[expert]\nreference_episodes = 0\n", r"expert\.reference_episodes: must be >= 1"),
        ("[expert]\nreference_episodes = 2.5\n", r"expert\.reference_episodes: must be an integer"),
        ("[expert]\nstep_scale = 0.5\n", r"expert\.step_scale: unknown key \(known keys: steps_scale"),
        ('expert = "small"\n', r"mine\.toml: expert: must be a table"),
        (
            "[per_env.highway.expert]\ncalibration_episodes = -3\n",
            r"per_env\.highway\.expert\.calibration_episodes: must be >= 1",
        ),
        ("[quick.expert]\nsteps_scale = 2\n", r"quick\.expert\.steps_scale: must be a number in \(0, 1\]"),
        (
            "[quick.per_env.smax-2s3z.expert]\nsteps_scale = 0.5\n",
            r"quick\.per_env\.smax-2s3z: 'smax-2s3z' is not one of grid\.envs",
        ),
        (
            "[quick.per_env.highway]\nsteps = [3]\n",
            r"quick\.per_env\.highway\.steps: unknown key \(known keys: expert\)",
        ),
        (
            "[quick.per_env.highway.expert]\nreference_episodes = 0\n",
            r"quick\.per_env\.highway\.expert\.reference_episodes: must be >= 1",
        ),
    ],
)
def test_budget_validation_names_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_spec(_spec(text), source="mine.toml")
    assert str(caught.value).startswith("spec mine.toml: ")


def test_quick_budgets_of_the_builtin_specs() -> None:
    for name in ("table1", "table2", "table3", "data-efficiency", "convergence"):
        spec = load_spec(name)
        full = {run.env: run.dataset for run in expand(spec)}
        quick = {run.env: run.dataset for run in expand(spec, quick=True)}
        assert all(not key.expert for key in full.values()), name
        assert quick["highway"].expert == {
            "steps_scale": 0.06,
            "reference_episodes": 64,
            "calibration_episodes": 64,
        }, name
        assert not quick["grid-world"].expert, name
        for env, key in quick.items():
            if env.startswith("smax-"):
                assert key.expert["steps_scale"] == 0.05 and key.expert["reference_episodes"] == 64, name
    assert experts.scaled_expert_steps("highway", 0.06) == 3000
    assert experts.scaled_expert_steps("smax-2s3z", 0.05) == 100_000
    with pytest.raises(ConfigError, match="steps_scale"):
        experts.scaled_expert_steps("highway", 0.0)


def test_a_smaller_budget_gets_its_own_expert_dir_and_dataset_files(tmp_path: Path) -> None:
    small = {"steps": 3000, "reference_episodes": 64}
    assert experts.default_expert_dir("highway", tmp_path) == tmp_path / "experts" / "highway"
    assert experts.default_expert_dir("highway", tmp_path, steps=50_000, reference_episodes=1000) == (
        tmp_path / "experts" / "highway"
    )
    assert (
        experts.default_expert_dir("highway", tmp_path, **small) == tmp_path / "experts" / "highway-s3000-r64"
    )
    assert experts.default_expert_dir("highway", tmp_path, reference_episodes=64).name == "highway-s50000-r64"
    default = experts.dataset_path(tmp_path, "highway", "normal", 500)
    assert default == tmp_path / "highway-normal.h5"
    assert (
        experts.dataset_path(
            tmp_path,
            "highway",
            "normal",
            500,
            steps=50_000,
            reference_episodes=1000,
            calibration_episodes=512,
        )
        == default
    )
    assert experts.dataset_path(tmp_path, "highway", "good", 500, **small).name == "highway-good-s3000-r64.h5"
    assert experts.dataset_path(tmp_path, "highway", "good", 500, **small, calibration_episodes=64).name == (
        "highway-good-s3000-r64.h5"
    )  # the good tier searches no epsilon
    assert experts.dataset_path(tmp_path, "highway", "poor", 200, **small, calibration_episodes=64).name == (
        "highway-poor-200ep-seed0-s3000-r64-c64.h5"
    )
    assert experts.dataset_path(tmp_path, "highway", "normal", 500, calibration_episodes=64).name == (
        "highway-normal-c64.h5"
    )
    # The random tier is made without an expert: one file whatever the budget.
    assert experts.dataset_path(tmp_path, "highway", "random", 500, **small, calibration_episodes=64) == (
        tmp_path / "highway-random.h5"
    )


def test_ensure_expert_and_dataset_with_a_tiny_budget(tmp_path: Path) -> None:
    env = "equal-space"
    directory = experts.ensure_expert(env, tmp_path, steps=2048, reference_episodes=8, progress=False)
    assert directory == tmp_path / "experts" / f"{env}-s2048-r8"
    info = experts.ExpertInfo.load(directory)
    assert info.reference_episodes == 8 and info.ppo["total_steps"] == 2048
    assert not (tmp_path / "experts" / env).exists()
    stamp = (directory / experts.EXPERT_INFO_FILE).stat().st_mtime_ns

    # The sweep's dataset function: a steps_scale that comes to the same 2,048 steps reuses the expert.
    key = DatasetKey(
        env,
        "normal",
        16,
        0,
        expert={"steps_scale": 2048 / 500_000, "reference_episodes": 8, "calibration_episodes": 8},
    )
    path = make_dataset(key, tmp_path)
    assert path == tmp_path / f"{env}-normal-16ep-seed0-s2048-r8-c8.h5"
    assert (directory / experts.EXPERT_INFO_FILE).stat().st_mtime_ns == stamp
    recipe = load_dataset(path).metadata.behavior_policy
    assert recipe["calibration"]["episodes"] == 8
    assert recipe["expert"]["reference_episodes"] == 8 and recipe["expert"]["ppo_total_steps"] == 2048
    assert (
        experts.ensure_dataset(
            env,
            "normal",
            16,
            tmp_path,
            steps=2048,
            reference_episodes=8,
            calibration_episodes=8,
            progress=False,
        )
        == path
    )
