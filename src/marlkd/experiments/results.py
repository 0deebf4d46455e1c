"""The tidy results table of a sweep, ``<root>/<sweep>/results.csv``: a row per run, metric (and curve point).

Only the sweep's driver process writes the table: workers (local processes or Ray tasks) return their
results to it, and it appends each finished run's rows under an exclusive file lock
(``results.csv.lock``), so several drivers on one sweep (say, one per ``--only-env``) append safely too.
Appends are idempotent per run id (a run's rows are written once, whichever driver finds it finished
first) and made with one ``write`` of whole lines; a line cut by a crash is dropped before the next
append, and a damaged table is reported by :func:`load_results` (never half-read) and repaired from the
runs' markers on the sweep's next launch (:func:`sync_rows`).
Runs live in one store shared by every sweep under the root (``<root>/runs/<run_id>``); a run's marker
(``experiment.json``) keeps only what does not depend on the sweep (its results, learning curve,
provenance and finishing time), and each sweep derives its own rows from it (:func:`marker_rows`: its own
``spec`` name and setting columns). A run whose marker says done but whose rows are missing from a sweep's
table (a driver killed between the two writes, or a run finished by another sweep) is appended on that
sweep's next launch, so the table is always complete.

Each row names the dataset its run was trained on (``dataset_checksum``: the SHA-256 of the dataset's
arrays, as the run's ``results.json`` records it; '' when unknown). Tables from before that column are read
with it empty and upgraded in place (whole, atomically, under the lock) the first time a driver writes to
them.

The module is about 500 lines because its one job, the table, holds both what a row is (the columns, a
run's metrics and curve points) and the file's locked appends, repair, upgrade and reads, which must
agree on those columns.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marlkd import atomic, filelock
from marlkd.errors import MarlkdError
from marlkd.experiments.spec import SweepSpec, load_spec, variant_name
from marlkd.provenance import provenance

if TYPE_CHECKING:
    import pandas as pd

    from marlkd.experiments.spec import RunSpec

RESULT_COLUMNS = (
    "spec",
    "run_id",
    "env",
    "method",
    "seed",
    "quality",
    "num_trajectories",
    "ablation",
    "precision",
    "steps",
    "eval_episodes",
    "dataset_episodes",
    "dataset_checksum",
    "metric",
    "value",
    "train_steps",
    "wall_time_s",
    "env_steps",
    "marlkd_version",
    "torch_version",
    "code_revision",
    "timestamp",
)
# The header of tables written before ``dataset_checksum`` existed: read as they are (the column filled
# with ''), and rewritten with this version's header, under the table's lock, on the next append or sync.
OLDER_COLUMNS = tuple(c for c in RESULT_COLUMNS if c != "dataset_checksum")
NUMERIC_COLUMNS = (
    "seed",
    "num_trajectories",
    "steps",
    "eval_episodes",
    "dataset_episodes",
    "value",
    "train_steps",
    "wall_time_s",
    "env_steps",
)
_INTEGER_COLUMNS = ("seed", "num_trajectories", "steps", "eval_episodes", "dataset_episodes")
RESULTS_FILE = "results.csv"
CURVE_PREFIX = "curve:"
# ``ours``'s distillation diagnostics kept as curves beside the returns (docs/method.md): whether the
# relational loss carries the teacher's relation or has collapsed, and what each term sends the students.
DIAGNOSTIC_CURVES = (
    "distill/angle_corr",
    "distill/mapped_cosine_student",
    "distill/angle_mapped_student_std",
    "distill/angle_teacher_std",
    "distill/grad_norm_rel",
    "distill/grad_norm_kl",
    "distill/l_rel",
    "distill/l_kl",
)
# Keys of a run's results that describe it rather than measure it: not metric rows.
_NOT_METRICS = frozenset({"seed", "steps", "train_steps", "dataset_episodes", "episodes", "curve"})


def sweep_dir(root: str | Path, sweep: str) -> Path:
    """``<root>/<sweep>``: the sweep's results table, spec, report and teachers (its runs are in the
    root's shared store, ``<root>/runs``)."""
    return Path(root) / sweep


def results_path(root: str | Path, sweep: str) -> Path:
    return sweep_dir(root, sweep) / RESULTS_FILE


