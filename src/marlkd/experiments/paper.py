"""The report's "Beside the paper" section: our cells next to a paper's values, with rank agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from marlkd.experiments.display import paper_key, variant_id, variant_name
from marlkd.experiments.grid import expand
from marlkd.experiments.schema import PaperCell, SweepSpec
from marlkd.experiments.stats import kendall_tau, ranks
from marlkd.experiments.tables import ROW_HEADERS, fmt, markdown, order_key, value_label

if TYPE_CHECKING:
    import pandas as pd


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
    """``x`` rounded as :func:`fmt` shows it."""
    return float(fmt(x))


def _row_label(rows: str, value: Any) -> str:
    return value_label(rows, value) if rows != "variant" else str(value)


def _key_maps(
    spec: SweepSpec, frame: pd.DataFrame, rows: str, columns: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[Any, str]]]:
    """For each report column: the value of each ``[report.paper]`` key, and the key of each value."""
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
    return value_of, key_of


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
    value_of, key_of = _key_maps(spec, frame, rows, columns)

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
    row_order = order_key(spec, rows)
    row_keys = sorted(labels, key=lambda k: row_order(labels[k]))

    def col_label(col_key: tuple[str, ...]) -> str:
        values = col_values.get(col_key) or tuple(
            value_of[c].get(k, k) for c, k in zip(columns, col_key, strict=True)
        )
        return " / ".join(value_label(c, v) for c, v in zip(columns, values, strict=True))

    compared = []
    for col_key in col_values:
        present = [r for r in row_keys if (r, col_key) in ours or (r, col_key) in theirs]
        common = [r for r in present if (r, col_key) in ours and (r, col_key) in theirs]
        # Means as the tables show them (equal shown values tie), so every rank can be checked by eye.
        our_means = [_shown(ours[(r, col_key)]["mean"]) for r in common]
        paper_means = [_shown(theirs[(r, col_key)].mean) for r in common]
        our_ranks = dict(zip(common, ranks(our_means), strict=True))
        paper_ranks = dict(zip(common, ranks(paper_means), strict=True))
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
    row_header = ROW_HEADERS.get(rows, rows.replace("_", " ").capitalize())
    col_header = " / ".join(ROW_HEADERS.get(c, c.replace("_", " ").capitalize()) for c in columns)
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
        lines += _cells_table(compared, row_header)
        lines += _rank_table(compared, row_header, col_header)
        lines += [_agreement_sentence(compared, row_header), ""]
    if missing:
        lines += [f"The paper's columns without results of ours yet: {', '.join(missing)}.", ""]
    return lines


def _cells_table(compared: list[PaperColumn], row_header: str) -> list[str]:
    """One row per method (variant, ...), one column per paper column: ours [rank] · paper [rank]."""
    labels = list(dict.fromkeys(row.label for column in compared for row in column.rows))
    cells: dict[tuple[str, str], str] = {}
    for column in compared:
        for row in column.rows:
            cell = row.ours
            ours = "—" if cell is None else f"{fmt(cell['mean'])} ± {fmt(cell['std'])} ({cell['n']})"
            if row.our_rank is not None:
                ours += f" #{row.our_rank}"
            theirs = "—" if row.paper is None else f"{fmt(row.paper.mean)} ± {fmt(row.paper.std)}"
            if row.paper_rank is not None:
                theirs += f" #{row.paper_rank}"
            cells[(column.label, row.label)] = f"{ours} · {theirs}"
    body = [[label, *(cells.get((column.label, label), "") for column in compared)] for label in labels]
    return [
        markdown([row_header, *(column.label for column in compared)], body),
        "",
        "Each cell: ours, mean ± std (n runs) #rank · the paper's mean ± std #rank.",
        "",
    ]


def _rank_table(compared: list[PaperColumn], row_header: str, col_header: str) -> list[str]:
    """Per paper column: rows in both, Kendall's tau, and the best rows of each side."""
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
    return [
        markdown(
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


def _agreement_sentence(compared: list[PaperColumn], row_header: str) -> str:
    """How often our best rows are the paper's, where they differ, and the mean tau."""
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
            f"{c.label} (ours: {', '.join(c.our_best)}; paper: {', '.join(c.paper_best)})" for c in differs
        )
    if taus:
        sentence += f". Mean Kendall's τ over these columns: {float(np.mean(taus)):.2f}"
    unjudged = [c.label for c in compared if c.same_best is None]
    if unjudged:
        sentence += f". Not judged (fewer than two rows in both, or all tied): {', '.join(unjudged)}"
    return sentence + "."
