"""Sweeps: spec expansion and ids, resumable runs, failures, the results table, reports, the CLI and Ray.

Runs use fake run and dataset functions (module-level, so worker processes can import them): fast.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import marlkd.experiments as experiments_package
from marlkd.cli import main
from marlkd.errors import ConfigError, MarlkdError
from marlkd.experiments import (
    builtin_spec_names,
    expand,
    load_results,
    load_spec,
    parse_spec,
    run_sweep,
    sweep_status,
)
from marlkd.experiments.report import write_report
from marlkd.experiments.results import RESULT_COLUMNS, append_rows
from marlkd.experiments.runner import MARKER_FILE, read_marker, run_dir_for
from marlkd.experiments.spec import DatasetKey, RunSpec
from marlkd.experiments.stats import cell_stats, iqm, stratified_bootstrap_ci
from marlkd.experiments.tables import summarize

MINI = """
name = "mini"
description = "A small sweep for the tests."

[grid]
envs = ["grid-world", "fill-in"]
methods = ["idt", "ours"]
seeds = 2
steps = [10]
eval_episodes = [2]
dataset_episodes = [20]

[per_env.fill-in]
quality = ["random"]

[train]
batch_size = 8

[overrides.ours.algo]
alpha = 0.5

[quick]
seeds = 1
steps = [5]

[report]
extra_metrics = ["train_time_s"]
plots = ["train_steps", "wall_time_s"]
"""


def fake_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Stands in for training: counts its calls, writes a tidy metrics.csv, returns seed-dependent results;
    raises for a method whose algo config says ``explode``."""
    with open(run_dir / "calls.txt", "a") as f:
        f.write("call\n")
    if run.config["algo"].get("explode"):
        raise RuntimeError(f"boom in {run.method}")
    assert dataset is not None and dataset.is_file()
    score = 1.0 + run.seed + (0.5 if run.method == "ours" else 0.0)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "wall_time_s", "metric", "value"])
        for step in range(1, run.steps + 1):
            writer.writerow([step, 0.1 * step, "loss", 1.0 / step])
            if step % 5 == 0:
                writer.writerow([step, 0.1 * step, "eval/return_mean", score * step / run.steps])
    return {
        "return_mean": score,
        "return_std": 0.25,
        "train_time_s": 0.1 * run.steps,
        "env_steps": 0,
        "train_steps": run.steps,
        "seed": run.seed,
        "config": run.config,
    }