def scalar_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric top-level entries of a run's results (nested config and lists are left out)."""
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metrics[key] = float(value)
    return metrics


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def curve_points(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Learning-curve points from a run's tidy ``metrics.csv`` rows (``step, wall_time_s, metric, value``,
    optionally ``env_steps``) or from the ``curve`` a run function returns (the same keys, or one column
    per metric). Only metrics whose name holds ``return``, and the distillation diagnostics of
    :data:`DIAGNOSTIC_CURVES`, are kept; each point becomes
    ``{"metric": "curve:<name>", "value", "train_steps", "wall_time_s", "env_steps"}``."""
    points: list[dict[str, Any]] = []
    for record in records:
        step = _number(record.get("step", record.get("train_steps")))
        position = {
            "train_steps": step,
            "wall_time_s": _number(record.get("wall_time_s")),
            "env_steps": _number(record.get("env_steps")),
        }
        if "metric" in record and "value" in record:
            items = [(str(record["metric"]), record["value"])]
        else:
            items = [
                (k, v)
                for k, v in record.items()
                if k not in ("step", "train_steps", "wall_time_s", "env_steps")
            ]
        for name, raw in items:
            value = _number(raw)
            if value is not None and ("return" in name.lower() or name in DIAGNOSTIC_CURVES):
                points.append({"metric": CURVE_PREFIX + name, "value": value, **position})
    return points


def read_curve(metrics_csv: str | Path) -> list[dict[str, Any]]:
    """:func:`curve_points` of a run directory's ``metrics.csv`` (empty if there is none)."""
    path = Path(metrics_csv)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return curve_points(csv.DictReader(f))


