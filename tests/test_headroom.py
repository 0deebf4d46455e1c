"""The report's headroom and probability-of-improvement tables on a hand-built results frame."""

from __future__ import annotations

import pandas as pd

from marlkd.experiments.headroom import headroom_table, improvement_table
from marlkd.experiments.parsing import load_spec


def _frame() -> pd.DataFrame:
    rows = []
    runs = {  # (display name, method): returns of 3 seeds on grid-world
        ("IDT", "idt"): [1.0, 2.0, 3.0],
        ("MADT", "madt"): [2.0, 3.0, 4.0],
        ("Ours", "ours"): [4.0, 5.0, 6.0],
    }
    for (variant, method), values in runs.items():
        for seed, value in enumerate(values):
            # every run records its return and what the data scores (mean 0.5, best 3.0)
            for metric, v in (("return_mean", value), ("data/mean_return", 0.5), ("data/best_return", 3.0)):
                rows.append(
                    dict(variant=variant, method=method, env="grid-world", seed=seed, metric=metric, value=v)
                )
    for seed, value in enumerate([7.0, 7.0, 7.0]):  # ours records its teacher's return
        rows.append(
            dict(
                variant="Ours",
                method="ours",
                env="grid-world",
                seed=seed,
                metric="teacher/return_mean",
                value=value,
            )
        )
    return pd.DataFrame(rows)


def test_headroom_row_of_a_task() -> None:
    table = headroom_table(_frame(), load_spec("table1"), reps=200)
    header, _, row = table.splitlines()
    assert "Lead / noise" in header and "Teacher − IDT" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    # data mean 0.50, best 3.00, no expert recorded; best Ours 5.00; spread 5 - 2 = 3; lead 5 - 3 = 2;
    # every method's seed std is 1, so noise 1 and lead / noise 2; teacher 7 - IDT's mean 2 = 5
    assert cells[:9] == ["Grid-World", "0.50", "3.00", "n/a", "Ours 5.00", "3.00", "2.00", "1.00", "2.00"]
    assert cells[9].startswith("5.00 [")


def test_improvement_table_compares_ours_with_every_other_method() -> None:
    table = improvement_table(_frame(), load_spec("table1"), reps=200)
    lines = table.splitlines()
    assert lines[0].startswith("| P(ours > method) | Grid-World")
    body = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines[2:]}
    # ours (4, 5, 6) against IDT (1, 2, 3): every pair won; against MADT (2, 3, 4): 8 wins, 1 tie (4 = 4)
    assert body["IDT"].startswith("1.00 [1.00, 1.00]")
    assert body["MADT"].startswith(f"{8.5 / 9:.2f}")
    assert improvement_table(_frame().query("method != 'ours'"), load_spec("table1")) == ""