def fake_dataset(key: DatasetKey, root: Path) -> Path:
    """Stands in for ``ensure_dataset``: writes a placeholder file and logs that it made one."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key.env}-{key.quality}-{key.episodes}-s{key.seed}.h5"
    path.write_text("placeholder")
    with open(root / "made.txt", "a") as f:
        f.write(f"{key.env}/{key.quality}\n")
    return path


def _calls(root: Path, run: RunSpec) -> int:
    path = run_dir_for(root, run) / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ----------------------------------------------------------------------------------------------------
# Specs


def test_expand_gives_the_grid_with_stable_ids() -> None:
    spec = parse_spec(MINI)
    runs = expand(spec)
    assert len(runs) == 2 * 2 * 2
    assert [r.run_id for r in runs] == [r.run_id for r in expand(parse_spec(MINI))]
    assert len({r.run_id for r in runs}) == len(runs)
    first = runs[0]
    assert first.run_id.startswith("grid-world/idt/good/s0-") and len(first.run_id.rsplit("-", 1)[1]) == 8
    assert first.config == {
        "method": "idt",
        "train": {"batch_size": 8, "steps": 10, "seed": 0, "num_trajectories": 0},
        "eval": {"episodes": 2},
        "algo": {},
    }
    ours = [r for r in runs if r.method == "ours"]
    assert all(r.config["algo"] == {"alpha": 0.5} for r in ours)
    assert {r.quality for r in runs if r.env == "fill-in"} == {"random"}
    # Same config, same id; another seed, another id (and the seed alone changes nothing else).
    by_seed = {r.seed: r for r in runs if r.env == "grid-world" and r.method == "idt"}
    assert by_seed[0].run_id != by_seed[1].run_id
    assert by_seed[0].run_id.rsplit("-", 1)[0].replace("s0", "s1") == by_seed[1].run_id.rsplit("-", 1)[0]
    # Runs that need the same dataset share its key.
    assert len({r.dataset.key() for r in runs}) == 2


def test_quick_variant_is_its_own_sweep() -> None:
    spec = parse_spec(MINI)
    quick = expand(spec, quick=True)
    assert len(quick) == 2 * 2 * 1
    assert {r.steps for r in quick} == {5} and {r.sweep for r in quick} == {"mini-quick"}
    assert not {r.run_id for r in quick} & {r.run_id for r in expand(spec)}


def test_ablation_axis_sets_ours_switch_only() -> None:
    spec = parse_spec(MINI.replace("steps = [10]", 'steps = [10]\nablation = ["full", "kl-only"]'))
    runs = expand(spec)
    ours = [r for r in runs if r.method == "ours"]
    assert sorted({r.config["algo"]["ablation"] for r in ours}) == ["full", "kl-only"]
    assert len(ours) == 2 * 2 * 2 and all(r.ablation == "" for r in runs if r.method == "idt")
    assert any("/ours-kl-only/" in r.run_id for r in ours)


@pytest.mark.parametrize("name", builtin_spec_names())
def test_builtin_specs_load_and_expand(name: str) -> None:
    spec = load_spec(name)
    full, quick = expand(spec), expand(spec, quick=True)
    assert 0 < len(quick) < len(full)
    assert max(r.steps for r in quick) < min(r.steps for r in full)


def test_coordination_runs_grid_world_as_tiers_does() -> None:
    runs = expand(load_spec("coordination"))
    tiers = {r.run_id for r in expand(load_spec("tiers"))}
    standard = [r for r in runs if r.env == "grid-world"]
    coop = [r for r in runs if r.env == "grid-world-coop"]
    assert len(standard) == len(coop) == 4 * 2 * 10
    assert {r.run_id for r in standard} <= tiers  # the same runs, trained once
    assert {r.quality for r in coop} == {"good", "mixed"}
    by_key = {(r.method, r.quality, r.seed): r.config for r in standard}
    assert all(by_key[(r.method, r.quality, r.seed)] == r.config for r in coop)  # same model and budget


def test_builtin_table_specs_follow_the_paper() -> None:
    table1 = load_spec("table1")
    runs = expand(table1)
    assert len(table1.envs) == 8 and len(table1.methods) == 9 and table1.seeds == tuple(range(10))
    assert {r.quality for r in runs if r.env == "fill-in"} == {"random"}
    assert {r.quality for r in runs if r.env != "fill-in"} == {"good"}
    assert {r.dataset_episodes for r in runs if r.env == "highway"} == {500}
    table3 = expand(load_spec("table3"))
    # IDT is the reference row (no ablation); ours runs every variant; Grid-World at all three qualities
    assert {r.method for r in table3} == {"idt", "ours"}
    assert {r.quality for r in table3 if r.env == "grid-world"} == {"good", "normal", "poor"}
    assert {r.config["algo"]["ablation"] for r in table3 if r.method == "ours"} == {
        "full",
        "no-momentum",
        "no-mapping",
        "no-kl",
        "no-kl-no-mapping",
        "kl-only",
        "shared-mapping",
        "raw-teacher",
        "frozen-mapping",
        "ema-mapping",
        "spread",
        "eval-target",
    }
    table2 = expand(load_spec("table2"))
    assert {(r.env, r.quality) for r in table2} == {
        (e, q) for e in ("grid-world", "highway") for q in ("good", "normal", "poor")
    }


def test_user_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINI)
    spec = load_spec(path)
    assert spec.name == "mini" and spec.source == str(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown spec 'tabel1'"):
        load_spec("tabel1")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("seeds = 2", "seedz = 2", r"grid\.seedz: unknown key"),
        ('quality = ["random"]', 'quality = ["great"]', r"per_env\.fill-in\.quality: unknown value 'great'"),
        ("[per_env.fill-in]", "[per_env.fil-in]", r"per_env\.fil-in: 'fil-in' is not one of grid\.envs"),
        ("batch_size = 8", "steps = 8", r"train\.steps: is a grid axis"),
        ("alpha = 0.5", "ablation = 'full'", r"overrides\.ours\.algo\.ablation: is a grid axis"),
        ("steps = [10]", "steps = [10]\nnum_trajectories = [50]", r"num_trajectories 50 exceeds dataset_ep"),
        ('name = "mini"', 'name = "a b"', r"name: must be a non-empty name"),
        ("seeds = 2", "seeds = 'two'", r"grid\.seeds: must be a list of int"),
        ("[report]", "[report]\nrows = 'colour'", r"report\.rows: must be one of"),
        ("[quick]", "[quick]\nbogus = 1", r"quick\.bogus: unknown key"),
    ],
)
def test_bad_spec_errors_name_the_key(old: str, new: str, message: str) -> None:
    assert old in MINI
    with pytest.raises(ConfigError, match=message):
        parse_spec(MINI.replace(old, new, 1), source="mine.toml")


def test_bad_toml_is_reported_with_its_source() -> None:
    with pytest.raises(ConfigError, match=r"spec mine\.toml: not valid TOML"):
        parse_spec("name = ", source="mine.toml")


# ----------------------------------------------------------------------------------------------------
# Running


def test_sweep_runs_once_and_resumes(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    summary = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert summary.ok and summary.done == 8 and summary.skipped == 0 and summary.datasets == 2
    made = (tmp_path / "datasets" / "made.txt").read_text().splitlines()
    assert sorted(made) == ["fill-in/random", "grid-world/good"]  # each dataset made once
    runs = expand(spec)
    assert all(_calls(tmp_path, r) == 1 for r in runs)
    assert all(read_marker(run_dir_for(tmp_path, r))["status"] == "done" for r in runs)

    again = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert again.ok and again.done == 0 and again.skipped == 8 and again.datasets == 0
    assert all(_calls(tmp_path, r) == 1 for r in runs)

    table = load_results(tmp_path, spec)
    assert set(RESULT_COLUMNS) <= set(table.columns)
    final = table[table["metric"] == "return_mean"]
    assert len(final) == 8 and set(final["spec"]) == {"mini"}
    row = final[(final["env"] == "grid-world") & (final["method"] == "ours") & (final["seed"] == 1)].iloc[0]
    assert row["value"] == 2.5 and row["train_steps"] == 10 and row["quality"] == "good"
    assert row["torch_version"] and row["code_revision"] and row["timestamp"]
    assert "seed" not in set(table["metric"])  # descriptions of the run are not metrics
    curve = table[table["metric"] == "curve:eval/return_mean"]
    assert len(curve) == 8 * 2 and set(curve["train_steps"]) == {5, 10}


def test_failed_run_is_recorded_and_others_finish(tmp_path: Path) -> None:
    spec = parse_spec(MINI.replace("alpha = 0.5", "alpha = 0.5\nexplode = true"))
    summary = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert not summary.ok and summary.done == 4 and len(summary.failed) == 4
    failure = summary.failed[0]
    assert "RuntimeError: boom in ours" in failure.error
    marker = json.loads((Path(failure.run_dir) / MARKER_FILE).read_text())
    assert marker["status"] == "failed" and "Traceback" in marker["traceback"]
    statuses = sweep_status(spec, tmp_path)
    assert sorted(s.status for s in statuses) == ["done"] * 4 + ["failed"] * 4
    assert set(load_results(tmp_path, spec)["method"]) == {"idt"}
    # A new launch retries only the failed runs.
    retry = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert retry.skipped == 4 and len(retry.failed) == 4
    assert all(_calls(tmp_path, r) == (2 if r.method == "ours" else 1) for r in expand(spec))


def test_failed_dataset_fails_its_runs_only(tmp_path: Path) -> None:
    def dataset_fn(key: DatasetKey, root: Path) -> Path:
        if key.env == "fill-in":
            raise OSError("disk full")
        return fake_dataset(key, root)

    summary = run_sweep(
        parse_spec(MINI), tmp_path, workers=0, run_fn=fake_run, dataset_fn=dataset_fn, progress=False
    )
    assert summary.done == 4 and len(summary.failed) == 4
    expected = "making dataset fill-in/random/20 failed: OSError: disk full"
    assert all(expected in f.error for f in summary.failed)


def test_lost_rows_are_appended_again(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    table = tmp_path / "mini" / "results.csv"
    rows = table.read_text().splitlines()
    dropped = expand(spec)[0].run_id
    table.write_text("\n".join(r for r in rows if dropped not in r) + "\n")
    again = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert again.done == 0 and again.skipped == 8
    assert len(load_results(tmp_path, spec)) == len(rows) - 1


def test_only_filters_and_unknown_names(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    summary = run_sweep(
        spec,
        tmp_path,
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["fill-in"],
        only_methods=["ours"],
    )
    assert summary.total == 2 and summary.done == 2
    with pytest.raises(ConfigError, match="has no environment 'gridworld'"):
        run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, only_envs=["gridworld"], progress=False)


def test_max_seeds_runs_the_first_seeds_and_a_larger_value_goes_on(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    seeds = sorted({run.seed for run in expand(spec)})
    first = run_sweep(
        spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False, max_seeds=1
    )
    assert first.ok and first.total == len(expand(spec)) // len(seeds)
    assert {row for row in load_results(tmp_path, spec)["seed"]} == {seeds[0]}
    rest = run_sweep(
        spec,
        tmp_path,
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        max_seeds=len(seeds),
    )
    assert rest.skipped == first.total and rest.done == len(expand(spec)) - first.total
    with pytest.raises(ConfigError, match="max_seeds must be >= 1"):
        run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, progress=False, max_seeds=0)


def test_process_pool_gives_the_same_results(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    inline = run_sweep(
        spec,
        tmp_path / "a",
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
    )
    pooled = run_sweep(
        spec,
        tmp_path / "b",
        workers=2,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
    )
    assert inline.ok and pooled.ok and pooled.done == inline.done == 4

    def values(root: Path) -> list[tuple]:
        table = load_results(root, spec)
        return sorted(zip(table["run_id"], table["metric"], table["value"], strict=True))

    assert values(tmp_path / "a") == values(tmp_path / "b")
    assert (run_dir_for(tmp_path / "b", expand(spec)[0]) / "log.txt").exists()  # worker output captured


def test_ray_missing_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MarlkdError, match=r"marlkd\[ray\]"):
        run_sweep(
            parse_spec(MINI),
            tmp_path,
            ray_address="local",
            run_fn=fake_run,
            dataset_fn=fake_dataset,
            progress=False,
        )


@pytest.mark.slow
def test_ray_backend_runs_a_sweep(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray backend needs the ray extra (pip install 'marlkd[ray]')")
    # Ray's workers cannot import this test module by name: send its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = parse_spec(MINI)
    try:
        summary = run_sweep(
            spec,
            tmp_path / "ray",
            ray_address="local",
            workers=2,
            run_fn=fake_run,
            dataset_fn=fake_dataset,
            progress=False,
            only_envs=["grid-world"],
            only_methods=["idt"],
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert summary.ok and summary.done == 2
    local = run_sweep(
        spec,
        tmp_path / "local",
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
        only_methods=["idt"],
    )
    assert local.ok
    pick = ["run_id", "metric", "value", "train_steps"]
    assert (
        load_results(tmp_path / "ray", spec)[pick].sort_values(pick).values.tolist()
        == load_results(tmp_path / "local", spec)[pick].sort_values(pick).values.tolist()
    )


# ----------------------------------------------------------------------------------------------------
# Statistics and reports


def test_iqm_matches_the_trimmed_mean() -> None:
    assert iqm([1, 2, 3, 4]) == 2.5  # int(0.25 * 4) = 1 cut from each end
    assert iqm([10, 1, 2, 3, 4, 5, 6, 7]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert iqm([1, 2, 3]) == 2.0  # int(0.75) = 0: nothing cut
    scipy_stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(1).normal(size=37)
    assert iqm(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_stratified_bootstrap_is_seeded_and_covers_the_iqm() -> None:
    rng = np.random.default_rng(0)
    tasks = [rng.normal(0, 1, size=10), rng.normal(5, 1, size=6)]
    first = stratified_bootstrap_ci(tasks, reps=500, seed=3)
    assert first == stratified_bootstrap_ci(tasks, reps=500, seed=3)
    assert first != stratified_bootstrap_ci(tasks, reps=500, seed=4)
    assert first[0] < iqm(np.concatenate(tasks)) < first[1]
    assert stratified_bootstrap_ci([np.full(5, 2.0)], reps=100) == (2.0, 2.0)
    stats = cell_stats([1.0, 2.0, 4.0, 9.0], reps=200)
    assert (stats.mean, stats.n, stats.iqm) == (4.0, 4, 3.0)
    assert stats.std == pytest.approx(np.std([1, 2, 4, 9], ddof=1))


def _synthetic_rows(spec_name: str) -> list[dict[str, Any]]:
    """A small results table: two methods x two environments, with values chosen for hand computation."""
    values = {
        ("grid-world", "idt"): [1.0, 2.0],
        ("grid-world", "ours"): [2.0, 2.0, 3.0, 5.0],
        ("fill-in", "idt"): [-4.0, -2.0, -3.0],
        ("fill-in", "ours"): [-1.0],
    }
    rows = []
    for (env, method), scores in values.items():
        for seed, score in enumerate(scores):
            base = {
                "spec": spec_name,
                "run_id": f"{env}/{method}/s{seed}",
                "env": env,
                "method": method,
                "seed": seed,
                "quality": "good",
                "num_trajectories": 0,
                "ablation": "",
                "steps": 10,
                "eval_episodes": 2,
                "dataset_episodes": 20,
                "train_steps": 10,
                "wall_time_s": 1.0,
                "env_steps": 0,
                "marlkd_version": "0.1.0",
                "torch_version": "2.13.0",
                "code_revision": "abc",
                "timestamp": "2026-01-01T00:00:00+00:00",
            }
            rows.append({**base, "metric": "return_mean", "value": score})
            rows.append({**base, "metric": "train_time_s", "value": 10.0 + seed})
            for step in (5, 10):
                rows.append(
                    {
                        **base,
                        "metric": "curve:eval/return_mean",
                        "value": score * step / 10,
                        "train_steps": step,
                        "wall_time_s": 0.1 * step + 0.01 * seed,
                    }
                )
    return rows


def test_report_numbers_from_a_synthetic_table(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    append_rows(tmp_path / "mini" / "results.csv", _synthetic_rows("mini"))
    frame = load_results(tmp_path, spec)
    summary = summarize(frame, spec, "return_mean", "variant", ["env"], reps=200)
    cells = {(r["variant"], r["env"]): r for r in summary.to_dict("records")}
    ours_gw = cells[("Ours", "grid-world")]
    assert ours_gw["mean"] == 3.0 and ours_gw["n"] == 4 and ours_gw["iqm"] == 2.5
    assert ours_gw["std"] == pytest.approx(np.sqrt((1 + 1 + 0 + 4) / 3))
    assert cells[("IDT", "fill-in")]["mean"] == -3.0 and cells[("IDT", "fill-in")]["std"] == 1.0
    assert cells[("Ours", "fill-in")]["std"] == 0.0 and cells[("Ours", "fill-in")]["n"] == 1
    assert list(dict.fromkeys(summary["variant"])) == ["IDT", "Ours"]  # the spec's order
    assert list(dict.fromkeys(summary["env"])) == ["grid-world", "fill-in"]

    with pytest.raises(MarlkdError, match=r"no rows of the spec's runs yet \(10 other runs"):
        write_report(spec, tmp_path, bootstrap_reps=200)  # the synthetic ids are not the spec's
    report = write_report(spec, tmp_path, bootstrap_reps=200, all_runs=True)
    text = report.read_text()
    assert report == tmp_path / "mini" / "report" / "report.md"
    assert "| Method | Grid-World | Fill-In |" in text
    assert "| IDT | 1.50 ± 0.71 (2) | -3.00 ± 1.00 (3) |" in text
    assert "| Ours | **3.00 ± 1.41 (4)** | **-1.00 ± 0.00 (1)** |" in text
    assert "## train_time_s: mean ± std (n)" in text and "interquartile mean" in text
    assert "| IDT | 1.50 [" in text  # IQM of two values is their mean
    for name in ("curve_vs_train_steps.png", "curve_vs_wall_time_s.png"):
        assert (report.parent / name).stat().st_size > 0 and f"]({name})" in text


def test_report_plots_against_trajectories_and_aggregates(tmp_path: Path) -> None:
    spec = parse_spec(
        MINI.replace('plots = ["train_steps", "wall_time_s"]', 'plots = ["num_trajectories"]').replace(
            "[report]", '[report]\ncolumns = ["env", "num_trajectories"]'
        )
    )
    rows = []
    for n, scale in ((5, 0.5), (0, 1.0)):
        for row in _synthetic_rows("mini"):
            if row["metric"] == "return_mean":
                rows.append(
                    {
                        **row,
                        "num_trajectories": n,
                        "value": row["value"] * scale,
                        "run_id": f"{row['run_id']}/n{n}",
                    }
                )
                rows.append({**rows[-1], "metric": "normalized_score", "value": 0.1 * row["seed"]})
    append_rows(tmp_path / "mini" / "results.csv", rows)
    text = write_report(spec, tmp_path, bootstrap_reps=100, all_runs=True).read_text()
    assert "Grid-World / 5 trajectories" in text and "Grid-World / all trajectories" in text
    assert "## Aggregate over tasks: normalized_score" in text
    assert (tmp_path / "mini" / "report" / "return_mean_vs_num_trajectories.png").stat().st_size > 0


def test_load_results_without_a_table(tmp_path: Path) -> None:
    with pytest.raises(MarlkdError, match="no results table"):
        load_results(tmp_path, "mini")


# ----------------------------------------------------------------------------------------------------
# Command line


def test_cli_run_status_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("marlkd.experiments.runner.make_dataset", fake_dataset)
    spec_path = tmp_path / "mini.toml"
    spec_path.write_text(MINI.replace('name = "mini"', f'name = "mini"\nrun_fn = "{__name__}:fake_run"'))
    root = str(tmp_path / "out")
    assert main(["experiment", "list"]) == 0
    assert "table1" in capsys.readouterr().out
    argv = [
        "experiment",
        "run",
        str(spec_path),
        "--root",
        root,
        "--workers",
        "0",
        "--no-progress",
        "--only-env",
        "grid-world",
    ]
    assert main(argv) == 0
    assert "4 done now, 0 failed" in capsys.readouterr().out
    assert main(["experiment", "status", str(spec_path), "--root", root]) == 0
    out = capsys.readouterr().out
    assert "grid-world" in out and "total" in out
    assert main(["experiment", "report", str(spec_path), "--root", root, "--bootstrap-reps", "50"]) == 0
    assert (tmp_path / "out" / "mini" / "report" / "report.md").exists()
    assert main(["experiment", "run", "no-such-spec", "--root", root]) == 2
    assert "unknown spec 'no-such-spec'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# The precision axis, shared teachers, convergence curves


def test_precision_axis_expands_and_maps_to_train_precision() -> None:
    spec = parse_spec(MINI.replace("steps = [10]", 'steps = [10]\nprecision = ["fp32", "bf16"]'))
    runs = expand(spec)
    assert len(runs) == 2 * 2 * 2 * 2
    pairs = {(r.precision, r.config["train"]["precision"]) for r in runs}
    assert pairs == {("fp32", "fp32"), ("bf16", "bf16")}
    first = runs[0]
    assert first.run_id.startswith("grid-world/idt/good/fp32/s0-") and first.settings["precision"] == "fp32"
    assert len({r.run_id for r in runs}) == len(runs)
    # Without the axis nothing changes: no precision in the config or the id, the RunSpec's field empty.
    plain = expand(parse_spec(MINI))
    assert all(r.precision == "" and "precision" not in r.config["train"] for r in plain)
    # A fixed train.precision is fine without the axis and refused with it.
    fixed = expand(parse_spec(MINI.replace("batch_size = 8", 'batch_size = 8\nprecision = "bf16"')))
    assert {r.config["train"]["precision"] for r in fixed} == {"bf16"}
    assert all(r.precision == "" for r in fixed)
    swept_and_fixed = MINI.replace("batch_size = 8", 'batch_size = 8\nprecision = "bf16"').replace(
        "[quick]", '[quick]\nprecision = ["fp32", "bf16"]'
    )
    with pytest.raises(ConfigError, match=r"train\.precision: is a grid axis here \(quick\.precision"):
        parse_spec(swept_and_fixed)
    with pytest.raises(ConfigError, match=r"grid\.precision: unknown value 'fp16'"):
        parse_spec(MINI.replace("steps = [10]", 'steps = [10]\nprecision = ["fp16"]'))


def test_ids_without_the_precision_axis_are_unchanged() -> None:
    # An axis a spec does not sweep adds nothing to its runs: stating it empty gives the very same ids,
    # so finished runs of specs written before the axis existed keep their directories.
    runs = expand(load_spec("table1"))
    text = (Path(experiments_package.__file__).parent / "specs" / "table1.toml").read_text()
    stated = expand(parse_spec(text.replace("[grid]\n", "[grid]\nprecision = []\n", 1)))
    assert [r.run_id for r in runs] == [r.run_id for r in stated]
    assert all(r.precision == "" and "/bf16/" not in r.run_id for r in runs)


def test_precision_results_and_report(tmp_path: Path) -> None:
    spec = parse_spec(
        MINI.replace("steps = [10]", 'steps = [10]\nprecision = ["fp32", "bf16"]').replace(
            "[report]", '[report]\ncolumns = ["precision"]'
        )
    )
    summary = run_sweep(
        spec,
        tmp_path,
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
    )
    assert summary.ok and summary.done == 2 * 2 * 2
    table = load_results(tmp_path, spec)
    final = table[table["metric"] == "return_mean"]
    assert sorted(final["precision"]) == ["bf16"] * 4 + ["fp32"] * 4
    text = write_report(spec, tmp_path, bootstrap_reps=50).read_text()
    assert "| Method | fp32 | bf16 |" in text  # the spec's order of the axis
    assert "| Ours | **2.00 ± 0.71 (2)** | **2.00 ± 0.71 (2)** |" in text


def test_results_table_with_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mini" / "results.csv"
    path.parent.mkdir(parents=True)
    old_columns = [c for c in RESULT_COLUMNS if c != "precision"]
    row = {c: "" for c in RESULT_COLUMNS} | {"spec": "mini", "run_id": "new", "metric": "return_mean"}
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(old_columns)
    before = path.read_bytes()
    with pytest.raises(MarlkdError, match="are not this version's .*move it away"):
        append_rows(path, [row])
    assert path.read_bytes() == before  # left as it was


def test_builtin_precision_spec() -> None:
    spec = load_spec("precision")
    runs = expand(spec)
    assert spec.envs == ("grid-world",) and spec.methods == ("idt", "ours") and spec.seeds == tuple(range(5))
    assert len(runs) == 2 * 2 * 5 and {r.precision for r in runs} == {"fp32", "bf16"}
    assert {r.steps for r in runs} == {1000} and {r.quality for r in runs} == {"good"}
    assert spec.report.rows == "variant" and spec.report.columns == ("precision",)
    quick = expand(spec, quick=True)
    assert len(quick) == 2 * 2 * 2 and {r.steps for r in quick} == {200}


SHARED = MINI.replace(
    'description = "A small sweep for the tests."',
    'description = "A small sweep for the tests."\nshare_teacher = true',
).replace("steps = [10]", 'steps = [10]\nablation = ["kl-only", "full"]')


def ordered_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """:func:`fake_run` that also notes, in the root's ``order.txt``, which run started when."""
    sweep = next(folder for folder in run_dir.parents if folder.name == "runs").parent
    with open(sweep / "order.txt", "a") as f:
        f.write(run.run_id + "\n")
    return fake_run(run, run_dir, dataset)


