"""Reports drawn from a sweep's results table alone, written to ``<root>/<sweep>/report/``: Markdown
tables in the paper's layout (:mod:`~marlkd.experiments.tables`) with robust statistics
(:mod:`~marlkd.experiments.stats`), the paper's values beside ours (:mod:`~marlkd.experiments.paper`) and
matplotlib plots (:mod:`~marlkd.experiments.plots`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marlkd.errors import MarlkdError
from marlkd.experiments.grid import expand
from marlkd.experiments.headroom import headroom_sections
from marlkd.experiments.paper import paper_section
from marlkd.experiments.parsing import load_spec
from marlkd.experiments.plots import curve_metric_of, plot_against_setting, plot_curves, plot_diagnostics
from marlkd.experiments.results import CURVE_PREFIX, load_results, results_path, sweep_dir
from marlkd.experiments.runner import DEFAULT_ROOT
from marlkd.experiments.schema import SweepSpec
from marlkd.experiments.superseded import superseded_section
from marlkd.experiments.tables import (
    aggregate_table,
    markdown_table,
    order_key,
    section,
    summarize,
    value_label,
)

if TYPE_CHECKING:
    import pandas as pd


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
    frame, excluded, earlier = _report_rows(spec, root, quick, all_runs)
    folder = Path(out) if out is not None else sweep_dir(root, sweep) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    stats = _StatArgs(bootstrap_reps, confidence, seed, use_rliable)
    lines = _header_lines(spec, sweep, frame, results_path(root, sweep), excluded)
    lines += _metric_sections(spec, frame, quick, stats)
    if earlier is not None:
        import pandas as pd

        current = set(frame["run_id"])
        lines += superseded_section(pd.concat([frame, earlier]), current, spec, **stats.common())
    lines += _plot_section(spec, frame, folder)
    report = folder / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report


@dataclass(frozen=True)
class _StatArgs:
    """The report's bootstrap settings (see :func:`write_report`)."""

    reps: int
    confidence: float
    seed: int
    use_rliable: bool

    def common(self) -> dict[str, Any]:
        return {"reps": self.reps, "confidence": self.confidence, "seed": self.seed}


def _report_rows(
    spec: SweepSpec, root: str | Path, quick: bool, all_runs: bool
) -> tuple[pd.DataFrame, int, pd.DataFrame | None]:
    """The results rows to report, the number of runs left out (not in the spec's current grid) and those
    runs' rows (None when none are left out)."""
    frame = load_results(root, spec, quick=quick)
    excluded, earlier = 0, None
    if not all_runs:
        current = frame["run_id"].isin({run.run_id for run in expand(spec, quick)})
        excluded = frame.loc[~current, "run_id"].nunique()
        earlier = frame[~current].reset_index(drop=True) if excluded else None
        frame = frame[current].reset_index(drop=True)
    if frame.empty:
        raise MarlkdError(
            f"{results_path(root, spec.sweep_name(quick))} has no rows of the spec's runs yet"
            + (f" ({excluded} other runs; --all-runs reports them)" if excluded else "")
        )
    return frame, excluded, earlier


def _header_lines(spec: SweepSpec, sweep: str, frame: pd.DataFrame, source: Path, excluded: int) -> list[str]:
    """Title, description, provenance, compute and the count of runs left out."""
    lines = [f"# {sweep}", ""]
    if spec.description:
        lines += [spec.description, ""]
    runs = frame["run_id"].nunique()
    lines += [
        f"From `{source}`: {runs} finished runs, {len(frame)} rows. Provenance: "
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
            'changed) and are left out of the tables; where a cell has both, "Earlier runs beside the '
            'current ones" compares them, and `--all-runs` reports them in the tables too.',
            "",
        ]
    return lines


