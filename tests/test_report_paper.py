"""The paper's values in a spec (``[report.paper]``) and the report's "Beside the paper" section: parsing and
validation, Kendall's tau, the section's numbers on a small synthetic results table, and reports of specs
without paper values left as they were."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from marlkd.errors import ConfigError
from marlkd.experiments import expand, load_results, load_spec, parse_spec
from marlkd.experiments.paper import compare_with_paper
from marlkd.experiments.report import write_report
from marlkd.experiments.results import append_rows
from marlkd.experiments.spec import PaperCell, SweepSpec
from marlkd.experiments.stats import kendall_tau
from marlkd.experiments.tables import summarize

GRID = """
name = "paper"
description = "A small sweep beside a paper."

[grid]
envs = ["grid-world", "fill-in", "equal-space"]
methods = ["bc", "idt", "madt", "ours"]
seeds = 3
steps = [10]
eval_episodes = [2]
dataset_episodes = [20]

[report]
metric = "return_mean"
"""

PAPER = """
[report.paper]
source = "A paper, Table 1"

[report.paper.values.bc]
grid-world = [0.5, 0.1]
fill-in = [-9.0, 1.0]

[report.paper.values.idt]
grid-world = [1.5, 0.2]
fill-in = [-7.83, 0.42]
equal-space = [-8.0, 0.4]

[report.paper.values.madt]
grid-world = [3.0, 0.3]
fill-in = [-6.51, 0.21]