def result_rows(
    run: RunSpec,
    result: Mapping[str, Any],
    curve: Iterable[Mapping[str, Any]],
    timestamp: str | None = None,
    elapsed_s: float | None = None,
    source: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The table rows of one finished run: one per scalar metric of ``result``, then one per curve point.

    ``source`` is the provenance (versions, code revision) of the process that trained the run; default:
    this process's :func:`provenance`."""
    stamp = timestamp or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    keys = ("marlkd_version", "torch_version", "code_revision")
    origin = dict(source) if source and all(k in source for k in keys) else {**provenance(), **(source or {})}
    base = {
        **run_columns(run),
        "dataset_checksum": str(result.get("dataset_checksum") or run.config.get("data_checksum") or ""),
        **origin,
        "timestamp": stamp,
    }
    final_steps = _number(result.get("train_steps", result.get("steps", run.steps)))
    wall = _number(result.get("wall_time_s"))
    if wall is None:
        wall = elapsed_s
    env_steps = _number(result.get("env_steps"))
    rows = [
        {
            **base,
            "metric": name,
            "value": value,
            "train_steps": final_steps,
            "wall_time_s": wall,
            "env_steps": env_steps,
        }
        for name, value in scalar_metrics(result).items()
    ]
    rows.extend({**base, **point} for point in curve)
    return rows


def run_columns(run: RunSpec) -> dict[str, Any]:
    """The columns of a row that say which run of which sweep it belongs to (``spec``, ids, settings)."""
    return {
        "spec": run.sweep,
        "run_id": run.run_id,
        "env": run.env,
        "method": run.method,
        "seed": run.seed,
        **run.settings,
    }


def marker_rows(run: RunSpec, marker: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a finished run for ``run``'s sweep, from its ``done`` marker: its ``result``, ``curve``,
    ``provenance``, ``finished`` and ``elapsed_s`` (nothing sweep-specific)."""
    return result_rows(
        run,
        marker.get("result") or {},
        marker.get("curve") or [],
        marker.get("finished"),
        marker.get("elapsed_s"),
        source=marker.get("provenance"),
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the table's exclusive lock (``<path>.lock``, :mod:`marlkd.filelock`) for the ``with`` block."""
    with filelock.locked(path.with_name(path.name + ".lock"), what=f"results table {path}"):
        yield


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _encode(rows: Iterable[Mapping[str, Any]], header: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    if header:
        writer.writeheader()
    writer.writerows({k: _cell(row.get(k)) for k in RESULT_COLUMNS} for row in rows)
    return buffer.getvalue().encode()


def _drop_partial_line(path: Path) -> int:
    """Cut a last line that a crash left without its end (an interrupted write); returns bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        block = min(size, 1 << 20)
        f.seek(size - block)
        tail = f.read(block)
        end = tail.rfind(b"\n")
        keep = size - block + end + 1 if end >= 0 else 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def _write_all(path: Path, data: bytes) -> None:
    """Append ``data`` with one ``write`` on an ``O_APPEND`` descriptor, then fsync: a crash leaves either
    none of it or a cut last line, which the next append or read deals with."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_header(path: Path) -> tuple[str, ...]:
    """The table's header: this version's (:data:`RESULT_COLUMNS`) or the older one
    (:data:`OLDER_COLUMNS`); anything else is refused."""
    with open(path, newline="") as f:
        header = tuple(next(csv.reader(f), []))
    if header not in (RESULT_COLUMNS, OLDER_COLUMNS):
        raise MarlkdError(
            f"{path}: its columns {list(header)} are not this version's "
            f"{list(RESULT_COLUMNS)}; move it away to start a new table"
        )
    return header


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The table's whole rows, as dicts of this version's columns (an older table's ``dataset_checksum``
    is '')."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return [
            {**dict.fromkeys(RESULT_COLUMNS, ""), **dict(zip(header, row, strict=True))}
            for row in reader
            if len(row) == len(header)
        ]


def _rewrite(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace the table with ``rows`` under this version's header, atomically (the caller holds the lock)."""
    with atomic.replacing(path) as tmp:
        tmp.write_bytes(_encode(rows, header=True))


def _open_for_writing(path: Path) -> None:
    """Before a write to an existing table (lock held): cut a line a crash left short, check the header
    and upgrade an older table to this version's header (its rows get '' as ``dataset_checksum``)."""
    _drop_partial_line(path)
    if _check_header(path) != RESULT_COLUMNS:
        _rewrite(path, _read_rows(path))


def append_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows to the table at ``path`` (header written on first use) under the file lock; returns
    how many were written.

    Idempotent per run: rows of a run id the table already holds are not written again (so two drivers
    finishing or finding the same run add its rows once). A cut last line left by a crash is removed first."""
    path = Path(path)
    rows = list(rows)
    if not rows:
        return 0
    with locked(path):
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            _open_for_writing(path)
            present = _run_ids(path)
            rows = [row for row in rows if str(row.get("run_id")) not in present]
            if not rows:
                return 0
        _write_all(path, _encode(rows, header=new))
    return len(rows)


def sync_rows(path: str | Path, expected: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """Make the table hold exactly ``expected[run_id]``'s rows for each run id given (the finished runs'
    rows, from their markers): runs missing from it are appended, runs whose rows were cut or damaged (a
    count that differs) or name another dataset than the marker's (``dataset_checksum``: rows of an earlier
    training of the run, or of a table from before the column) are rewritten. Other rows are left as they
    are. Returns the ids repaired or added."""
    path = Path(path)
    if not expected:
        return []
    with locked(path):
        if not path.exists() or path.stat().st_size == 0:
            _write_all(path, _encode([r for rows in expected.values() for r in rows], header=True))
            return list(expected)
        _open_for_writing(path)
        counts = _run_id_counts(path)
        checksums = _run_checksums(path)
        wrong = {
            run_id
            for run_id, rows in expected.items()
            if run_id in counts and (counts[run_id] != len(rows) or checksums[run_id] != _rows_checksum(rows))
        }
        missing = [run_id for run_id in expected if run_id not in counts]
        if wrong:
            kept = [row for row in _read_rows(path) if row["run_id"] not in wrong]
            _rewrite(path, kept + [r for run_id in sorted(wrong) for r in expected[run_id]])
        if missing:
            _write_all(path, _encode([r for run_id in missing for r in expected[run_id]], header=False))
    return sorted(wrong) + missing


def _run_id_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        column = header.index("run_id") if "run_id" in header else None
        if column is None:
            return counts
        for row in reader:
            if len(row) == len(header):
                counts[row[column]] = counts.get(row[column], 0) + 1
    return counts


def recorded_row_counts(path: str | Path) -> dict[str, int]:
    """Rows per run id in the table at ``path`` (empty when there is none; damaged lines not counted)."""
    path = Path(path)
    return _run_id_counts(path) if path.is_file() else {}


def _rows_checksum(rows: Iterable[Mapping[str, Any]]) -> str:
    """The one ``dataset_checksum`` of a run's rows; '' when none is recorded or they disagree."""
    found = {str(row.get("dataset_checksum") or "") for row in rows}
    return found.pop() if len(found) == 1 else ""


def _run_checksums(path: Path) -> dict[str, str]:
    by_run: dict[str, list[dict[str, str]]] = {}
    for row in _read_rows(path):
        by_run.setdefault(row["run_id"], []).append(row)
    return {run_id: _rows_checksum(rows) for run_id, rows in by_run.items()}


def recorded_checksums(path: str | Path) -> dict[str, str]:
    """The dataset checksum each run of the table at ``path`` was trained on, by run id ('' when its rows
    do not record one: an older table, a run function that does not report it, or rows that disagree)."""
    path = Path(path)
    return _run_checksums(path) if path.is_file() else {}


def remove_runs(path: str | Path, run_ids: Iterable[str]) -> int:
    """Delete the rows of ``run_ids`` from the table at ``path`` (atomically, under its lock; an older
    table is upgraded on the way); returns how many rows went."""
    path = Path(path)
    drop = set(run_ids)
    if not drop or not path.is_file():
        return 0
    with locked(path):
        if path.stat().st_size == 0:
            return 0
        _open_for_writing(path)
        rows = _read_rows(path)
        kept = [row for row in rows if row["run_id"] not in drop]
        if len(kept) != len(rows):
            _rewrite(path, kept)
    return len(rows) - len(kept)


def _run_ids(path: Path) -> set[str]:
    return set(_run_id_counts(path))


def recorded_run_ids(path: str | Path) -> set[str]:
    """Ids of the runs that have rows in the table at ``path``."""
    path = Path(path)
    if not path.is_file():
        return set()
    return _run_ids(path)


def check_table(path: str | Path) -> None:
    """Raise :class:`MarlkdError` if the table at ``path`` is damaged: a last line cut short (a crash while
    it was written) or a row whose number of cells is not the header's. The next ``marlkd experiment run``
    repairs such a table from the runs' markers."""
    path = Path(path)
    fix = "run `marlkd experiment run` on the sweep again to repair it from the finished runs"
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        line = data.count(b"\n") + 1
        raise MarlkdError(f"{path}: line {line} is cut short (an interrupted write); {fix}")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise MarlkdError(
                    f"{path}: line {number} has {len(row)} cells where the header has {len(header)}; {fix}"
                )


def _sweep_of(spec: SweepSpec | str | Path, quick: bool) -> str:
    if isinstance(spec, SweepSpec):
        return spec.sweep_name(quick)
    text = str(spec)
    if text.endswith(".toml"):
        return load_spec(text).sweep_name(quick)
    return f"{text}-quick" if quick and not text.endswith("-quick") else text


def load_results(root: str | Path, spec: SweepSpec | str | Path, quick: bool = False) -> pd.DataFrame:
    """The sweep's results table as a DataFrame (columns :data:`RESULT_COLUMNS` plus ``variant``).

    ``spec`` is a :class:`SweepSpec`, a spec file, or a sweep name (``table1``; ``quick`` picks
    ``table1-quick``). If a run was recorded more than once, only its latest rows are kept.
    """
    import pandas as pd

    path = results_path(root, _sweep_of(spec, quick))
    if not path.is_file():
        raise MarlkdError(f"no results table at {path}: run the sweep first (marlkd experiment run)")
    check_table(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "dataset_checksum" not in frame.columns:  # a table from before the column: unknown for every row
        frame.insert(list(RESULT_COLUMNS).index("dataset_checksum"), "dataset_checksum", "")
    frame = frame.drop_duplicates()
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise MarlkdError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce")
        if column in _INTEGER_COLUMNS:
            frame[column] = frame[column].astype("Int64")
    if len(frame):
        latest = frame.groupby("run_id")["timestamp"].transform("max")
        frame = frame[frame["timestamp"] == latest].reset_index(drop=True)
    frame["variant"] = [variant_name(m, a) for m, a in zip(frame["method"], frame["ablation"], strict=True)]
    return frame
