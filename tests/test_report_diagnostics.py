"""ours's distillation diagnostics as results-table curves and as the report's figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from marlkd.experiments.parsing import load_spec
from marlkd.experiments.plots import plot_diagnostics
from marlkd.experiments.results import CURVE_PREFIX, curve_points


def test_curve_points_keep_returns_and_the_listed_diagnostics_only() -> None:
    records = [
        {"step": 50, "wall_time_s": 1.0, "metric": metric, "value": 0.5}
        for metric in ("eval/return_mean", "distill/angle_corr", "distill/collapse_update", "loss/action")
    ]
    kept = {p["metric"] for p in curve_points(records)}
    assert kept == {CURVE_PREFIX + "eval/return_mean", CURVE_PREFIX + "distill/angle_corr"}


def _frame() -> pd.DataFrame:
    rows = []
    for quality in ("normal", "poor"):
        for variant, ablation, level in (
            ("Ours (full method)", "full", 0.1),
            ("Ours (raw teacher)", "raw-teacher", 0.8),
        ):
            for seed in range(2):
                for step in (50, 100, 150):
                    for metric in ("distill/angle_corr", "distill/mapped_cosine_student"):
                        rows.append(
                            dict(
                                variant=variant,
                                method="ours",
                                ablation=ablation,
                                env="grid-world",
                                quality=quality,
                                run_id=f"{quality}/{ablation}/s{seed}",
                                metric=CURVE_PREFIX + metric,
                                value=level + 0.01 * seed,
                                train_steps=float(step),
                            )
                        )
    return pd.DataFrame(rows)


def test_one_figure_per_task_with_a_panel_per_recorded_diagnostic(tmp_path: Path) -> None:
    spec = load_spec("table3")
    figures = plot_diagnostics(_frame(), spec, "variant", tmp_path)
    assert [title for title, _ in figures] == ["Grid-World / normal", "Grid-World / poor"]
    for _, path in figures:
        assert path.is_file() and path.stat().st_size > 1000
    assert plot_diagnostics(_frame().assign(metric="curve:eval/return_mean"), spec, "variant", tmp_path) == []
