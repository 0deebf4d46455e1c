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

from marlkd import atomic
from marlkd.errors import MarlkdError
from marlkd.experiments.results import CURVE_PREFIX, load_results, results_path, sweep_dir
from marlkd.experiments.runner import DEFAULT_ROOT
from marlkd.experiments.spec import (
    ABLATION_METHOD,
    QUALITIES,
    PaperCell,
    SweepSpec,
    env_name,
    expand,
    load_spec,
    paper_key,
    variant_id,
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


def _rliable_ci(
    tasks: Sequence[np.ndarray], reps: int, confidence: float, seed: int
) -> tuple[float, float] | None:
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
            {"x": scores},
            lambda s: np.array([rly_metrics.aggregate_iqm(s)]),
            reps=reps,
            confidence_interval_size=confidence,
        )
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


def cell_stats(
    values: Any, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0, use_rliable: bool = False
) -> CellStats:
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
        swept = [
            *spec.settings.precision,
            *spec.quick.settings.get("precision", ()),
            *(p for entry in spec.per_env.values() for p in entry.get("precision", ())),
        ]
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


def summarize(
    frame: pd.DataFrame,
    spec: SweepSpec,
    metric: str,
    rows: str,
    columns: Sequence[str],
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    use_rliable: bool = False,
) -> pd.DataFrame:
    """One row per (row value, column values) cell of ``metric``'s final values (one per run), with the
    :class:`CellStats` fields, in the spec's order."""
    import pandas as pd

    data = frame[frame["metric"] == metric]
    keys = [rows, *columns]
    records = []
    for group, part in data.groupby(keys, sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        stats = cell_stats(
            part["value"].to_numpy(), reps=reps, confidence=confidence, seed=seed, use_rliable=use_rliable
        )
        records.append({**dict(zip(keys, group, strict=True)), **stats.__dict__})
    table = pd.DataFrame.from_records(records, columns=[*keys, *CellStats.__dataclass_fields__])
    if table.empty:
        return table
    sort_keys = [_order_key(spec, k) for k in keys]
    order = sorted(
        range(len(table)),
        key=lambda i: tuple(f(table.iloc[i][k]) for f, k in zip(sort_keys, keys, strict=True)),
    )
    return table.iloc[order].reset_index(drop=True)


_ROW_HEADERS = {
    "variant": "Method",
    "method": "Method",
    "ablation": "Variant",
    "env": "Environment",
    "quality": "Data quality",
    "num_trajectories": "Trajectories",
    "precision": "Precision",
}


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.2f}"


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def markdown_table(
    summary: pd.DataFrame, rows: str, columns: Sequence[str], *, robust: bool = False, bold_best: bool = True
) -> str:
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
            text = (
                f"{_fmt(cell['iqm'])} [{_fmt(cell['ci_low'])}, {_fmt(cell['ci_high'])}]"
                if robust
                else f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])} ({cell['n']})"
            )
            line.append(f"**{text}**" if col in best and cell[score] == best[col] else text)
        body.append(line)
    return _markdown(header, body)


