"""Whether a sweep's data can tell its methods apart, and how often ours beats each other method.

The headroom table gives, per task (a combination of the report's column values, e.g. environment and data
quality): the data's mean and best per-agent episode return and the expert's (recorded by every run as
``data/*`` metrics), the best method and its mean, the spread between the methods' means against the seeds'
noise, and the gap between the centralized teacher and IDT (the most that distillation could pass on to
decentralized students). The improvement table gives rliable's probability of improvement P(ours > method)
per task, with a bootstrap interval.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from marlkd.experiments.schema import SweepSpec
from marlkd.experiments.stats import (
    improvement_stat,
    mean_difference_stat,
    probability_of_improvement,
    two_sample_bootstrap_ci,
)
from marlkd.experiments.tables import fmt, markdown, order_key, section, value_label

if TYPE_CHECKING:
    import pandas as pd

# Metrics each run records about its dataset (``marlkd.training``): returns are per-agent episode returns.
DATA_METRICS = ("data/mean_return", "data/best_return", "data/expert_return")
TEACHER_METRIC = "teacher/return_mean"  # the centralized teacher's own return, recorded by ``ours`` runs
OURS, IDT, TEACHER = "ours", "idt", "teacher"


def _tasks(frame: pd.DataFrame, spec: SweepSpec) -> list[tuple]:
    columns = list(spec.report.columns)
    keys = list(dict.fromkeys(tuple(r) for r in frame[columns].itertuples(index=False)))
    order = [order_key(spec, c) for c in columns]
    return sorted(keys, key=lambda k: tuple(f(v) for f, v in zip(order, k, strict=True)))


def _task_label(spec: SweepSpec, task: tuple) -> str:
    return " / ".join(value_label(c, v) for c, v in zip(spec.report.columns, task, strict=True))


def _in_task(frame: pd.DataFrame, spec: SweepSpec, task: tuple) -> pd.DataFrame:
    selected = np.ones(len(frame), dtype=bool)
    for column, value in zip(spec.report.columns, task, strict=True):
        selected &= (frame[column] == value).to_numpy() | (frame[column].isna() & (value != value)).to_numpy()
    return frame[selected]


def _values(part: pd.DataFrame, rows: str, row: str | None, metric: str) -> np.ndarray:
    data = part[part["metric"] == metric]
    if row is not None:
        data = data[data[rows] == row]
    values = data["value"].astype(float).to_numpy()
    return values[~np.isnan(values)]


def _row_of(frame: pd.DataFrame, rows: str, method: str) -> str | None:
    """The row value (e.g. the display name in ``variant``) of ``method``'s runs, when one row holds them
    all and nothing else."""
    labels = set(frame.loc[frame["method"] == method, rows])
    if len(labels) != 1:
        return None
    (label,) = labels
    return label if set(frame.loc[frame[rows] == label, "method"]) == {method} else None


def _first(part: pd.DataFrame, metric: str) -> float:
    values = _values(part, "", None, metric)
    return float(values[0]) if values.size else math.nan


def _teacher_gap(part: pd.DataFrame, rows: str, runs: dict, reps: int, confidence: float, seed: int) -> str:
    """Teacher's mean return minus IDT's, with its interval (the teacher's runs, else ``ours``'s record of
    its teacher); n/a when either is missing."""
    idt, teacher_row, ours = (_row_of(part, rows, m) for m in (IDT, TEACHER, OURS))
    if teacher_row in runs:
        teacher = runs[teacher_row]
    else:
        teacher = _values(part, rows, ours, TEACHER_METRIC) if ours is not None else np.array([])
    if not teacher.size or idt not in runs:
        return "n/a"
    low, high = two_sample_bootstrap_ci(
        teacher, runs[idt], mean_difference_stat, reps=reps, confidence=confidence, seed=seed
    )
    return f"{fmt(float(teacher.mean() - runs[idt].mean()))} [{fmt(low)}, {fmt(high)}]"


def headroom_table(
    frame: pd.DataFrame, spec: SweepSpec, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> str:
    """The headroom table (Markdown) of a sweep's results frame; empty when the main metric has no rows."""
    rows, metric = spec.report.rows, spec.report.metric
    body = []
    for task in _tasks(frame, spec):
        part = _in_task(frame, spec, task)
        methods = [m for m in dict.fromkeys(part.loc[part["metric"] == metric, rows]) if m == m]
        runs = {m: _values(part, rows, m, metric) for m in methods}
        runs = {m: v for m, v in runs.items() if v.size}
        if not runs:
            continue
        means = {m: float(v.mean()) for m, v in runs.items()}
        ranked = sorted(means.values(), reverse=True)
        best = max(means, key=means.get)
        lead = ranked[0] - ranked[1] if len(ranked) > 1 else math.nan
        stds = [float(v.std(ddof=1)) for v in runs.values() if v.size > 1]
        noise = float(np.median(stds)) if stds else math.nan
        ratio = lead / noise if noise and not math.isnan(noise) else math.nan
        gap = _teacher_gap(part, rows, runs, reps, confidence, seed)
        body.append(
            [
                _task_label(spec, task),
                *(fmt(_first(part, m)) for m in DATA_METRICS),
                f"{value_label(rows, best) if rows != 'variant' else best} {fmt(means[best])}",
                fmt(ranked[0] - ranked[-1]),
                fmt(lead),
                fmt(noise),
                fmt(ratio),
                gap,
            ]
        )
    if not body:
        return ""
    header = [
        "Task",
        "Data mean",
        "Data best",
        "Expert",
        "Best method",
        "Spread",
        "Lead",
        "Seed noise",
        "Lead / noise",
        f"Teacher − IDT [{confidence:.0%} CI]",
    ]
    return markdown(header, body)


