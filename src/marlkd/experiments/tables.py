"""Markdown tables of a results table: per-cell summaries in the spec's order and the aggregate over
tasks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from marlkd.experiments.display import env_name, variant_name
from marlkd.experiments.schema import ABLATION_METHOD, SweepSpec
from marlkd.experiments.stats import CellStats, cell_stats, iqm, stratified_bootstrap_ci
from marlkd.names import QUALITIES

if TYPE_CHECKING:
    import pandas as pd


def order_key(spec: SweepSpec, column: str) -> Callable[[Any], Any]:
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


def value_label(column: str, value: Any) -> str:
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
    sort_keys = [order_key(spec, k) for k in keys]
    order = sorted(
        range(len(table)),
        key=lambda i: tuple(f(table.iloc[i][k]) for f, k in zip(sort_keys, keys, strict=True)),
    )
    return table.iloc[order].reset_index(drop=True)


ROW_HEADERS = {
    "variant": "Method",
    "method": "Method",
    "ablation": "Variant",
    "env": "Environment",
    "quality": "Data quality",
    "num_trajectories": "Trajectories",
    "precision": "Precision",
}


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.2f}"


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def section(title: str, table: str, note: str) -> list[str]:
    """A report section's Markdown lines: the heading ``## title``, the table and the note under it; none
    when ``table`` is empty."""
    if not table:
        return []
    return [f"## {title}", "", table, "", note, ""]


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
    header = [ROW_HEADERS.get(rows, rows.replace("_", " ").capitalize())]
    header += [" / ".join(value_label(c, v) for c, v in zip(columns, col, strict=True)) for col in col_values]
    body = []
    for r in row_values:
        line = [value_label(rows, r) if rows != "variant" else str(r)]
        for col in col_values:
            cell = lookup.get((r, col))
            if cell is None or cell["n"] == 0:
                line.append("—")
                continue
            text = (
                f"{fmt(cell['iqm'])} [{fmt(cell['ci_low'])}, {fmt(cell['ci_high'])}]"
                if robust
                else f"{fmt(cell['mean'])} ± {fmt(cell['std'])} ({cell['n']})"
            )
            line.append(f"**{text}**" if col in best and cell[score] == best[col] else text)
        body.append(line)
    return markdown(header, body)


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
    key = order_key(spec, rows)
    body = []
    for value in sorted(data[rows].unique(), key=key):
        part = data[data[rows] == value]
        tasks = [g["value"].dropna().to_numpy() for _, g in part.groupby(task_columns, dropna=False)]
        scores = np.concatenate(tasks)
        low, high = stratified_bootstrap_ci(tasks, reps=reps, confidence=confidence, seed=seed)
        body.append(
            [
                value_label(rows, value) if rows != "variant" else str(value),
                fmt(float(iqm(scores))),
                f"[{fmt(low)}, {fmt(high)}]",
                fmt(float(scores.mean())),
                str(scores.size),
                str(len(tasks)),
            ]
        )
    return markdown(
        [ROW_HEADERS.get(rows, rows), "IQM", f"{confidence:.0%} CI", "Mean", "Runs", "Tasks"], body
    )