[report.paper.values.ours]
grid-world = [2, 0.1]
fill-in = [-3.41, 0.12]
"""

# Our runs' values per (env, method), one per seed; bc and equal-space have none.
OURS = {
    ("grid-world", "idt"): [0.5, 1.5],
    ("grid-world", "madt"): [2.0, 2.0],
    ("grid-world", "ours"): [2.0, 3.0, 4.0],
    ("fill-in", "idt"): [-3.0],
    ("fill-in", "madt"): [-2.0],
    ("fill-in", "ours"): [-1.0, -1.0],
}


def _rows(spec: SweepSpec, values: dict[tuple[str, str], list[float]]) -> list[dict[str, Any]]:
    """Results rows of the spec's own runs (so the report keeps them), with the given final returns."""
    rows = []
    for run in expand(spec):
        scores = values.get((run.env, run.method), [])
        if run.seed >= len(scores):
            continue
        rows.append(
            {
                "spec": spec.name,
                "run_id": run.run_id,
                "env": run.env,
                "method": run.method,
                "seed": run.seed,
                "quality": run.quality,
                "num_trajectories": run.num_trajectories,
                "ablation": run.ablation,
                "steps": run.steps,
                "eval_episodes": run.eval_episodes,
                "dataset_episodes": run.dataset_episodes,
                "train_steps": run.steps,
                "wall_time_s": 1.0,
                "env_steps": 0,
                "marlkd_version": "0.1.0",
                "torch_version": "2.13.0",
                "code_revision": "abc",
                "timestamp": "2026-01-01T00:00:00+00:00",
                "metric": "return_mean",
                "value": scores[run.seed],
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------
# Kendall's tau


def test_kendall_tau_by_hand() -> None:
    # Three methods; the last two swap places: pairs (a, b) and (a, c) agree, (b, c) does not: (2 - 1) / 3.
    assert kendall_tau([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    assert kendall_tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == 1.0
    assert kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    # tau-b with a tie in x: pair (0, 1) is tied in x only; (0, 2) and (1, 2) agree: 2 / sqrt(3 * 2).
    assert kendall_tau([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1.0], [2.0]))
    assert math.isnan(kendall_tau([1.0, 1.0], [1.0, 2.0]))
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------------------------------
# Parsing and validation


def test_paper_values_are_parsed_in_the_spec_order() -> None:
    spec = parse_spec(GRID + PAPER)
    paper = spec.report.paper
    assert paper is not None and paper.source == "A paper, Table 1"
    assert paper.cells[0] == PaperCell("bc", ("grid-world",), 0.5, 0.1)
    assert paper.cells[-1] == PaperCell("ours", ("fill-in",), -3.41, 0.12)
    assert len(paper.cells) == 9
    assert isinstance(paper.cells[7].mean, float)  # grid-world = [2, 0.1]: an integer mean is a float
    assert parse_spec(GRID).report.paper is None
    json.dumps(dataclasses.asdict(spec))  # spec.json (the runner writes the spec as JSON) still works


def test_paper_values_do_not_change_run_ids() -> None:
    with_paper, without = parse_spec(GRID + PAPER), parse_spec(GRID)
    for quick in (False, True):
        assert [r.run_id for r in expand(with_paper, quick)] == [r.run_id for r in expand(without, quick)]


def test_the_builtin_tables_carry_the_papers_values() -> None:
    table1 = {(c.row, c.columns): (c.mean, c.std) for c in load_spec("table1").report.paper.cells}
    assert len(table1) == 9 * 8
    assert table1[("bc", ("fill-in",))] == (-12.43, 0.21)
    assert table1[("ours", ("smax-3s5z-vs-3s6z",))] == (18.78, 2.01)
    table2 = {(c.row, c.columns): (c.mean, c.std) for c in load_spec("table2").report.paper.cells}
    assert len(table2) == 9 * 2 * 3
    assert table2[("airl", ("highway", "poor"))] == (10.22, 1.87)
    table3 = {(c.row, c.columns): (c.mean, c.std) for c in load_spec("table3").report.paper.cells}
    assert len(table3) == 7 * 8
    assert table3[("ours-kl-only", ("equal-space", "good"))] == (-5.43, 0.51)
    assert table3[("ours-shared-mapping", ("smax-3s5z-vs-3s6z", "good"))] == (12.27, 1.11)
    assert table3[("ours-full", ("fill-in", "random"))] == (-3.41, 0.12)  # Fill-In: random-walk data
    for name in ("table1", "table2", "table3"):
        assert load_spec(name).report.paper.source == f"Tseng et al., Table {name[-1]}"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "[report.paper.values.bc]",
            "[report.paper.values.bcc]",
            r"report\.paper\.values\.bcc: unknown variant value 'bcc' \(the grid's variant values: bc, idt",
        ),
        (
            "fill-in = [-9.0, 1.0]",
            "fil-in = [-9.0, 1.0]",
            r"report\.paper\.values\.bc\.fil-in: unknown env value 'fil-in'",
        ),
        (
            "fill-in = [-9.0, 1.0]",
            "fill-in = [-9.0]",
            r"report\.paper\.values\.bc\.fill-in: must be \[mean, std\]",
        ),
        (
            "fill-in = [-9.0, 1.0]",
            "fill-in = [-9.0, -1.0]",
            r"report\.paper\.values\.bc\.fill-in: must be a finite mean and a std >= 0",
        ),
        ("fill-in = [-9.0, 1.0]", "fill-in = ['a', 1.0]", r"must be \[mean, std\] \(two numbers\)"),
        ("fill-in = [-9.0, 1.0]", "fill-in = {good = [-9.0, 1.0]}", r"bc\.fill-in: must be \[mean, std\]"),
        ("grid-world = [0.5, 0.1]\n", "", None),  # a row without a column is fine (no error)
        ('source = "A paper, Table 1"', "", r"report\.paper\.source: is required"),
        ('source = "A paper, Table 1"', 'source = " "', r"report\.paper\.source: must not be empty"),
        ('source = "A paper, Table 1"', 'source = "x"\nvalue = 1', r"report\.paper\.value: unknown key"),
    ],
)
def test_bad_paper_values_name_the_file_and_key(old: str, new: str, message: str | None) -> None:
    assert old in PAPER
    text = GRID + PAPER.replace(old, new, 1)
    if message is None:
        parse_spec(text, source="mine.toml")
        return
    with pytest.raises(ConfigError, match=r"^spec mine\.toml: " + ".*" + message):
        parse_spec(text, source="mine.toml")