def test_share_teacher_sets_an_absolute_cache_and_keeps_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_spec(SHARED)
    assert spec.share_teacher and not parse_spec(MINI).share_teacher
    runs = expand(spec)
    unshared = parse_spec(SHARED.replace("share_teacher = true", "share_teacher = false"))
    assert [r.run_id for r in runs] == [r.run_id for r in expand(unshared)]
    assert all("teacher_cache" not in r.config["algo"] for r in runs)  # the runner sets it, not the spec

    monkeypatch.chdir(tmp_path)
    summary = run_sweep(spec, "rel", workers=0, run_fn=ordered_run, dataset_fn=fake_dataset, progress=False)
    assert summary.ok and summary.done == len(runs) == 2 * 2 * (1 + 2)
    cache = tmp_path / "rel" / "mini" / "teachers"
    for run in runs:
        marker = read_marker(run_dir_for(tmp_path / "rel", run))  # found under the unchanged id
        assert marker is not None and marker["status"] == "done"
        algo = marker["run"]["config"]["algo"]
        if run.method == "ours":
            assert Path(algo["teacher_cache"]).is_absolute() and Path(algo["teacher_cache"]) == cache
        else:
            assert "teacher_cache" not in algo
    # Launch order: seed-major; within a seed one run per teacher (the full ablation) before the others.
    order = [line.rsplit("-", 1)[0] for line in (tmp_path / "rel" / "order.txt").read_text().split()]
    assert order[:6] == [
        "grid-world/idt/good/s0",
        "grid-world/ours-full/good/s0",
        "fill-in/idt/random/s0",
        "fill-in/ours-full/random/s0",
        "grid-world/ours-kl-only/good/s0",
        "fill-in/ours-kl-only/random/s0",
    ]
    assert all(name.endswith("/s1") for name in order[6:])


