"""The report's matplotlib plots: the final metric against a setting, and learning curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marlkd import atomic
from marlkd.experiments.results import CURVE_PREFIX
from marlkd.experiments.schema import SweepSpec
from marlkd.experiments.tables import order_key, value_label

if TYPE_CHECKING:
    import pandas as pd


def _figure(n_panels: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    ncols = min(4, max(1, n_panels))
    nrows = math.ceil(max(1, n_panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:  # as many legend columns as the figure's width holds (about 1.9 inches each)
        ncols = max(1, min(len(labels), int(fig.get_figwidth() // 1.9)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small")
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def _facets(frame: pd.DataFrame, spec: SweepSpec, columns: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not columns:
        return [("", frame)]
    key_fns = [order_key(spec, c) for c in columns]
    groups = list(frame.groupby(list(columns), sort=False, dropna=False))
    groups.sort(key=lambda item: tuple(f(v) for f, v in zip(key_fns, item[0], strict=True)))
    return [
        (" / ".join(value_label(c, v) for c, v in zip(columns, values, strict=True)), part)
        for values, part in groups
    ]


def plot_against_setting(
    frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, axis: str, path: Path
) -> Path | None:
    """``metric`` (mean ± std over runs) against a numeric setting (``num_trajectories``: 0 is plotted
    at the dataset's size), one panel per other report column, one line per row value."""
    data = frame[frame["metric"] == metric].copy()
    if data.empty:
        return None
    if axis == "num_trajectories":
        data[axis] = data[axis].where(data[axis] > 0, data["dataset_episodes"])
    facet_columns = [c for c in spec.report.columns if c != axis]
    facets = _facets(data, spec, facet_columns)
    fig, axes = _figure(len(facets))
    key = order_key(spec, rows)
    for ax, (title, part) in zip(axes, facets, strict=True):
        for value in sorted(part[rows].unique(), key=key):
            stats = part[part[rows] == value].groupby(axis)["value"].agg(["mean", "std"]).sort_index()
            x = stats.index.to_numpy(dtype=float)
            mean, std = stats["mean"].to_numpy(), stats["std"].fillna(0).to_numpy()
            ax.plot(x, mean, marker="o", label=value_label(rows, value) if rows != "variant" else value)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        xs = data[axis].dropna()
        if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    _save(fig, path)
    return path


def _mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs' curves; runs sampled at different x are interpolated onto a shared grid."""
    xs = [x for x, _ in curves]
    if all(len(x) == len(xs[0]) and np.allclose(x, xs[0]) for x in xs):
        grid = xs[0]
        ys = np.stack([y for _, y in curves])
    else:
        low, high = max(x.min() for x in xs), min(x.max() for x in xs)
        if not high > low:
            low, high = min(x.min() for x in xs), max(x.max() for x in xs)
        grid = np.linspace(low, high, 100)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def curve_metric_of(frame: pd.DataFrame, spec: SweepSpec) -> str | None:
    """The learning-curve metric to plot: the spec's, or the first ``curve:`` metric about returns."""
    names = sorted(m for m in frame["metric"].unique() if str(m).startswith(CURVE_PREFIX))
    if spec.report.curve_metric:
        return spec.report.curve_metric if spec.report.curve_metric in names else None
    for wanted in ("return_mean", "return"):
        for name in names:
            if wanted in name:
                return name
    return None


_AXIS_LABELS = {
    "train_steps": "training updates",
    "wall_time_s": "wall-clock time (s)",
    "env_steps": "environment steps",
}
# Reference lines: the training data's mean per-agent return and the expert's (recorded by training).
_REFERENCES = (
    ("data/mean_return", "data's return", ":", "0.35"),
    ("data/expert_return", "expert", "--", "0.1"),
)


def metric_label(metric: str) -> str:
    """A readable axis name: ``curve:eval/return_mean`` -> ``mean per-agent return``; a diagnostic
    policy's (``teacher/eval/return_mean``) names it."""
    name = metric[len(CURVE_PREFIX) :] if metric.startswith(CURVE_PREFIX) else metric
    owner, _, rest = name.rpartition("/")
    owner = owner.removesuffix("/eval").removesuffix("eval")
    if rest == "return_mean":
        return "mean per-agent return" + (f" ({owner})" if owner else "")
    if rest == "return_std":
        return "std of the per-agent return" + (f" ({owner})" if owner else "")
    return name.replace("_", " ").replace("/", ": ")


def _reference_lines(frame: pd.DataFrame, run_ids: Any) -> list[tuple[str, float, str, str]]:
    """(label, value, style, colour) of the data's and the expert's return where every run of the panel
    recorded the same value."""
    lines = []
    runs = frame[frame["run_id"].isin(run_ids)]
    for metric, label, style, colour in _REFERENCES:
        values = runs.loc[runs["metric"] == metric, "value"].astype(float).dropna()
        if len(values) and np.allclose(values, values.iloc[0], rtol=1e-6, atol=1e-9):
            lines.append((label, float(values.iloc[0]), style, colour))
    return lines


def _first_phase(frame: pd.DataFrame, run_ids: Any) -> float:
    """Updates a run spends before its own policy trains (ours: its teacher's), from the runs' total
    updates and their ``steps``; 0 when there is none or the runs record no ``teacher/`` metric."""
    runs = frame[frame["run_id"].isin(run_ids)]
    if not runs["metric"].astype(str).str.startswith("teacher/").any():  # only a method with a teacher
        return 0.0
    phases = []
    for _, run in runs.groupby("run_id"):
        total, steps = run["train_steps"].max(), run["steps"].dropna()
        if len(steps) and np.isfinite(total) and total > float(steps.iloc[0]) > 0:
            phases.append(total - float(steps.iloc[0]))
    return float(np.mean(phases)) if phases else 0.0


def _run_curves(part: pd.DataFrame, axis: str) -> list[tuple[np.ndarray, np.ndarray]]:
    curves = []
    for _, run in part.groupby("run_id"):
        run = run.sort_values(axis)
        curves.append((run[axis].to_numpy(dtype=float), run["value"].to_numpy(dtype=float)))
    return curves


def plot_curves(
    frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, axis: str, path: Path
) -> Path | None:
    """Learning curves: ``metric`` (a ``curve:`` metric) against ``axis`` (``train_steps``, ``wall_time_s``
    or ``env_steps``), mean ± std over runs, one panel per report column, one line per row value, with
    horizontal lines at the data's and the expert's return.

    Against training updates, a method that trains something else first (ours: its teacher, for the first
    ``train_steps - steps`` updates) has that phase shaded; its own curve starts after it, and the teacher's
    evaluations (``teacher/eval/return_mean``, logged with ``eval.every``) are drawn dashed inside it."""
    data = frame[(frame["metric"] == metric) & frame[axis].notna()]
    if data.empty:
        return None
    name = metric[len(CURVE_PREFIX) :]
    teacher_metric = CURVE_PREFIX + "teacher/" + name
    facets = _facets(data, spec, spec.report.columns)
    fig, axes = _figure(len(facets))
    key = order_key(spec, rows)
    for ax, (title, part) in zip(axes, facets, strict=True):
        for value in sorted(part[rows].unique(), key=key):
            label = value_label(rows, value) if rows != "variant" else value
            runs = part[part[rows] == value]
            phase = _first_phase(frame, runs["run_id"].unique()) if axis == "train_steps" else 0.0
            grid, mean, std = _mean_curve(_run_curves(runs, axis))
            after = grid >= phase if phase else np.ones_like(grid, dtype=bool)
            (line,) = ax.plot(grid[after], mean[after], label=label)
            ax.fill_between(grid[after], (mean - std)[after], (mean + std)[after], alpha=0.2)
            if not phase:
                continue
            ax.axvspan(0, phase, color=line.get_color(), alpha=0.06, label=f"{label}: teacher phase")
            teacher = frame[
                (frame["metric"] == teacher_metric) & frame["run_id"].isin(runs["run_id"].unique())
            ]
            teacher = teacher[teacher[axis].notna() & (teacher[axis] <= phase)]
            if not teacher.empty:
                t_grid, t_mean, _ = _mean_curve(_run_curves(teacher, axis))
                ax.plot(t_grid, t_mean, linestyle="--", color=line.get_color(), label=f"{label}: its teacher")
        for ref_label, level, style, colour in _reference_lines(frame, part["run_id"].unique()):
            ax.axhline(level, linestyle=style, color=colour, linewidth=1.0, label=ref_label)
        ax.set_title(title)
        ax.set_xlabel(_AXIS_LABELS[axis])
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    _save(fig, path)
    return path


# Titles of the distillation diagnostics' panels (marlkd.experiments.results.DIAGNOSTIC_CURVES).
_DIAGNOSTIC_TITLES = {
    "distill/angle_corr": "corr(teacher's angle, students' mapped angle)",
    "distill/mapped_cosine_student": "cosine between samples through N (1: collapse)",
    "distill/angle_mapped_student_std": "spread of the students' mapped angles (deg)",
    "distill/angle_teacher_std": "spread of the teacher's angles (deg)",
    "distill/grad_norm_rel": "|gradient of α L_rel| into the students",
    "distill/grad_norm_kl": "|gradient of β L_KL| into the students",
    "distill/l_rel": "L_rel per agent",
    "distill/l_kl": "L_KL per agent",
}


def plot_diagnostics(frame: pd.DataFrame, spec: SweepSpec, rows: str, folder: Path) -> list[tuple[str, Path]]:
    """``ours``'s distillation diagnostics against training updates: one figure per task (combination of
    the report's columns), one panel per diagnostic, one line per row value (mean ± std over its runs).
    Returns (task title, figure path) per task with diagnostics; none when no run recorded them."""
    names = [m for m in _DIAGNOSTIC_TITLES if (frame["metric"] == CURVE_PREFIX + m).any()]
    data = frame[frame["metric"].isin([CURVE_PREFIX + m for m in names]) & frame["train_steps"].notna()]
    if data.empty:
        return []
    key = order_key(spec, rows)
    figures = []
    for index, (title, part) in enumerate(_facets(data, spec, spec.report.columns)):
        fig, axes = _figure(len(names))
        for ax, name in zip(axes, names, strict=True):
            panel = part[part["metric"] == CURVE_PREFIX + name]
            for value in sorted(panel[rows].unique(), key=key):
                runs = panel[panel[rows] == value]
                grid, mean, std = _mean_curve(_run_curves(runs, "train_steps"))
                label = value_label(rows, value) if rows != "variant" else value
                ax.plot(grid, mean, label=label)
                ax.fill_between(grid, mean - std, mean + std, alpha=0.15)
            ax.set_title(_DIAGNOSTIC_TITLES[name], fontsize="medium")
            ax.set_xlabel(_AXIS_LABELS["train_steps"])
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        path = folder / f"diagnostics_{index}.png"
        _save(fig, path)
        figures.append((title, path))
    return figures