def improvement_table(
    frame: pd.DataFrame, spec: SweepSpec, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> str:
    """P(ours > method) [interval] per other method (rows) and task (columns); empty without ``ours``."""
    rows, metric = spec.report.rows, spec.report.metric
    data = frame[frame["metric"] == metric]
    ours = _row_of(data, rows, OURS)
    if ours is None:
        return ""
    tasks = _tasks(data, spec)
    others = [m for m in sorted(set(data[rows]) - {ours}, key=order_key(spec, rows))]
    body = []
    for other in others:
        line = [value_label(rows, other) if rows != "variant" else str(other)]
        for task in tasks:
            part = _in_task(data, spec, task)
            mine, theirs = _values(part, rows, ours, metric), _values(part, rows, other, metric)
            if not (mine.size and theirs.size):
                line.append("—")
                continue
            low, high = two_sample_bootstrap_ci(
                mine, theirs, improvement_stat, reps=reps, confidence=confidence, seed=seed
            )
            line.append(f"{fmt(probability_of_improvement(mine, theirs))} [{fmt(low)}, {fmt(high)}]")
        body.append(line)
    return markdown(["P(ours > method)", *(_task_label(spec, t) for t in tasks)], body)


def headroom_sections(
    frame: pd.DataFrame, spec: SweepSpec, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> list[str]:
    """The report's "Headroom" and "Probability of improvement" sections (Markdown lines)."""
    headroom = section(
        "Headroom: can this data tell the methods apart?",
        headroom_table(frame, spec, reps=reps, confidence=confidence, seed=seed),
        "Data mean / best: the dataset's mean and best per-agent episode return; Expert: the "
        "return of the policy the data was made from (n/a: not recorded). Spread: the best minus "
        "the worst method's mean; Lead: the best minus the second best; Seed noise: the median "
        "over methods of the standard deviation over seeds; a lead of about one seed noise or less "
        "cannot tell the best method. Teacher − IDT: the centralized teacher's mean return minus "
        "IDT's, with a two-sample bootstrap interval: the most that distillation into "
        "decentralized students could add.",
    )
    improvement = section(
        "Probability of improvement",
        improvement_table(frame, spec, reps=reps, confidence=confidence, seed=seed),
        "P(X > Y) over pairs of runs (seeds) of ours and the method, ties counted half (rliable's "
        f"probability of improvement); {confidence:.0%} interval: bootstrap resampling each side's runs, "
        f"{reps} resamples. Above 0.5 ours tends to win; an interval that holds 0.5 is a tie.",
    )
    return headroom + improvement