def aggregate_table(
    frame: pd.DataFrame,
    spec: SweepSpec,
    metric: str,
    rows: str,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> str:
    """IQM of ``metric`` over all runs of all environments per row value, with the stratified bootstrap
    interval (tasks = environment and other setting combinations)."""
    data = frame[frame["metric"] == metric]
    if data.empty:
        return ""
    task_columns = [
        "env",
        "quality",
        "num_trajectories",
        "precision",
        "steps",
        "eval_episodes",
        "dataset_episodes",
    ]
    key = _order_key(spec, rows)
    body = []
    for value in sorted(data[rows].unique(), key=key):
        part = data[data[rows] == value]
        tasks = [g["value"].dropna().to_numpy() for _, g in part.groupby(task_columns, dropna=False)]
        scores = np.concatenate(tasks)
        low, high = stratified_bootstrap_ci(tasks, reps=reps, confidence=confidence, seed=seed)
        body.append(
            [
                _label(rows, value) if rows != "variant" else str(value),
                _fmt(float(iqm(scores))),
                f"[{_fmt(low)}, {_fmt(high)}]",
                _fmt(float(scores.mean())),
                str(scores.size),
                str(len(tasks)),
            ]
        )
    return _markdown(
        [_ROW_HEADERS.get(rows, rows), "IQM", f"{confidence:.0%} CI", "Mean", "Runs", "Tasks"], body
    )


# ----------------------------------------------------------------------------------------------------
# Beside the paper


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of paired values (as ``scipy.stats.kendalltau`` computes it): (concordant -
    discordant pairs) / sqrt((pairs not tied in x) (pairs not tied in y)); NaN for fewer than two pairs or
    when one side is all ties."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs paired values, got {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    untied = (concordant + discordant + tied_x) * (concordant + discordant + tied_y)
    return (concordant - discordant) / math.sqrt(untied) if untied else math.nan


def _ranks(values: Sequence[float]) -> list[int]:
    """Competition ranks, 1 for the highest value (equal values share the better rank)."""
    return [1 + sum(other > value for other in values) for value in values]


@dataclass(frozen=True)
class PaperRow:
    """One row of a column beside the paper: our cell (None: no runs) and the paper's (None: not in the
    paper), and the ranks of both among the rows both have (None for the others)."""

    label: str
    ours: dict[str, Any] | None
    paper: PaperCell | None
    our_rank: int | None
    paper_rank: int | None


@dataclass(frozen=True)
class PaperColumn:
    """One report column beside the paper: its rows, and over the rows both have (``common``) Kendall's
    tau of the means and the best rows (all that share the highest mean) of ours and of the paper's.
    ``same_best``: a best row of ours is a best row of the paper's (None with fewer than two common
    rows, or when all of ours or all of the paper's tie). Means are compared as the tables show them."""

    label: str
    rows: tuple[PaperRow, ...]
    common: int
    tau: float
    our_best: tuple[str, ...]
    paper_best: tuple[str, ...]
    same_best: bool | None


def _text_key(value: Any) -> str:
    """A results-table value as ``[report.paper]`` keys name it (integral numbers without ``.0``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _shown(x: float) -> float:
    """``x`` rounded as :func:`_fmt` shows it."""
    return float(_fmt(x))


def _row_label(rows: str, value: Any) -> str:
    return _label(rows, value) if rows != "variant" else str(value)


def compare_with_paper(
    summary: pd.DataFrame, frame: pd.DataFrame, spec: SweepSpec, quick: bool = False
) -> tuple[list[PaperColumn], list[str]]:
    """Our :func:`summarize` cells beside the spec's ``[report.paper]`` values, per report column.

    Returns the columns that have results of ours (in the report's order) and the labels of the paper's
    columns that have none yet. Numbers come from ``summary`` and the spec alone.
    """
    paper = spec.report.paper
    if paper is None:
        return [], []
    rows, columns = spec.report.rows, spec.report.columns
    runs = [*expand(spec), *expand(spec, quick=True)]
    # The [report.paper] key of each value the results table holds, and back (values of the paper's rows
    # and columns that have no results of ours are labelled from the grid).
    value_of: dict[str, dict[str, Any]] = {c: {} for c in (rows, *columns)}
    for run in runs:
        for column in value_of:
            value = variant_name(run.method, run.ablation) if column == "variant" else getattr(run, column)
            value_of[column].setdefault(paper_key(column, run), value)
    key_of = {column: {value: key for key, value in values.items()} for column, values in value_of.items()}
    if "variant" in key_of:
        for name, method, ablation in (
            frame[["variant", "method", "ablation"]].drop_duplicates().itertuples(index=False)
        ):
            key_of["variant"].setdefault(name, variant_id(method, ablation))

    def key(column: str, value: Any) -> str:
        return key_of[column].get(value, _text_key(value))

    ours: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    labels: dict[str, Any] = {}
    col_values: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for record in summary.to_dict("records"):
        row_key = key(rows, record[rows])
        col_key = tuple(key(c, record[c]) for c in columns)
        labels.setdefault(row_key, record[rows])
        col_values.setdefault(col_key, tuple(record[c] for c in columns))
        if record["n"] > 0 and not math.isnan(record["mean"]):
            ours[(row_key, col_key)] = record
    theirs = {(cell.row, cell.columns): cell for cell in paper.cells}
    for cell in paper.cells:
        labels.setdefault(cell.row, value_of[rows].get(cell.row, cell.row))
    row_order = _order_key(spec, rows)
    row_keys = sorted(labels, key=lambda k: row_order(labels[k]))

    def col_label(col_key: tuple[str, ...]) -> str:
        values = col_values.get(col_key) or tuple(
            value_of[c].get(k, k) for c, k in zip(columns, col_key, strict=True)
        )
        return " / ".join(_label(c, v) for c, v in zip(columns, values, strict=True))

    compared = []
    for col_key in col_values:
        present = [r for r in row_keys if (r, col_key) in ours or (r, col_key) in theirs]
        common = [r for r in present if (r, col_key) in ours and (r, col_key) in theirs]
        # Means as the tables show them (equal shown values tie), so every rank can be checked by eye.
        our_means = [_shown(ours[(r, col_key)]["mean"]) for r in common]
        paper_means = [_shown(theirs[(r, col_key)].mean) for r in common]
        our_ranks = dict(zip(common, _ranks(our_means), strict=True))
        paper_ranks = dict(zip(common, _ranks(paper_means), strict=True))
        table_rows = tuple(
            PaperRow(
                _row_label(rows, labels[r]),
                ours.get((r, col_key)),
                theirs.get((r, col_key)),
                our_ranks.get(r),
                paper_ranks.get(r),
            )
            for r in present
        )
        our_best = tuple(_row_label(rows, labels[r]) for r in common if our_ranks[r] == 1)
        all_tied = len(set(our_means)) == 1 or len(set(paper_means)) == 1
        paper_best = tuple(_row_label(rows, labels[r]) for r in common if paper_ranks[r] == 1)
        compared.append(
            PaperColumn(
                label=col_label(col_key),
                rows=table_rows,
                common=len(common),
                tau=kendall_tau(our_means, paper_means),
                our_best=our_best,
                paper_best=paper_best,
                same_best=None if len(common) < 2 or all_tied else bool(set(our_best) & set(paper_best)),
            )
        )
    missing = [
        col_label(c) for c in dict.fromkeys(cell.columns for cell in paper.cells) if c not in col_values
    ]
    return compared, missing


def paper_section(
    summary: pd.DataFrame, frame: pd.DataFrame, spec: SweepSpec, quick: bool = False
) -> list[str]:
    """The report's "Beside the paper" section (Markdown lines); empty when the spec has no paper values."""
    paper = spec.report.paper
    if paper is None:
        return []
    rows, columns = spec.report.rows, spec.report.columns
    compared, missing = compare_with_paper(summary, frame, spec, quick)
    row_header = _ROW_HEADERS.get(rows, rows.replace("_", " ").capitalize())
    col_header = " / ".join(_ROW_HEADERS.get(c, c.replace("_", " ").capitalize()) for c in columns)
    metric = spec.report.metric
    lines = [
        f"## Beside the paper: {paper.source}",
        "",
        f"Our `{metric}` (mean ± std (n) over runs) beside the paper's mean ± std ({paper.source}, as "
        "the spec's `[report.paper]` holds them). Ranks (1: the highest mean) and Kendall's τ are over "
        f"the rows of a column that both have. Compare the orders: our environments, datasets and "
        "training budgets are not the paper's, so the scales of the values need not match.",
        "",
    ]
    if not compared:
        lines += ["_no results of ours in the paper's columns yet_", ""]
    else:
        # One row per method (variant, ...), one column per paper column: ours [rank] · paper [rank].
        labels = list(dict.fromkeys(row.label for column in compared for row in column.rows))
        cells: dict[tuple[str, str], str] = {}
        for column in compared:
            for row in column.rows:
                cell = row.ours
                ours = "—" if cell is None else f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])} ({cell['n']})"
                if row.our_rank is not None:
                    ours += f" #{row.our_rank}"
                theirs = "—" if row.paper is None else f"{_fmt(row.paper.mean)} ± {_fmt(row.paper.std)}"
                if row.paper_rank is not None:
                    theirs += f" #{row.paper_rank}"
                cells[(column.label, row.label)] = f"{ours} · {theirs}"
        body = [[label, *(cells.get((column.label, label), "") for column in compared)] for label in labels]
        lines += [
            _markdown([row_header, *(column.label for column in compared)], body),
            "",
            "Each cell: ours, mean ± std (n runs) #rank · the paper's mean ± std #rank.",
            "",
        ]
        body = []
        for column in compared:
            flag = {None: "—", True: "same best", False: "differs"}[column.same_best]
            body.append(
                [
                    column.label,
                    str(column.common),
                    "n/a" if math.isnan(column.tau) else f"{column.tau:.2f}",
                    ", ".join(column.our_best) or "—",
                    ", ".join(column.paper_best) or "—",
                    flag,
                ]
            )
        lines += [
            _markdown(
                [col_header, f"{row_header}s in both", "Kendall's τ", "Best (ours)", "Best (paper)", "Best"],
                body,
            ),
            "",
            "Kendall's τ-b of our means against the paper's: 1 the same order, −1 the reverse, n/a for "
            "fewer than two rows (or all tied). Means are compared as shown (equal shown values tie). "
            "Best: the highest mean among the rows both have (ties: all of them); `same best` when a "
            "best of ours is a best of the paper's; — for fewer than two rows, or when all of ours or "
            "all of the paper's tie.",
            "",
        ]
        judged = [c for c in compared if c.same_best is not None]
        differs = [c for c in judged if not c.same_best]
        taus = [c.tau for c in judged if not math.isnan(c.tau)]
        sentence = (
            f"Same best {row_header.lower()} as the paper in {len(judged) - len(differs)} of the "
            f"{len(judged)} columns compared"
            if judged
            else "No column can be compared yet"
        )
        if differs:
            sentence += "; differs in " + "; ".join(
                f"{c.label} (ours: {', '.join(c.our_best)}; paper: {', '.join(c.paper_best)})"
                for c in differs
            )
        if taus:
            sentence += f". Mean Kendall's τ over these columns: {float(np.mean(taus)):.2f}"
        unjudged = [c.label for c in compared if c.same_best is None]
        if unjudged:
            sentence += f". Not judged (fewer than two rows in both, or all tied): {', '.join(unjudged)}"
        lines += [sentence + ".", ""]
    if missing:
        lines += [f"The paper's columns without results of ours yet: {', '.join(missing)}.", ""]
    return lines


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
    if handles:  # as many legend columns as the figure's width holds (about 1.9 inches each)
        ncols = max(1, min(len(labels), int(fig.get_figwidth() // 1.9)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small")
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def _facets(frame: pd.DataFrame, spec: SweepSpec, columns: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not columns:
        return [("", frame)]
    key_fns = [_order_key(spec, c) for c in columns]
    groups = list(frame.groupby(list(columns), sort=False, dropna=False))
    groups.sort(key=lambda item: tuple(f(v) for f, v in zip(key_fns, item[0], strict=True)))
    return [
        (" / ".join(_label(c, v) for c, v in zip(columns, values, strict=True)), part)
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


def plot_curves(
    frame: pd.DataFrame, spec: SweepSpec, metric: str, rows: str, axis: str, path: Path
) -> Path | None:
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
        ax.set_xlabel(
            {
                "train_steps": "training updates",
                "wall_time_s": "wall-clock time (s)",
                "env_steps": "environment steps",
            }[axis]
        )
        ax.set_ylabel(metric[len(CURVE_PREFIX) :])
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


def compute_line(frame: pd.DataFrame) -> str:
    """The compute behind a results table: total and per-method median wall time of its runs."""
    final = frame[~frame["metric"].astype(str).str.startswith(CURVE_PREFIX)].drop_duplicates("run_id")
    final = final.assign(s=final["wall_time_s"].astype(float)).dropna(subset=["s"])
    if final.empty:
        return ""
    seconds = final["s"]
    by_method = final.groupby("method", sort=False)["s"].median()
    medians = ", ".join(f"{method} {value / 60:.1f}" for method, value in by_method.items())
    return (
        f"Compute: the {len(seconds)} runs took {seconds.sum() / 3600:.1f} hours of wall time in all "
        f"(each run on its own worker; the median minutes per run by method: {medians})."
    )


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
        raise MarlkdError(
            f"{results_path(root, sweep)} has no rows of the spec's runs yet"
            + (f" ({excluded} other runs; --all-runs reports them)" if excluded else "")
        )
    folder = Path(out) if out is not None else sweep_dir(root, sweep) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    layout = spec.report
    stat_args = {"reps": bootstrap_reps, "confidence": confidence, "seed": seed}
    lines = [f"# {sweep}", ""]
    if spec.description:
        lines += [spec.description, ""]
    runs = frame["run_id"].nunique()
    paper_lines: list[str] = []
    lines += [
        f"From `{results_path(root, sweep)}`: {runs} finished runs, {len(frame)} rows. Provenance: "
        f"{_provenance_line(frame)}. Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
        "by `marlkd experiment report`.",
        "",
    ]
    compute = compute_line(frame)
    if compute:
        lines += [compute, ""]
    if excluded:
        lines += [
            f"{excluded} runs of the table are not in the spec's current grid (made before a value "
            "changed) and are left out; `--all-runs` reports them too.",
            "",
        ]

    for metric in (layout.metric, *layout.extra_metrics):
        summary = summarize(
            frame, spec, metric, layout.rows, layout.columns, use_rliable=use_rliable, **stat_args
        )
        lines += [f"## {metric}: mean ± std (n)", ""]
        if summary.empty:
            lines += [f"_no rows with metric `{metric}`_", ""]
            continue
        main_metric = metric == layout.metric
        lines += [
            markdown_table(summary, layout.rows, layout.columns, bold_best=main_metric),
            "",
            "Mean ± sample standard deviation over runs (seeds); n runs per cell."
            + (" Bold: the highest mean of the column." if main_metric else ""),
            "",
        ]
        if metric == layout.metric:
            paper_lines = paper_section(summary, frame, spec, quick)
            method = "the rliable package" if use_rliable else "NumPy"
            lines += [
                f"## {metric}: interquartile mean [{confidence:.0%} CI]",
                "",
                markdown_table(summary, layout.rows, layout.columns, robust=True),
                "",
                "IQM: the mean of the middle 50 % of runs (25 % trimmed from each end). Interval: "
                f"percentile bootstrap over runs, {bootstrap_reps} resamples, seed {seed}, computed "
                f"with {method}, as rliable does.",
                "",
            ]
    if layout.aggregate_metric and (frame["metric"] == layout.aggregate_metric).any():
        lines += [
            f"## Aggregate over tasks: {layout.aggregate_metric}",
            "",
            aggregate_table(frame, spec, layout.aggregate_metric, layout.rows, **stat_args),
            "",
            "IQM over all runs of all tasks (environment and setting combinations); interval: "
            "stratified bootstrap (runs resampled within each task), as rliable computes it.",
            "",
        ]
    lines += paper_lines

    plots = []
    for axis in layout.plots:
        if axis == "num_trajectories":
            plots.append(
                (
                    "Return against the number of training trajectories",
                    plot_against_setting(
                        frame,
                        spec,
                        layout.metric,
                        layout.rows,
                        axis,
                        folder / f"{layout.metric}_vs_num_trajectories.png",
                    ),
                )
            )
            continue
        curve = curve_metric_of(frame, spec)
        title = {
            "train_steps": "training updates",
            "wall_time_s": "wall-clock training time",
            "env_steps": "environment steps",
        }[axis]
        path = (
            None
            if curve is None
            else plot_curves(frame, spec, curve, layout.rows, axis, folder / f"curve_vs_{axis}.png")
        )
        plots.append((f"Learning curves against {title}", path))
    if plots:
        lines += ["## Plots", ""]
        for title, path in plots:
            lines += [f"### {title}", ""]
            lines += [f"![{title}]({path.name})" if path is not None else "_no data for this plot_", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report