def test_share_teacher_quick_variant_has_its_own_cache(tmp_path: Path) -> None:
    spec = parse_spec(SHARED)
    run_sweep(
        spec,
        tmp_path,
        quick=True,
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_methods=["ours"],
    )
    run = expand(spec, quick=True)[1]
    assert run.method == "ours"
    marker = read_marker(run_dir_for(tmp_path, run))
    assert marker is not None
    expected = tmp_path.resolve() / "mini-quick" / "teachers"
    assert marker["run"]["config"]["algo"]["teacher_cache"] == str(expected)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("share_teacher = true", "share_teacher = 'yes'", r"share_teacher: must be true or false"),
        ('methods = ["idt", "ours"]', 'methods = ["idt"]', r"share_teacher: needs 'ours' in grid\.methods"),
        ("alpha = 0.5", "teacher_cache = '/tmp/t'", r"share_teacher: the runner sets algo\.teacher_cache"),
    ],
)
def test_bad_share_teacher(old: str, new: str, message: str) -> None:
    text = SHARED.replace(old, new, 1)
    if 'methods = ["idt"]' in text:
        text = text.replace("[overrides.ours.algo]\nalpha = 0.5\n", "")
    with pytest.raises(ConfigError, match=message):
        parse_spec(text)


def test_builtin_specs_share_teachers_and_log_curves() -> None:
    table3 = load_spec("table3")
    assert table3.share_teacher
    convergence = load_spec("convergence")
    assert not convergence.share_teacher  # ours runs once per seed: nothing to share, and its cost counts
    for quick, every in ((False, 100), (True, 20)):
        runs = expand(convergence, quick)
        assert {r.config["eval"]["every"] for r in runs} == {every}
        assert all(r.steps == 10 * every for r in runs)  # a tenth of training


