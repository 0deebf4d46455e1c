"""The dataset behind each results row (``dataset_checksum``): older tables read and upgraded, the rule that
reuses a copied table's rows only on the dataset they were trained on, and the report's note on cells that
mix datasets. Hand-made tables and tiny datasets; nothing is trained."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marlkd.data import write_dataset
from marlkd.data.format import stored_checksum
from marlkd.experiments import expand, load_results, parse_spec, run_sweep
from marlkd.experiments.report import write_report
from marlkd.experiments.results import (
    OLDER_COLUMNS,
    RESULT_COLUMNS,
    append_rows,
    check_table,
    recorded_checksums,
    remove_runs,
    result_rows,
    sync_rows,
)
from marlkd.experiments.runner import _settle_finished, dataset_file
from marlkd.experiments.spec import DatasetKey, RunSpec

SPEC = """
name = "mini"

[grid]
envs = ["grid-world", "fill-in"]
methods = ["idt", "ours"]
seeds = 2
steps = [10]
eval_episodes = [2]
dataset_episodes = [20]

[per_env.fill-in]
quality = ["random"]
"""

A, B = "a" * 64, "b" * 64


def _row(run_id: str, checksum: str | None = None, metric: str = "return_mean", value: float = 1.0):
    row: dict[str, Any] = {
        "spec": "mini",
        "run_id": run_id,
        "env": "grid-world",
        "method": "idt",
        "seed": 0,
        "quality": "good",
        "metric": metric,
        "value": value,
        "timestamp": "2026-01-01T00:00:00+00:00",
    }
    if checksum is not None:
        row["dataset_checksum"] = checksum
    return row


def _write_older(path: Path, rows: list[dict[str, Any]]) -> None:
    """A table as versions before ``dataset_checksum`` wrote it (their 21-column header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=OLDER_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def _checksums_by_run(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            found.setdefault(row["run_id"], set()).add(row["dataset_checksum"])
    return found


# ----------------------------------------------------------------------------------------------------
# The column, and older tables


def test_result_rows_record_the_runs_dataset() -> None:
    run = expand(parse_spec(SPEC))[0]
    rows = result_rows(run, {"return_mean": 1.0, "dataset_checksum": A}, [{"metric": "curve:r", "value": 0}])
    assert [row["dataset_checksum"] for row in rows] == [A, A]
    assert all(row["metric"] != "dataset_checksum" for row in rows)  # a string: never a metric row
    assert result_rows(run, {"return_mean": 1.0}, [])[0]["dataset_checksum"] == ""


def test_an_older_table_is_read_and_upgraded_on_append(tmp_path: Path) -> None:
    table = tmp_path / "mini" / "results.csv"
    _write_older(table, [_row("old/s0"), _row("old/s0", metric="train_time_s", value=3.0)])
    check_table(table)
    frame = load_results(tmp_path, "mini")
    assert list(frame["dataset_checksum"]) == ["", ""] and set(RESULT_COLUMNS) <= set(frame.columns)
    assert recorded_checksums(table) == {"old/s0": ""}

    assert append_rows(table, [_row("new/s0", A)]) == 1
    header, rows = _read(table)
    assert tuple(header) == RESULT_COLUMNS
    assert all(len(row) == len(RESULT_COLUMNS) for row in rows)  # never a mixed-width file
    assert _checksums_by_run(table) == {"old/s0": {""}, "new/s0": {A}}
    assert not [p for p in table.parent.iterdir() if ".tmp" in p.name]  # the atomic rewrite's temporary
    check_table(table)
    assert sorted(load_results(tmp_path, "mini")["value"]) == [1.0, 1.0, 3.0]
    assert append_rows(table, [_row("new/s0", A)]) == 0  # still idempotent per run


def test_an_older_table_is_upgraded_on_sync_and_its_rows_take_the_markers_dataset(tmp_path: Path) -> None:
    table = tmp_path / "mini" / "results.csv"
    _write_older(table, [_row("marked/s0"), _row("copied/s0")])
    repaired = sync_rows(table, {"marked/s0": [_row("marked/s0", A)], "lost/s0": [_row("lost/s0", B)]})
    assert repaired == ["marked/s0", "lost/s0"]
    header, rows = _read(table)
    assert tuple(header) == RESULT_COLUMNS and all(len(row) == len(header) for row in rows)
    # the finished run's rows now name its dataset; a run known only from the table keeps ''
    assert _checksums_by_run(table) == {"marked/s0": {A}, "copied/s0": {""}, "lost/s0": {B}}
    assert sync_rows(table, {"marked/s0": [_row("marked/s0", A)]}) == []  # in line: nothing to do
    assert sync_rows(table, {"marked/s0": [_row("marked/s0", B)]}) == ["marked/s0"]  # retrained elsewhere
    assert _checksums_by_run(table)["marked/s0"] == {B}


def test_remove_runs_upgrades_and_keeps_the_others(tmp_path: Path) -> None:
    table = tmp_path / "results.csv"
    _write_older(table, [_row("x/s0"), _row("x/s0", metric="m2"), _row("y/s0")])
    assert remove_runs(table, ["x/s0", "absent"]) == 2
    header, rows = _read(table)
    assert tuple(header) == RESULT_COLUMNS and [row[1] for row in rows] == ["y/s0"]
    assert remove_runs(table, ["absent"]) == 0 and remove_runs(tmp_path / "none.csv", ["y/s0"]) == 0


# ----------------------------------------------------------------------------------------------------
# Reusing a copied table's rows


def _dataset(path: Path, arrays_and_metadata: tuple[dict[str, np.ndarray], dict[str, Any]], shift: float):
    """A tiny valid dataset at ``path`` whose checksum depends on ``shift`` (its rewards moved by it)."""
    arrays, metadata = arrays_and_metadata
    arrays = {**arrays, "rewards": arrays["rewards"] + np.float32(shift) * arrays["mask"][..., None]}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dataset(path, arrays, metadata)


def _locate(key: DatasetKey, data_root: Path) -> Path:
    return data_root / f"{key.env}-{key.quality}.h5"


def test_stored_checksum_reads_the_files_attribute(tmp_path: Path, tiny_dataset: Path) -> None:
    from marlkd.data import load_dataset

    assert stored_checksum(tiny_dataset) == load_dataset(tiny_dataset).metadata.checksum
    (tmp_path / "text.h5").write_text("placeholder")
    assert stored_checksum(tmp_path / "text.h5") is None and stored_checksum(tmp_path / "no.h5") is None


def test_dataset_file_is_where_the_default_dataset_function_keeps_it(tmp_path: Path) -> None:
    from marlkd.experts.store import dataset_path

    run = next(r for r in expand(parse_spec(SPEC)) if r.env == "fill-in")
    assert dataset_file(run.dataset, tmp_path) == dataset_path(
        tmp_path, "fill-in", "random", run.dataset.episodes, seed=run.dataset.seed
    )


def test_copied_rows_are_reused_only_on_their_dataset(tmp_path: Path, tiny_dataset_arrays) -> None:
    runs = [run for run in expand(parse_spec(SPEC)) if run.seed == expand(parse_spec(SPEC))[0].seed]
    grid = [run for run in runs if run.env == "grid-world"]  # idt, ours: their dataset file is there
    fill = [run for run in runs if run.env == "fill-in"]  # no dataset file yet
    current = stored_checksum(
        _dataset(_locate(grid[0].dataset, tmp_path / "datasets"), tiny_dataset_arrays, 0.0)
    )
    assert current is not None
    table = tmp_path / "mini" / "results.csv"
    append_rows(table, [_row(grid[0].run_id, current), _row(grid[0].run_id, current, "train_time_s")])
    append_rows(table, [_row(grid[1].run_id, B)])  # trained on another dataset
    append_rows(table, [_row(fill[0].run_id, A)])  # its dataset is not made yet
    rows_before = _checksums_by_run(table)

    todo, skipped, unverified = _settle_finished(tmp_path, table, runs, _locate)
    assert [run.run_id for run in todo] == [grid[1].run_id, fill[1].run_id]
    assert skipped == 2 and unverified == [(fill[0], A)]
    after = _checksums_by_run(table)
    assert grid[1].run_id not in after  # the stale rows are gone: the new ones will take their place
    assert after == {k: v for k, v in rows_before.items() if k != grid[1].run_id}

    # rows that record no dataset (an older table) are not trusted either
    remove_runs(table, [grid[0].run_id])
    append_rows(table, [_row(grid[0].run_id, "")])
    todo, skipped, _ = _settle_finished(tmp_path, table, runs, _locate)
    assert grid[0].run_id in [run.run_id for run in todo] and grid[0].run_id not in _checksums_by_run(table)

    # without a way to find the files (a custom dataset function) every recorded run waits for its dataset
    append_rows(table, [_row(grid[0].run_id, current)])
    todo, skipped, unverified = _settle_finished(tmp_path, table, runs, None)
    assert {run.run_id for run, _ in unverified} == {grid[0].run_id, fill[0].run_id}


def _checked_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Stands in for training: counts its calls and reports the dataset's checksum as training does."""
    assert dataset is not None
    with open(run_dir / "calls.txt", "a") as f:
        f.write("call\n")
    return {
        "return_mean": 1.0 + run.seed,
        "train_steps": run.steps,
        "dataset_checksum": stored_checksum(dataset),
    }


def _maker(arrays_and_metadata: tuple[dict[str, np.ndarray], dict[str, Any]], shift: float):
    def make(key: DatasetKey, data_root: Path) -> Path:
        path = _locate(key, data_root)
        return path if path.exists() else _dataset(path, arrays_and_metadata, shift)

    return make


def _calls(root: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (root / "runs").rglob("calls.txt"))


@pytest.mark.parametrize("same_data", [True, False])
def test_a_resumed_sweep_retrains_runs_whose_dataset_was_made_anew(
    tmp_path: Path, tiny_dataset_arrays, same_data: bool
) -> None:
    spec = parse_spec(SPEC)
    kwargs: dict[str, Any] = {"workers": 0, "run_fn": _checked_run, "progress": False}
    first = run_sweep(
        spec, tmp_path / "here", dataset_fn=_maker(tiny_dataset_arrays, 0.0), max_seeds=1, **kwargs
    )
    assert first.ok and first.done == first.total == 4
    elsewhere = tmp_path / "elsewhere"  # another machine: the table only; its datasets are made there
    (elsewhere / "mini").mkdir(parents=True)
    (elsewhere / "mini" / "results.csv").write_bytes(
        (tmp_path / "here" / "mini" / "results.csv").read_bytes()
    )

    shift = 0.0 if same_data else 0.5  # the same data again, or a dataset that came out otherwise
    rest = run_sweep(spec, elsewhere, dataset_fn=_maker(tiny_dataset_arrays, shift), **kwargs)
    assert rest.ok and rest.total == 8
    if same_data:
        assert (rest.skipped, rest.done, _calls(elsewhere)) == (4, 4, 4)
    else:
        assert (rest.skipped, rest.done, _calls(elsewhere)) == (0, 8, 8)
    made = {stored_checksum(p) for p in (elsewhere / "datasets").glob("*.h5")}
    assert len(made) == 1  # both environments' tiny datasets hold the same arrays
    table = elsewhere / "mini" / "results.csv"
    assert _checksums_by_run(table) == {run.run_id: made for run in expand(spec)}
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and len({row["run_id"] for row in rows}) == 8  # one row each: none left twice


# ----------------------------------------------------------------------------------------------------
# The report


def _report_table(root: Path, checksums: dict[tuple[str, str], list[str]]) -> Path:
    spec = parse_spec(SPEC)
    rows = []
    for run in expand(spec):
        per_seed = checksums.get((run.env, run.method))
        checksum = per_seed[run.seed] if per_seed else A
        rows += result_rows(run, {"return_mean": 1.0 + run.seed, "dataset_checksum": checksum}, [])
    table = root / "mini" / "results.csv"
    append_rows(table, rows)
    return write_report(spec, root, bootstrap_reps=50)


def test_the_report_names_cells_that_mix_datasets(tmp_path: Path) -> None:
    text = _report_table(tmp_path, {("grid-world", "ours"): [A, ""], ("fill-in", "idt"): [A, B]}).read_text()
    assert "## Cells trained on more than one dataset" in text
    assert "- Grid-World / Ours: 1 runs on dataset aaaaaaaa…, 1 runs on unrecorded data" in text
    assert "- Fill-In / IDT: 1 runs on dataset aaaaaaaa…, 1 runs on dataset bbbbbbbb…" in text
    assert "Grid-World / IDT" not in text and "Fill-In / Ours" not in text  # one dataset each
    assert text.index("## Cells trained") > text.index("## return_mean: mean ± std (n)")


def test_the_report_is_quiet_on_one_dataset_and_general_on_an_older_table(tmp_path: Path) -> None:
    text = _report_table(tmp_path / "one", {}).read_text()
    assert "more than one dataset" not in text and "Datasets:" not in text
    text = _report_table(
        tmp_path / "older", {(e, m): ["", ""] for e in ("grid-world", "fill-in") for m in ("idt", "ours")}
    ).read_text()
    assert "Datasets: this table does not record which dataset" in text
    assert "## Cells trained" not in text and "unrecorded data" not in text