def _metric_sections(spec: SweepSpec, frame: pd.DataFrame, quick: bool, stats: _StatArgs) -> list[str]:
    """One table per metric (mean ± std), the main metric's IQM table, the aggregate over tasks, the
    headroom and probability-of-improvement tables, the note on cells that mix datasets
    (:func:`dataset_lines`) and the paper's values beside ours."""
    layout = spec.report
    lines: list[str] = []
    paper_lines: list[str] = []
    for metric in (layout.metric, *layout.extra_metrics):
        summary = summarize(
            frame, spec, metric, layout.rows, layout.columns, use_rliable=stats.use_rliable, **stats.common()
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
        if main_metric:
            paper_lines = paper_section(summary, frame, spec, quick)
            lines += _iqm_section(summary, spec, metric, stats)
    if layout.aggregate_metric and (frame["metric"] == layout.aggregate_metric).any():
        lines += section(
            f"Aggregate over tasks: {layout.aggregate_metric}",
            aggregate_table(frame, spec, layout.aggregate_metric, layout.rows, **stats.common()),
            "IQM over all runs of all tasks (environment and setting combinations); interval: "
            "stratified bootstrap (runs resampled within each task), as rliable computes it.",
        )
    headroom = headroom_sections(frame, spec, **stats.common())
    return lines + headroom + dataset_lines(frame, spec) + paper_lines


def dataset_lines(frame: pd.DataFrame, spec: SweepSpec) -> list[str]:
    """A note under the tables on the datasets behind them: the cells whose runs were trained on more than
    one dataset (``dataset_checksum``), or whose runs record it only in part, with the count of runs on each;
    one general sentence when no row records its dataset (a table from before the column); nothing when
    every cell comes from one dataset."""
    runs = frame.drop_duplicates("run_id")
    if runs.empty:
        return []
    checksums = runs["dataset_checksum"].fillna("").astype(str)
    if (checksums == "").all():
        return [
            "Datasets: this table does not record which dataset each run was trained on (its rows predate "
            "the `dataset_checksum` column), so runs resumed from a copied table cannot be told apart from "
            "runs on a remade dataset.",
            "",
        ]
    keys = [*spec.report.columns, spec.report.rows]
    runs = runs.assign(dataset_checksum=checksums)
    mixed: list[tuple[tuple[Any, ...], str]] = []
    for cell, group in runs.groupby(keys, sort=False, dropna=False):
        counts = group["dataset_checksum"].value_counts()
        if len(counts) < 2:
            continue
        cell = cell if isinstance(cell, tuple) else (cell,)
        label = " / ".join(value_label(key, value) for key, value in zip(keys, cell, strict=True))
        known = [(n, c) for c, n in counts.items() if c]
        parts = [f"{n} runs on dataset {c[:8]}…" for n, c in sorted(known, key=lambda x: (-x[0], x[1]))]
        if "" in counts.index:
            parts.append(f"{counts['']} runs on unrecorded data")
        mixed.append((cell, f"- {label}: {', '.join(parts)}"))
    if not mixed:
        return []
    orders = [order_key(spec, key) for key in keys]
    mixed.sort(key=lambda item: [order(value) for order, value in zip(orders, item[0], strict=True)])
    return [
        "## Cells trained on more than one dataset",
        "",
        f"{len(mixed)} cells mix runs trained on different datasets (by the `dataset_checksum` of their "
        "rows; unrecorded: rows from before the column), so their statistics pool different data:",
        "",
        *(line for _, line in mixed),
        "",
    ]


def _iqm_section(summary: pd.DataFrame, spec: SweepSpec, metric: str, stats: _StatArgs) -> list[str]:
    method = "the rliable package" if stats.use_rliable else "NumPy"
    return section(
        f"{metric}: interquartile mean [{stats.confidence:.0%} CI]",
        markdown_table(summary, spec.report.rows, spec.report.columns, robust=True),
        "IQM: the mean of the middle 50 % of runs (25 % trimmed from each end). Interval: "
        f"percentile bootstrap over runs, {stats.reps} resamples, seed {stats.seed}, computed "
        f"with {method}, as rliable does.",
    )


_CURVE_AXIS_TITLES = {
    "train_steps": "training updates",
    "wall_time_s": "wall-clock training time",
    "env_steps": "environment steps",
}


def _plot_section(spec: SweepSpec, frame: pd.DataFrame, folder: Path) -> list[str]:
    """Draw the spec's plots into ``folder``; their Markdown section."""
    layout = spec.report
    plots: list[tuple[str, Path | None]] = []
    for axis in layout.plots:
        if axis == "diagnostics":
            figures = plot_diagnostics(frame, spec, layout.rows, folder)
            plots += [(f"Distillation diagnostics{': ' + t if t else ''}", p) for t, p in figures]
            if not figures:
                plots.append(("Distillation diagnostics", None))
            continue
        if axis == "num_trajectories":
            path = folder / f"{layout.metric}_vs_num_trajectories.png"
            plots.append(
                (
                    "Return against the number of training trajectories",
                    plot_against_setting(frame, spec, layout.metric, layout.rows, axis, path),
                )
            )
            continue
        curve = curve_metric_of(frame, spec)
        path = None
        if curve is not None:
            path = plot_curves(frame, spec, curve, layout.rows, axis, folder / f"curve_vs_{axis}.png")
        plots.append((f"Learning curves against {_CURVE_AXIS_TITLES[axis]}", path))
    if not plots:
        return []
    lines = ["## Plots", ""]
    for title, path in plots:
        lines += [f"### {title}", ""]
        lines += [f"![{title}]({path.name})" if path is not None else "_no data for this plot_", ""]
    return lines