def convergence_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Stands in for marlkd.train in the convergence sweep: writes metrics.csv as the training loop does
    (training rows every log_every, ``eval/return_mean`` every ``eval.every`` and at the end), counting
    ours's teacher updates before its students'."""
    updates = run.steps * (2 if run.method == "ours" else 1)
    every, log_every = run.config["eval"]["every"], run.config["train"]["log_every"]
    seconds = 0.02 if run.method == "ours" else 0.01  # per update
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "wall_time_s", "metric", "value"])
        for step in range(1, updates + 1):
            if step % log_every == 0:
                writer.writerow([step, seconds * step, "train/loss", 1.0 / step])
            if step % every == 0:
                writer.writerow([step, seconds * step, "eval/return_mean", step / updates + run.seed])
                writer.writerow([step, seconds * step, "eval/return_std", 0.1])
    return {
        "return_mean": 1.0 + run.seed,
        "return_std": 0.1,
        "train_steps": updates,
        "train_time_s": seconds * updates,
    }


def test_convergence_report_draws_curves_from_eval_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec("convergence")
    summary = run_sweep(
        spec,
        tmp_path,
        quick=True,
        workers=0,
        run_fn=convergence_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
    )
    assert summary.ok and summary.done == 4 * 2
    table = load_results(tmp_path, spec, quick=True)
    curve = table[table["metric"] == "curve:eval/return_mean"]
    ours = curve[curve["method"] == "ours"]
    assert sorted(set(ours["train_steps"])) == list(range(20, 401, 20))  # teacher's 200 updates, then 200
    assert sorted(set(curve[curve["method"] == "idt"]["train_steps"])) == list(range(20, 201, 20))

    figures: dict[str, Any] = {}
    import marlkd.experiments.plots as plots_module

    real_save = plots_module._save

    def keep(fig: Any, path: Path) -> None:
        figures[path.name] = fig
        real_save(fig, path)

    monkeypatch.setattr(plots_module, "_save", keep)
    text = write_report(spec, tmp_path, quick=True, bootstrap_reps=50).read_text()
    assert "![Learning curves against training updates](curve_vs_train_steps.png)" in text
    assert "![Learning curves against wall-clock training time](curve_vs_wall_time_s.png)" in text
    for name, label, ours_end, idt_end in (
        ("curve_vs_train_steps.png", "training updates", 400, 200),
        ("curve_vs_wall_time_s.png", "wall-clock time (s)", 8.0, 2.0),
    ):
        assert (tmp_path / "convergence-quick" / "report" / name).stat().st_size > 0
        (ax,) = [a for a in figures[name].axes if a.get_visible() and a.get_title()]
        assert ax.get_title() == "Grid-World" and ax.get_xlabel() == label
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"IDT", "MADT", "Teacher (centralized DT)", "Ours"}
        x, y = lines["Ours"].get_data()
        assert len(x) == 20 and x[-1] == pytest.approx(ours_end)
        assert y[-1] == pytest.approx(1.0 + 0.5)  # mean over seeds 0 and 1 of the final point
        assert lines["IDT"].get_data()[0][-1] == pytest.approx(idt_end)


# ----------------------------------------------------------------------------------------------------
# The run store shared by the sweeps of a root


OTHER = (
    MINI.replace('name = "mini"', 'name = "other"')
    .replace('envs = ["grid-world", "fill-in"]', 'envs = ["grid-world"]')
    .replace("seeds = 2", "seeds = 3")
    .replace('[per_env.fill-in]\nquality = ["random"]\n', "")
)


def test_sweeps_share_finished_runs(tmp_path: Path) -> None:
    mini, other = parse_spec(MINI), parse_spec(OTHER)
    shared = {r.run_id for r in expand(mini)} & {r.run_id for r in expand(other)}
    assert len(shared) == 4  # grid-world, idt and ours, seeds 0 and 1
    first = run_sweep(mini, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert first.ok and first.done == 8
    second = run_sweep(other, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    assert second.ok and second.skipped == 4 and second.done == 2  # only its seed-2 runs execute
    assert all(_calls(tmp_path, r) == 1 for r in expand(other))
    assert run_dir_for(tmp_path, expand(other)[0]) == tmp_path / "runs" / expand(other)[0].run_id
    assert not (tmp_path / "other" / "runs").exists() and (tmp_path / "other" / "spec.json").is_file()

    table = load_results(tmp_path, other)
    final = table[table["metric"] == "return_mean"]
    assert len(final) == 6 and set(final["spec"]) == {"other"} and shared <= set(final["run_id"])
    row = final[(final["method"] == "ours") & (final["seed"] == 1)].iloc[0]
    assert row["value"] == 2.5 and row["quality"] == "good" and row["steps"] == 10
    assert len(table[table["metric"] == "curve:eval/return_mean"]) == 6 * 2
    mine = load_results(tmp_path, mini)
    assert set(mine["spec"]) == {"mini"} and len(mine[mine["metric"] == "return_mean"]) == 8
    assert {s.status for s in sweep_status(other, tmp_path)} == {"done"}


def _hold_then_finish(root: Path, run: RunSpec, handle: Any, delay: float) -> None:
    """Plays another driver: after ``delay`` s, writes a done marker for ``run`` and lets go of its lock."""
    import time

    from marlkd.experiments.runner import release_run_lock

    time.sleep(delay)
    directory = run_dir_for(root, run)
    directory.mkdir(parents=True, exist_ok=True)
    marker = {
        "status": "done",
        "run": run.to_dict(),
        "result": {"return_mean": 7.0},
        "curve": [],
        "provenance": {"code_revision": "elsewhere"},
        "elapsed_s": 1.0,
        "finished": "2026-01-01T00:00:00",
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker))
    release_run_lock(handle)


def test_a_run_locked_elsewhere_is_not_run_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from marlkd.experiments import runner, scheduler
    from marlkd.experiments.runner import try_lock_run

    monkeypatch.setattr(scheduler, "_POLL_S", 0.1)
    spec = parse_spec(MINI)
    busy = expand(spec)[0]
    handle = try_lock_run(tmp_path, busy.run_id)
    assert handle is not None and try_lock_run(tmp_path, busy.run_id) is None  # held: no second taker
    other = threading.Thread(target=_hold_then_finish, args=(tmp_path, busy, handle, 0.5))
    other.start()
    summary = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    other.join()
    assert summary.ok and summary.done == 7 and summary.shared == 1
    assert _calls(tmp_path, busy) == 0  # never executed here
    table = load_results(tmp_path, spec)
    row = table[(table["run_id"] == busy.run_id) & (table["metric"] == "return_mean")].iloc[0]
    assert row["value"] == 7.0 and row["spec"] == "mini" and row["code_revision"] == "elsewhere"
    # The lock is free again, and a run whose holder let go without finishing it is run here.
    loose = expand(spec)[1]
    released = try_lock_run(tmp_path, loose.run_id)
    assert released is not None
    runner.release_run_lock(released)


def test_a_run_whose_holder_gave_up_is_run_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from marlkd.experiments import scheduler
    from marlkd.experiments.runner import release_run_lock, try_lock_run

    monkeypatch.setattr(scheduler, "_POLL_S", 0.1)
    spec = parse_spec(MINI)
    busy = expand(spec)[0]
    handle = try_lock_run(tmp_path, busy.run_id)
    assert handle is not None
    timer = threading.Timer(0.5, release_run_lock, args=(handle,))
    timer.start()
    summary = run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)
    timer.join()
    assert summary.ok and summary.done == 8 and summary.shared == 0
    assert all(_calls(tmp_path, r) == 1 for r in expand(spec))


def test_reserved_sweep_names(tmp_path: Path) -> None:
    spec = parse_spec(MINI.replace('name = "mini"', 'name = "runs"'))
    with pytest.raises(ConfigError, match="may not be named 'runs'"):
        run_sweep(spec, tmp_path, workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False)


def sleepy_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Stands in for a long training: says it started, then sleeps (interrupted by the test)."""
    (run_dir / "started").write_text("yes")
    time.sleep(120)
    return {"return_mean": 0.0}


