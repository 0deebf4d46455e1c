"""The run store: one directory a run under ``<root>/runs``, its marker and its lock.

A run's directory is ``<root>/runs/<run_id>``, shared by every sweep under the root. The driver holds the
run's lock (:mod:`marlkd.filelock` on ``<root>/runs/<run_id>.lock``) while it executes the run and writes
its marker (``experiment.json``: status ``done`` with the results, or ``failed`` with the traceback) when
the run ends.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marlkd import atomic, filelock
from marlkd.experiments.spec import RunSpec

STORE_DIR = "runs"
LOCK_SUFFIX = ".lock"
MARKER_FILE = "experiment.json"
LOG_FILE = "log.txt"


def store_dir(root: str | Path) -> Path:
    """``<root>/runs``: the run store shared by every sweep under the root."""
    return Path(root) / STORE_DIR


def run_dir_for(root: str | Path, run: RunSpec) -> Path:
    """``<root>/runs/<run_id>``: the run's directory in the shared store (the same for every sweep)."""
    return store_dir(root) / run.run_id


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    """The run's marker (``experiment.json``), or None when it has none or it is unreadable."""
    path = Path(run_dir) / MARKER_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(marker: Mapping[str, Any] | None) -> bool:
    """Whether ``marker`` is a finished run's."""
    return marker is not None and marker.get("status") == "done"


def try_lock_run(root: str | Path, run_id: str) -> filelock.FileLock | None:
    """Take the run's lock (``<root>/runs/<run_id>.lock``) without waiting: the held lock, or None if
    another process holds it. Release it with :func:`release_run_lock`; it is released by the system when
    the holder exits, however it exits."""
    return filelock.try_lock(store_dir(root) / f"{run_id}{LOCK_SUFFIX}", what=f"run {run_id}")


def release_run_lock(lock: filelock.FileLock) -> None:
    """Release a lock taken with :func:`try_lock_run`."""
    lock.release()


def finished_marker(root: str | Path, run: RunSpec) -> dict[str, Any] | None:
    """The run's ``done`` marker in the store, or None if it is not finished."""
    marker = read_marker(run_dir_for(root, run))
    return marker if is_done(marker) else None


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, value, default=str)


def now() -> str:
    """The current UTC time, to the second, as markers and logs write it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
