"""Runs a spec no longer asks for, set beside the runs that replaced them.

When a value of a spec changes (a method's tuned settings, a budget), the affected runs get new run ids and
are trained again; the old runs stay in the results table. The report leaves them out of its tables, and
this section shows, for every cell that has both, the earlier runs' mean beside the current runs' mean and
the difference with a two-sample bootstrap interval: what the change did to the numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marlkd.experiments.headroom import _in_task, _task_label, _tasks
from marlkd.experiments.schema import SweepSpec
from marlkd.experiments.stats import mean_difference_stat, two_sample_bootstrap_ci
from marlkd.experiments.tables import ROW_HEADERS, fmt, markdown, order_key, section, value_label

if TYPE_CHECKING:
    import pandas as pd


def _cell(values: np.ndarray) -> str:
    std = fmt(float(values.std(ddof=1))) if values.size > 1 else "n/a"
    return f"{fmt(float(values.mean()))} ± {std} ({values.size})"


def superseded_table(
    frame: pd.DataFrame,
    current: set[str],
    spec: SweepSpec,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> str:
    """Markdown: per (row, task) cell holding both current runs (run id in ``current``) and earlier ones,
    their means ± std (n) of the report's metric and current − earlier with its interval; empty when no
    cell has both."""
    rows, metric = spec.report.rows, spec.report.metric
    data = frame[frame["metric"] == metric]
    is_current = data["run_id"].isin(current).to_numpy()
    body = []
    for row in sorted(set(data[rows]), key=order_key(spec, rows)):
        mine = data[rows].to_numpy() == row
        for task in _tasks(data[mine], spec):
            part = _in_task(data[mine], spec, task)
            now_mask = part["run_id"].isin(current).to_numpy()
            values = part["value"].astype(float).to_numpy()
            now, before = values[now_mask & ~np.isnan(values)], values[~now_mask & ~np.isnan(values)]
            if not (now.size and before.size):
                continue
            low, high = two_sample_bootstrap_ci(
                now, before, mean_difference_stat, reps=reps, confidence=confidence, seed=seed
            )
            label = value_label(rows, row) if rows != "variant" else str(row)
            body.append(
                [
                    label,
                    _task_label(spec, task),
                    _cell(before),
                    _cell(now),
                    f"{fmt(float(now.mean() - before.mean()))} [{fmt(low)}, {fmt(high)}]",
                ]
            )
    if not body or not is_current.any():
        return ""
    header = [
        ROW_HEADERS.get(rows, rows),
        "Task",
        "Earlier runs",
        "Current runs",
        f"Current − earlier [{confidence:.0%} CI]",
    ]
    return markdown(header, body)


def superseded_section(
    frame: pd.DataFrame,
    current: set[str],
    spec: SweepSpec,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[str]:
    """The report's "Earlier runs" section (Markdown lines); empty when there is nothing to compare."""
    return section(
        "Earlier runs beside the current ones",
        superseded_table(frame, current, spec, reps=reps, confidence=confidence, seed=seed),
        f"Cells where the results table also holds runs made under earlier values of the spec (other run "
        f"ids: a method's settings or budget changed since): {spec.report.metric}, mean ± std (n) of each "
        f"group and the difference of means, current minus earlier, with a {confidence:.0%} two-sample "
        f"bootstrap interval ({reps} resamples). Earlier runs of several older settings are pooled. The "
        "tables above hold the current runs only.",
    )
