"""The report's comparison of runs a spec no longer asks for with the runs that replaced them."""

from __future__ import annotations

import pandas as pd

from marlkd.experiments.parsing import load_spec
from marlkd.experiments.superseded import superseded_section, superseded_table


def _frame() -> pd.DataFrame:
    rows = []
    runs = {  # (run-id prefix, method, env): returns of the seeds
        ("old", "cql", "grid-world"): [1.0, 2.0, 3.0],
        ("new", "cql", "grid-world"): [3.0, 4.0, 5.0],
        ("new", "idt", "grid-world"): [2.0, 2.0],  # no earlier runs: not compared
        ("old", "bc", "fill-in"): [0.0],  # no current runs: not compared
    }
    names = {"cql": "MA-CQL", "idt": "IDT", "bc": "BC"}
    for (prefix, method, env), values in runs.items():
        for seed, value in enumerate(values):
            run_id = f"{env}/{method}/{prefix}/s{seed}"
            for metric, v in (("return_mean", value), ("train_time_s", 10.0)):
                rows.append(
                    dict(variant=names[method], method=method, env=env, run_id=run_id, metric=metric, value=v)
                )
    return pd.DataFrame(rows)


def test_earlier_and_current_runs_of_a_cell_side_by_side() -> None:
    frame = _frame()
    current = {r for r in frame["run_id"] if "/new/" in r}
    table = superseded_table(frame, current, load_spec("table1"), reps=200)
    lines = table.splitlines()
    assert len(lines) == 3  # header, rule, the one cell with both kinds of runs
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    # earlier (1, 2, 3): mean 2, std 1; current (3, 4, 5): mean 4, std 1. A resampled difference of
    # means lies in [3 - 3, 5 - 1] and is 0 only if every draw is the extreme: the interval is above 0
    assert cells[:4] == ["MA-CQL", "Grid-World", "2.00 ± 1.00 (3)", "4.00 ± 1.00 (3)"]
    difference, interval = cells[4].split(" [")
    assert difference == "2.00"
    low, high = (float(x) for x in interval.rstrip("]").split(", "))
    assert 0.0 < low <= 2.0 <= high <= 4.0


def test_no_section_without_a_cell_holding_both() -> None:
    frame = _frame()
    spec = load_spec("table1")
    assert superseded_section(frame, set(frame["run_id"]), spec) == []  # nothing earlier
    assert superseded_section(frame, set(), spec) == []  # nothing current
    lines = superseded_section(frame, {r for r in frame["run_id"] if "/new/" in r}, spec, reps=100)
    assert lines[0] == "## Earlier runs beside the current ones"