@pytest.mark.slow
def test_interrupting_the_driver_alone_stops_its_workers(tmp_path: Path) -> None:
    spec_path = tmp_path / "mini.toml"
    spec_path.write_text(MINI)
    script = (
        "import signal, sys; sys.path.insert(0, {tests!r})\n"
        # as started from a terminal, even when the test runs where SIGINT is ignored (nohup, CI runners)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from test_experiments import fake_dataset, sleepy_run\n"
        "from marlkd.experiments import run_sweep\n"
        "run_sweep({spec!r}, {root!r}, workers=2, run_fn=sleepy_run, dataset_fn=fake_dataset, progress=False,"
        " only_envs=['grid-world'])\n"
    ).format(tests=str(Path(__file__).parent), spec=str(spec_path), root=str(tmp_path / "root"))
    driver = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # spawned workers import torch: slow on a loaded machine
    while len(list((tmp_path / "root").glob("runs/**/started"))) < 2:
        assert time.monotonic() < deadline and driver.poll() is None, "the runs did not start"
        time.sleep(0.2)
    workers = [
        int(pid)
        for pid in subprocess.run(
            ["pgrep", "-P", str(driver.pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    driver.send_signal(signal.SIGINT)  # the driver only, as `kill -INT` does (not the terminal's group)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode != 0 and "KeyboardInterrupt" in stderr and "TypeError" not in stderr
    time.sleep(0.5)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_missing_optional_extra_fails_the_sweep_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marlkd.envs import registry

    real = registry.describe

    def describe(env_id: str):
        if env_id == "fill-in":
            raise MarlkdError("fill-in needs the 'imaginary' extra: pip install 'marlkd[imaginary]'")
        return real(env_id)

    monkeypatch.setattr(registry, "describe", describe)
    with pytest.raises(
        ConfigError,
        match=r"cannot make environment\(s\) fill-in: fill-in needs the "
        r"'imaginary' extra.*--only-env grid-world",
    ):
        run_sweep(parse_spec(MINI), tmp_path, workers=0, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigterm_to_the_cli_driver_stops_the_sweep_and_its_workers(tmp_path: Path) -> None:
    spec_path = tmp_path / "mini.toml"
    sleepy = 'name = "mini"\nrun_fn = "test_experiments:sleepy_run"'
    spec_path.write_text(MINI.replace('name = "mini"', sleepy, 1))
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    argv = [
        "experiment",
        "run",
        str(spec_path),
        "--root",
        str(tmp_path / "root"),
        "--workers",
        "2",
        "--no-progress",
        "--only-env",
        "fill-in",
        "--only-method",
        "idt",
    ]
    cli = "import sys; from marlkd.cli import main; sys.exit(main(sys.argv[1:]))"
    driver = subprocess.Popen(
        [sys.executable, "-c", cli, *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "root").glob("runs/**/started"))) < 2:
        assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True, text=True).stdout.split()
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode not in (0, -signal.SIGTERM) and "interrupted" in out + err, (out, err)
    time.sleep(0.5)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_compute_line_sums_run_wall_times_and_ignores_curve_points() -> None:
    import pandas as pd

    from marlkd.experiments.report import compute_line

    frame = pd.DataFrame(_synthetic_rows("mini"))
    # 10 runs (idt 2 + 3, ours 4 + 1) of 1.0 s each; curve rows carry other times and must not count.
    line = compute_line(frame)
    assert line.startswith("Compute: the 10 runs took 0.0 hours")
    assert "idt 0.0, ours 0.0" in line
    frame.loc[frame["metric"] == "return_mean", "wall_time_s"] = 360.0
    assert compute_line(frame).startswith("Compute: the 10 runs took 1.0 hours")


def test_a_copied_results_table_carries_the_sweep_on_elsewhere(tmp_path: Path) -> None:
    spec = parse_spec(MINI)
    first = run_sweep(
        spec,
        tmp_path / "here",
        workers=0,
        run_fn=fake_run,
        dataset_fn=fake_dataset,
        progress=False,
        max_seeds=1,
    )
    assert first.ok and first.done == first.total
    elsewhere = tmp_path / "elsewhere" / "mini"  # another machine: the committed table only, no run store
    elsewhere.mkdir(parents=True)
    (elsewhere / "results.csv").write_bytes((tmp_path / "here" / "mini" / "results.csv").read_bytes())
    statuses = sweep_status(spec, tmp_path / "elsewhere")
    assert sum(s.status == "done" for s in statuses) == first.total
    rest = run_sweep(
        spec, tmp_path / "elsewhere", workers=0, run_fn=fake_run, dataset_fn=fake_dataset, progress=False
    )
    assert rest.skipped == first.total and rest.done == len(expand(spec)) - first.total
    first_seed = expand(spec)[0].seed
    assert all(_calls(tmp_path / "elsewhere", run) == (run.seed != first_seed) for run in expand(spec))


def test_quick_overrides_apply_to_the_quick_variant_only() -> None:
    text = MINI + "\n[quick.overrides.idt.algo]\ncontext = 3\n\n[quick.overrides.idt.train]\nbatch_size = 4\n"
    spec = parse_spec(text)
    full = {run.run_id: run for run in expand(parse_spec(MINI))}
    assert [run.run_id for run in expand(spec)] == list(full)  # the full variant is untouched
    quick = [run for run in expand(spec, quick=True) if run.method == "idt"]
    assert all(run.config["algo"] == {"context": 3} for run in quick)
    assert all(run.config["train"]["batch_size"] == 4 for run in quick)
    before = {run.run_id for run in expand(parse_spec(MINI), quick=True)}
    after = {run.run_id for run in expand(spec, quick=True)}
    assert {r.split("/")[1] for r in before - after} == {"idt"}  # only the overridden method's ids change
    with pytest.raises(ConfigError, match=r"quick\.overrides\.bc: 'bc' is not one of grid\.methods"):
        parse_spec(MINI + "\n[quick.overrides.bc.algo]\nx = 1\n")


def test_each_run_records_the_code_revision_of_the_process_that_trained_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's driver can outlive commits (an editable install: each worker imports the code anew): the
    revision in the results is the one the run's worker read when it started, not the driver's at the end."""
    from marlkd.experiments import workers

    head = {"n": 0}

    def current() -> dict[str, str]:
        return {"marlkd_version": "0.1.0", "torch_version": "2.13.0", "code_revision": f"rev{head['n']}"}

    def run_then_commit(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
        (run_dir / "started_at.txt").write_text(f"rev{head['n']}")
        result = fake_run(run, run_dir, dataset)
        head["n"] += 1  # a commit lands while the run trains
        return result

    monkeypatch.setattr(workers, "provenance", current)
    spec = parse_spec(MINI)
    summary = run_sweep(
        spec, tmp_path, workers=0, run_fn=run_then_commit, dataset_fn=fake_dataset, progress=False
    )
    assert summary.ok and summary.done == 8
    table = load_results(tmp_path, spec)
    for run in expand(spec):
        started = (run_dir_for(tmp_path, run) / "started_at.txt").read_text()
        assert set(table.loc[table["run_id"] == run.run_id, "code_revision"]) == {started}
