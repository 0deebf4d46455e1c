"""Reports drawn from a sweep's results table alone: Markdown tables in the paper's layout, robust
statistics (interquartile mean and stratified-bootstrap confidence intervals, as rliable computes them)
and matplotlib plots, written to ``<root>/<sweep>/report/``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marlkd.errors import MarlkdError
from marlkd.experiments.results import CURVE_PREFIX, load_results, results_path, sweep_dir
from marlkd.experiments.runner import DEFAULT_ROOT
from marlkd.experiments.spec import (
    ABLATION_METHOD,
    QUALITIES,
    SweepSpec,
    env_name,
    expand,
    load_spec,
    variant_name,
)

if TYPE_CHECKING:
    import pandas as pd

# ----------------------------------------------------------------------------------------------------
# Statistics


def iqm(values: Any, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the values left after cutting ``int(0.25 n)`` from each end of
    the sorted values along ``axis`` (``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM)."""
    array = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = array.shape[axis]
    if n == 0:
        raise ValueError("the IQM of no values is undefined")
    cut = int(0.25 * n)
    return np.take(array, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(
    tasks: Sequence[Any],
    statistic: Callable[[np.ndarray], np.ndarray] = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` over all runs of all tasks, by a bootstrap that
    resamples runs with replacement within each task (rliable's ``StratifiedBootstrap``).

    Args:
        tasks: one 1-D array of run scores per task (the runs of a task may differ in number).
        statistic: maps ``(reps, runs)`` to ``(reps,)`` along the last axis; default :func:`iqm`.
        reps: bootstrap resamples.
        confidence: the interval's coverage.
        seed: seeds the resampling (the same inputs give the same interval).
    """
    arrays = [np.asarray(task, dtype=float).ravel() for task in tasks]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        raise ValueError("no scores to bootstrap")
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays], axis=1)
    stats = statistic(resampled)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _rliable_ci(tasks: Sequence[np.ndarray], reps: int, confidence: float,
                seed: int) -> tuple[float, float] | None:
    """The same interval computed by the ``rliable`` package, when it is installed and the tasks have
    equal numbers of runs (its score matrices are runs x tasks)."""
    if len({len(t) for t in tasks}) != 1:
        return None
    try:
        from rliable import library as rly
        from rliable import metrics as rly_metrics
    except ImportError:
        return None
    scores = np.stack([np.asarray(t, dtype=float) for t in tasks], axis=1)  # (runs, tasks)
    saved = np.random.get_state()
    np.random.seed(seed)  # rliable resamples with NumPy's global generator
    try:
        _, intervals = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([rly_metrics.aggregate_iqm(s)]), reps=reps,
            confidence_interval_size=confidence)
    finally:
        np.random.set_state(saved)
    return float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


@dataclass(frozen=True)
class CellStats:
    """Summary of one table cell's runs: mean, sample std (ddof 1; 0 for one run), count, IQM and its
    bootstrap confidence interval."""

    mean: float
    std: float
    n: int
    iqm: float
    ci_low: float
    ci_high: float


def cell_stats(values: Any, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0,
               use_rliable: bool = False) -> CellStats:
    """:class:`CellStats` of one cell's run values (NaNs dropped)."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return CellStats(math.nan, math.nan, 0, math.nan, math.nan, math.nan)
    interval = _rliable_ci([array], reps, confidence, seed) if use_rliable else None
    if interval is None:
        interval = stratified_bootstrap_ci([array], reps=reps, confidence=confidence, seed=seed)
    std = float(array.std(ddof=1)) if n > 1 else 0.0
    return CellStats(float(array.mean()), std, n, float(iqm(array)), *interval)


# ----------------------------------------------------------------------------------------------------
# Tables


def _order_key(spec: SweepSpec, column: str) -> Callable[[Any], Any]:
    """Sort key of a group column's values: the spec's order where it has one."""
    if column == "variant":
        names: list[str] = []
        for method in spec.methods:
            ablations = spec.settings.ablation if method == ABLATION_METHOD else ()
            names.extend(variant_name(method, a) for a in ablations or ("",))
        rank = {name: i for i, name in enumerate(dict.fromkeys(names))}
    elif column == "method":
        rank = {m: i for i, m in enumerate(spec.methods)}
    elif column == "env":
        rank = {e: i for i, e in enumerate(spec.envs)}
    elif column == "quality":
        rank = {q: i for i, q in enumerate(QUALITIES)}
    elif column == "ablation":
        rank = {a: i for i, a in enumerate(spec.settings.ablation)}
    elif column == "precision":
        swept = [*spec.settings.precision, *spec.quick.settings.get("precision", ()),
                 *(p for entry in spec.per_env.values() for p in entry.get("precision", ()))]
        rank = {p: i for i, p in enumerate(dict.fromkeys(swept))}
    else:
        return lambda value: (0, value)
    return lambda value: (rank.get(value, len(rank)), str(value))


def _label(column: str, value: Any) -> str:
    if column == "env":
        return env_name(str(value))
    if column == "ablation":
        return variant_name(ABLATION_METHOD, str(value)) if value else "(none)"
    if column == "num_trajectories":
        return "all trajectories" if int(value) == 0 else f"{int(value)} trajectories"
    if column == "precision":
        return str(value) if value else "(not swept)"
    if column in ("steps", "eval_episodes", "dataset_episodes"):
        return f"{column.replace('_', ' ')} {int(value)}"
    return str(value)


def summarize(frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, columns: Sequence[str], *,
              reps: int = 2000, confidence: float = 0.95, seed: int = 0,
              use_rliable: bool = False) -> pd.DataFrame:
    """One row per (row value, column values) cell of ``metric``'s final values (one per run), with the
    :class:`CellStats` fields, in the spec's order."""
    import pandas as pd

    data = frame[frame["metric"] == metric]
    keys = [rows, *columns]
    records = []
    for group, part in data.groupby(keys, sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        stats = cell_stats(part["value"].to_numpy(), reps=reps, confidence=confidence, seed=seed,
                           use_rliable=use_rliable)
        records.append({**dict(zip(keys, group, strict=True)), **stats.__dict__})
    table = pd.DataFrame.from_records(records, columns=[*keys, *CellStats.__dataclass_fields__])
    if table.empty:
        return table
    sort_keys = [_order_key(spec, k) for k in keys]
    order = sorted(range(len(table)), key=lambda i: tuple(f(table.iloc[i][k]) for f, k in zip(sort_keys, keys,
                                                                                              strict=True)))
    return table.iloc[order].reset_index(drop=True)


_ROW_HEADERS = {"variant": "Method", "method": "Method", "ablation": "Variant", "env": "Environment",
                "quality": "Data quality", "num_trajectories": "Trajectories", "precision": "Precision"}


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.2f}"


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def markdown_table(summary: pd.DataFrame, rows: str, columns: Sequence[str], *, robust: bool = False,
                   bold_best: bool = True) -> str:
    """A Markdown table of a :func:`summarize` result: rows x column combinations; cells ``mean ± std (n)``
    or, with ``robust``, ``IQM [low, high]``. The highest mean (IQM) per column is in bold."""
    if summary.empty:
        return "_no results_"
    row_values = list(dict.fromkeys(summary[rows]))
    col_values = list(dict.fromkeys(tuple(r) for r in summary[list(columns)].itertuples(index=False)))
    lookup = {(r[rows], tuple(r[c] for c in columns)): r for r in summary.to_dict("records")}
    score = "iqm" if robust else "mean"
    best: dict[tuple, float] = {}
    for col in col_values:
        scores = [lookup[(r, col)][score] for r in row_values if (r, col) in lookup]
        scores = [s for s in scores if not math.isnan(s)]
        if bold_best and len(scores) > 1:
            best[col] = max(scores)
    header = [_ROW_HEADERS.get(rows, rows.replace("_", " ").capitalize())]
    header += [" / ".join(_label(c, v) for c, v in zip(columns, col, strict=True)) for col in col_values]
    body = []
    for r in row_values:
        line = [_label(rows, r) if rows != "variant" else str(r)]
        for col in col_values:
            cell = lookup.get((r, col))
            if cell is None or cell["n"] == 0:
                line.append("—")
                continue
            text = (f"{_fmt(cell['iqm'])} [{_fmt(cell['ci_low'])}, {_fmt(cell['ci_high'])}]" if robust
                    else f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])} ({cell['n']})")
            line.append(f"**{text}**" if col in best and cell[score] == best[col] else text)
        body.append(line)
    return _markdown(header, body)


def aggregate_table(frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, *, reps: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> str:
    """IQM of ``metric`` over all runs of all environments per row value, with the stratified bootstrap
    interval (tasks = environment and other setting combinations)."""
    data = frame[frame["metric"] == metric]
    if data.empty:
        return ""
    task_columns = ["env", "quality", "num_trajectories", "precision", "steps", "eval_episodes",
                    "dataset_episodes"]
    key = _order_key(spec, rows)
    body = []
    for value in sorted(data[rows].unique(), key=key):
        part = data[data[rows] == value]
        tasks = [g["value"].dropna().to_numpy() for _, g in part.groupby(task_columns, dropna=False)]
        scores = np.concatenate(tasks)
        low, high = stratified_bootstrap_ci(tasks, reps=reps, confidence=confidence, seed=seed)
        body.append([_label(rows, value) if rows != "variant" else str(value), _fmt(float(iqm(scores))),
                     f"[{_fmt(low)}, {_fmt(high)}]", _fmt(float(scores.mean())), str(scores.size),
                     str(len(tasks))])
    return _markdown([_ROW_HEADERS.get(rows, rows), "IQM", f"{confidence:.0%} CI", "Mean", "Runs",
                      "Tasks"], body)


# ----------------------------------------------------------------------------------------------------
# Plots


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
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize="small")
    fig.savefig(path, dpi=120)


def _facets(frame: pd.DataFrame, spec: SweepSpec, columns: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not columns:
        return [("", frame)]
    key_fns = [_order_key(spec, c) for c in columns]
    groups = list(frame.groupby(list(columns), sort=False, dropna=False))
    groups.sort(key=lambda item: tuple(f(v) for f, v in zip(key_fns, item[0], strict=True)))
    return [(" / ".join(_label(c, v) for c, v in zip(columns, values, strict=True)), part)
            for values, part in groups]


def plot_against_setting(frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, axis: str,
                         path: Path) -> Path | None:
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
    key = _order_key(spec, rows)
    for ax, (title, part) in zip(axes, facets, strict=True):
        for value in sorted(part[rows].unique(), key=key):
            stats = part[part[rows] == value].groupby(axis)["value"].agg(["mean", "std"]).sort_index()
            x = stats.index.to_numpy(dtype=float)
            mean, std = stats["mean"].to_numpy(), stats["std"].fillna(0).to_numpy()
            ax.plot(x, mean, marker="o", label=_label(rows, value) if rows != "variant" else value)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        xs = data[axis].dropna()
        if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
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


def plot_curves(frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, axis: str,
                path: Path) -> Path | None:
    """Learning curves: ``metric`` (a ``curve:`` metric) against ``axis`` (``train_steps``, ``wall_time_s``
    or ``env_steps``), mean ± std over runs, one panel per report column, one line per row value."""
    data = frame[(frame["metric"] == metric) & frame[axis].notna()]
    if data.empty:
        return None
    facets = _facets(data, spec, spec.report.columns)
    fig, axes = _figure(len(facets))
    key = _order_key(spec, rows)
    for ax, (title, part) in zip(axes, facets, strict=True):
        for value in sorted(part[rows].unique(), key=key):
            curves = []
            for _, run in part[part[rows] == value].groupby("run_id"):
                run = run.sort_values(axis)
                curves.append((run[axis].to_numpy(dtype=float), run["value"].to_numpy(dtype=float)))
            grid, mean, std = _mean_curve(curves)
            ax.plot(grid, mean, label=_label(rows, value) if rows != "variant" else value)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel({"train_steps": "training updates", "wall_time_s": "wall-clock time (s)",
                       "env_steps": "environment steps"}[axis])
        ax.set_ylabel(metric[len(CURVE_PREFIX):])
        ax.grid(alpha=0.3)
    _save(fig, path)
    return path


# ----------------------------------------------------------------------------------------------------
# The report


def _provenance_line(frame: pd.DataFrame) -> str:
    runs = frame.drop_duplicates("run_id")
    parts = []
    labels = (("code_revision", "code"), ("marlkd_version", "marlkd"), ("torch_version", "torch"))
    for column, label in labels:
        counts = runs[column].value_counts()
        parts.append(f"{label} " + ", ".join(f"`{str(v)[:12]}` ({n} runs)" for v, n in counts.items()))
    return "; ".join(parts)


def write_report(
    spec: SweepSpec | str | Path,
    root: str | Path = DEFAULT_ROOT,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    bootstrap_reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    use_rliable: bool = False,
    all_runs: bool = False,
) -> Path:
    """Write ``report.md`` and its plots for a sweep, from its results table alone; returns report.md's path.

    Args:
        spec: a :class:`SweepSpec`, a built-in spec's name or a spec file (for the layout and order).
        root: the experiments root.
        quick: report the quick variant's sweep.
        out: the report folder (default ``<root>/<sweep>/report``).
        bootstrap_reps, confidence, seed: the stratified bootstrap of the confidence intervals.
        use_rliable: compute the per-cell intervals with the ``rliable`` package when it is installed.
        all_runs: also report runs of the table that are not in the spec's current grid (runs made
            before a value of the spec changed); by default they are left out, and counted in the report.
    """
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    sweep = spec.sweep_name(quick)
    frame = load_results(root, spec, quick=quick)
    excluded = 0
    if not all_runs:
        current = frame["run_id"].isin({run.run_id for run in expand(spec, quick)})
        excluded = frame.loc[~current, "run_id"].nunique()
        frame = frame[current].reset_index(drop=True)
    if frame.empty:
        raise MarlkdError(f"{results_path(root, sweep)} has no rows of the spec's runs yet"
                          + (f" ({excluded} other runs; --all-runs reports them)" if excluded else ""))
    folder = Path(out) if out is not None else sweep_dir(root, sweep) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    layout = spec.report
    stat_args = {"reps": bootstrap_reps, "confidence": confidence, "seed": seed}
    lines = [f"# {sweep}", ""]
    if spec.description:
        lines += [spec.description, ""]
    runs = frame["run_id"].nunique()
    lines += [f"From `{results_path(root, sweep)}`: {runs} finished runs, {len(frame)} rows. Provenance: "
              f"{_provenance_line(frame)}. Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
              "by `marlkd experiment report`.", ""]
    if excluded:
        lines += [f"{excluded} runs of the table are not in the spec's current grid (made before a value "
                  "changed) and are left out; `--all-runs` reports them too.", ""]

    for metric in (layout.metric, *layout.extra_metrics):
        summary = summarize(frame, spec, metric, layout.rows, layout.columns, use_rliable=use_rliable,
                            **stat_args)
        lines += [f"## {metric}: mean ± std (n)", ""]
        if summary.empty:
            lines += [f"_no rows with metric `{metric}`_", ""]
            continue
        main_metric = metric == layout.metric
        lines += [markdown_table(summary, layout.rows, layout.columns, bold_best=main_metric), "",
                  "Mean ± sample standard deviation over runs (seeds); n runs per cell."
                  + (" Bold: the highest mean of the column." if main_metric else ""), ""]
        if metric == layout.metric:
            method = "the rliable package" if use_rliable else "NumPy"
            lines += [f"## {metric}: interquartile mean [{confidence:.0%} CI]", "",
                      markdown_table(summary, layout.rows, layout.columns, robust=True), "",
                      "IQM: the mean of the middle 50 % of runs (25 % trimmed from each end). Interval: "
                      f"percentile bootstrap over runs, {bootstrap_reps} resamples, seed {seed}, computed "
                      f"with {method}, as rliable does.", ""]
    if layout.aggregate_metric and (frame["metric"] == layout.aggregate_metric).any():
        lines += [f"## Aggregate over tasks: {layout.aggregate_metric}", "",
                  aggregate_table(frame, spec, layout.aggregate_metric, layout.rows, **stat_args), "",
                  "IQM over all runs of all tasks (environment and setting combinations); interval: "
                  "stratified bootstrap (runs resampled within each task), as rliable computes it.", ""]

    plots = []
    for axis in layout.plots:
        if axis == "num_trajectories":
            plots.append(("Return against the number of training trajectories",
                          plot_against_setting(frame, spec, layout.metric, layout.rows, axis,
                                               folder / f"{layout.metric}_vs_num_trajectories.png")))
            continue
        curve = curve_metric_of(frame, spec)
        title = {"train_steps": "training updates", "wall_time_s": "wall-clock training time",
                 "env_steps": "environment steps"}[axis]
        path = None if curve is None else plot_curves(frame, spec, curve, layout.rows, axis,
                                                      folder / f"curve_vs_{axis}.png")
        plots.append((f"Learning curves against {title}", path))
    if plots:
        lines += ["## Plots", ""]
        for title, path in plots:
            lines += [f"### {title}", ""]
            lines += [f"![{title}]({path.name})" if path is not None else "_no data for this plot_", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report
