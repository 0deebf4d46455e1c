"""The report's learning curves: readable axis names, the data's and the expert's return as reference
lines, and ours's teacher phase shaded with the teacher's own curve in it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from marlkd.experiments import load_results, load_spec, run_sweep
from marlkd.experiments.plots import metric_label
from marlkd.experiments.report import write_report
from marlkd.experiments.spec import RunSpec
from test_experiments import fake_dataset


def teacher_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Like the training loop on the convergence sweep: ours trains its teacher for ``steps`` updates
    (its students flat at 0 meanwhile, the teacher's evaluations rising), then its students."""
    phase = run.steps if run.method == "ours" else 0
    updates = run.steps + phase
    every = run.config["eval"]["every"]
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "wall_time_s", "metric", "value"])
        for step in range(every, updates + 1, every):
            student = 0.0 if step <= phase else (step - phase) / run.steps
            writer.writerow([step, 0.01 * step, "eval/return_mean", student])
            if run.method == "ours":
                writer.writerow([step, 0.01 * step, "teacher/eval/return_mean", min(step, phase) / run.steps])
    results = {"return_mean": 1.0, "train_steps": updates, "data/mean_return": 0.4, "data/expert_return": 1.2}
    if run.method == "ours":
        results["teacher/return_mean"] = 1.1
    return results


def test_metric_labels() -> None:
    assert metric_label("curve:eval/return_mean") == "mean per-agent return"
    assert metric_label("curve:teacher/eval/return_mean") == "mean per-agent return (teacher)"
    assert metric_label("return_mean") == "mean per-agent return"
    assert metric_label("curve:eval/win_rate") == "eval: win rate"


def test_curves_show_references_and_the_teacher_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec("convergence")
    summary = run_sweep(
        spec,
        tmp_path,
        quick=True,
        workers=0,
        run_fn=teacher_run,
        dataset_fn=fake_dataset,
        progress=False,
        only_envs=["grid-world"],
        only_methods=["idt", "ours"],
    )
    assert summary.ok
    assert not load_results(tmp_path, spec, quick=True).empty
    figures: dict[str, Any] = {}
    import marlkd.experiments.plots as plots_module

    real_save = plots_module._save

    def keep(fig: Any, path: Path) -> None:
        figures[path.name] = fig
        real_save(fig, path)

    monkeypatch.setattr(plots_module, "_save", keep)
    write_report(spec, tmp_path, quick=True, bootstrap_reps=50)
    (ax,) = [a for a in figures["curve_vs_train_steps.png"].axes if a.get_visible() and a.get_title()]
    assert ax.get_ylabel() == "mean per-agent return" and ax.get_xlabel() == "training updates"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"IDT", "Ours", "Ours: its teacher", "data's return", "expert"}
    assert lines["data's return"].get_ydata()[0] == pytest.approx(0.4)
    assert lines["expert"].get_ydata()[0] == pytest.approx(1.2)
    steps = 200  # the quick convergence spec: 200 updates, evaluated every 20
    ours_x, ours_y = lines["Ours"].get_data()
    assert ours_x.min() >= steps and ours_x.max() == pytest.approx(2 * steps)  # after the teacher phase
    teacher_x, teacher_y = lines["Ours: its teacher"].get_data()
    assert teacher_x.max() <= steps and teacher_y[-1] == pytest.approx(1.0)  # the teacher learned meanwhile
    assert [p.get_label() for p in ax.patches if p.get_label() == "Ours: teacher phase"]
    # the wall-time axis keeps whole curves (no phase is inferred there)
    (wall,) = [a for a in figures["curve_vs_wall_time_s.png"].axes if a.get_visible() and a.get_title()]
    assert "Ours: its teacher" not in {line.get_label() for line in wall.get_lines()}