def test_paper_tables_must_hold_values_at_the_columns_depth() -> None:
    no_values = GRID + '\n[report.paper]\nsource = "x"\n'
    with pytest.raises(ConfigError, match=r"report\.paper\.values: is required"):
        parse_spec(no_values, source="mine.toml")
    empty_row = GRID + '\n[report.paper]\nsource = "x"\n[report.paper.values.idt]\n'
    with pytest.raises(ConfigError, match=r"report\.paper\.values\.idt: must not be empty"):
        parse_spec(empty_row, source="mine.toml")
    two_columns = GRID.replace('metric = "return_mean"', 'columns = ["env", "quality"]')
    too_shallow = (
        two_columns + '\n[report.paper]\nsource = "x"\n[report.paper.values.idt]\ngrid-world = [1.0, 0.1]\n'
    )
    with pytest.raises(ConfigError, match=r"report\.paper\.values\.idt\.grid-world: must be a table"):
        parse_spec(too_shallow, source="mine.toml")
    typo = (
        two_columns + '\n[report.paper]\nsource = "x"\n[report.paper.values.idt]\n'
        "grid-world = {god = [1.0, 0.1]}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"values\.idt\.grid-world\.god: unknown quality value 'god' "
        r"\(the grid's quality values: good\)",
    ):
        parse_spec(typo, source="mine.toml")


def test_ablation_rows_are_named_method_dash_ablation() -> None:
    text = GRID.replace(
        'methods = ["bc", "idt", "madt", "ours"]', 'methods = ["idt", "ours"]\nablation = ["full", "kl-only"]'
    )
    spec = parse_spec(
        text + '\n[report.paper]\nsource = "x"\n[report.paper.values.ours-kl-only]\n'
        "fill-in = [-4.11, 0.22]\n[report.paper.values.idt]\nfill-in = [-7.83, 0.42]\n"
    )
    assert [c.row for c in spec.report.paper.cells] == ["ours-kl-only", "idt"]
    with pytest.raises(
        ConfigError,
        match=r"unknown variant value 'ours' \(the grid's variant values: idt, "
        r"ours-full, ours-kl-only\)",
    ):
        parse_spec(text + '\n[report.paper]\nsource = "x"\n[report.paper.values.ours]\nfill-in = [1, 0]\n')


# ----------------------------------------------------------------------------------------------------
# The report's section


def test_section_numbers_on_a_synthetic_table(tmp_path: Path) -> None:
    spec = parse_spec(GRID + PAPER)
    append_rows(tmp_path / "paper" / "results.csv", _rows(spec, OURS))
    text = write_report(spec, tmp_path, bootstrap_reps=50).read_text()
    section = text[text.index("## Beside the paper: A paper, Table 1") :]
    assert "| Method | Grid-World | Fill-In |" in section
    # Grid-World: ours orders Ours > MADT > IDT, the paper MADT > Ours > IDT; BC is only in the paper.
    assert "| BC | — · 0.50 ± 0.10 | — · -9.00 ± 1.00 |" in section
    assert "| IDT | 1.00 ± 0.71 (2) #3 · 1.50 ± 0.20 #3 | -3.00 ± 0.00 (1) #3 · -7.83 ± 0.42 #3 |" in section
    assert "| MADT | 2.00 ± 0.00 (2) #2 · 3.00 ± 0.30 #1 | -2.00 ± 0.00 (1) #2 · -6.51 ± 0.21 #2 |" in section
    assert "| Ours | 3.00 ± 1.00 (3) #1 · 2.00 ± 0.10 #2 | -1.00 ± 0.00 (2) #1 · -3.41 ± 0.12 #1 |" in section
    # tau: pairs (IDT, MADT) and (IDT, Ours) agree, (MADT, Ours) does not: (2 - 1) / 3.
    assert "| Grid-World | 3 | 0.33 | Ours | MADT | differs |" in section
    assert "| Fill-In | 3 | 1.00 | Ours | Ours | same best |" in section
    assert (
        "Same best method as the paper in 1 of the 2 columns compared; differs in Grid-World (ours: "
        "Ours; paper: MADT). Mean Kendall's τ over these columns: 0.67."
    ) in section
    assert "The paper's columns without results of ours yet: Equal Space." in section
    assert "Equal Space |" not in section  # no table row for a column we have no results in
    # The section comes after the tables and before the plots (none here).
    assert text.index("## return_mean: interquartile mean") < text.index("## Beside the paper")


def test_ties_and_single_rows_are_not_judged(tmp_path: Path) -> None:
    spec = parse_spec(GRID + PAPER)
    tied = {
        ("grid-world", "idt"): [2.001],
        ("grid-world", "madt"): [1.999],
        ("grid-world", "ours"): [2.0],
        ("fill-in", "ours"): [-1.0],
    }
    append_rows(tmp_path / "paper" / "results.csv", _rows(spec, tied))
    frame = load_results(tmp_path, spec)
    summary = summarize(frame, spec, "return_mean", "variant", ["env"], reps=20)
    columns, missing = compare_with_paper(summary, frame, spec)
    grid_world, fill_in = columns
    # Means equal as shown (2.00) tie: all three are our best, tau is undefined, and nothing is judged.
    assert grid_world.our_best == ("IDT", "MADT", "Ours") and grid_world.paper_best == ("MADT",)
    assert math.isnan(grid_world.tau) and grid_world.same_best is None
    assert [row.our_rank for row in grid_world.rows] == [None, 1, 1, 1]  # BC: the paper's only
    assert fill_in.common == 1 and fill_in.same_best is None
    assert missing == ["Equal Space"]
    text = write_report(spec, tmp_path, bootstrap_reps=20).read_text()
    assert "| Grid-World | 3 | n/a | IDT, MADT, Ours | MADT | — |" in text
    assert (
        "No column can be compared yet. Not judged (fewer than two rows in both, or all tied): "
        "Grid-World, Fill-In."
    ) in text


def test_two_report_columns_and_ablation_rows(tmp_path: Path) -> None:
    text = GRID.replace(
        'methods = ["bc", "idt", "madt", "ours"]',
        'methods = ["idt", "ours"]\nablation = ["kl-only", "full"]\nquality = ["good", "poor"]',
    )
    text = text.replace('metric = "return_mean"', 'columns = ["env", "quality"]')
    spec = parse_spec(
        text
        + """
[report.paper]
source = "A paper, Table 3"

[report.paper.values.ours-kl-only]
grid-world = {good = [1.62, 0.29], poor = [1.0, 0.1]}

[report.paper.values.ours-full]
grid-world = {good = [2.09, 0.22], poor = [0.5, 0.1]}
"""
    )
    rows = []
    for run in expand(spec):
        if run.env == "grid-world" and run.method == "ours" and run.seed == 0:
            value = {
                ("full", "good"): 3.0,
                ("kl-only", "good"): 1.0,
                ("full", "poor"): 2.0,
                ("kl-only", "poor"): 1.0,
            }[(run.ablation, run.quality)]
            rows += [
                {**row, "value": value}
                for row in _rows(spec, {("grid-world", "ours"): [0.0]})
                if row["run_id"] == run.run_id
            ]
    append_rows(tmp_path / "paper" / "results.csv", rows)
    report = write_report(spec, tmp_path, bootstrap_reps=20).read_text()
    assert "| Method | Grid-World / good | Grid-World / poor |" in report
    assert "| Ours (full method) | 3.00 ± 0.00 (1) #1 · 2.09 ± 0.22 #1 |" in report
    assert "| Grid-World / good | 2 | 1.00 | Ours (full method) | Ours (full method) | same best |" in report
    assert (
        "| Grid-World / poor | 2 | -1.00 | Ours (full method) | Ours (conventional distillation) | differs |"
    ) in report


def test_reports_without_paper_values_are_unchanged(tmp_path: Path) -> None:
    with_paper, without = parse_spec(GRID + PAPER), parse_spec(GRID)
    for root, spec in ((tmp_path / "a", with_paper), (tmp_path / "b", without)):
        append_rows(root / "paper" / "results.csv", _rows(spec, OURS))
    text_with = write_report(with_paper, tmp_path / "a", bootstrap_reps=50).read_text()
    text_without = write_report(without, tmp_path / "b", bootstrap_reps=50).read_text()
    assert "Beside the paper" not in text_without

    def comparable(text: str) -> list[str]:  # the paths and the time of generation differ
        return [line for line in text.splitlines() if not line.startswith("From `")]

    start = text_with.index("## Beside the paper")
    assert comparable(text_with[:start].rstrip() + "\n") == comparable(text_without)
