"""One launch's queue: datasets made first, then runs in launch order as their datasets are ready, each
under its run lock; outcomes written as markers and results rows. :func:`marlkd.experiments.runner.run_sweep`
decides what to run; :class:`Scheduler` runs it on a backend (:mod:`marlkd.experiments.workers`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlkd import filelock
from marlkd.experiments.results import append_rows, marker_rows, provenance, remove_runs
from marlkd.experiments.spec import DatasetKey, RunSpec
from marlkd.experiments.store import (
    MARKER_FILE,
    is_done,
    now,
    read_marker,
    release_run_lock,
    run_dir_for,
    try_lock_run,
    write_json,
)
from marlkd.experiments.workers import DatasetFn, RunFn, dataset_job, run_job

# A job in a pool whose worker process died this many times is recorded as failed, not retried again
# (a dead worker breaks every job of the pool, so a job near a crashing one is retried a few times).
_MAX_CRASHES = 3
# Seconds between looks at runs that another driver is executing.
_POLL_S = 2.0


@dataclass(frozen=True)
class FailedRun:
    """A run that raised (or whose dataset could not be made); the full traceback is in its marker."""

    run_id: str
    error: str
    run_dir: str


@dataclass
class _Job:
    kind: str  # "dataset" or "run"
    key: DatasetKey
    run: RunSpec | None = None
    dataset: str | None = None
    crashes: int = 0
    order: int = 0  # a run's place in the launch order (the queue starts runs in this order)
    error: str | None = None  # a run whose dataset could not be made: recorded as failed, not executed
    trace: str = ""


class Scheduler:
    """One launch's queue and bookkeeping: datasets first (priority 0), then runs (priority 1) in launch
    order as their datasets are made; each run under its lock (taken at submission, released when its
    marker is written); runs another driver holds are looked at again every :data:`_POLL_S` seconds.

    ``unverified`` are runs reused on the table's rows (no run directory here) before their dataset existed,
    with their rows' ``dataset_checksum``: when this launch makes that dataset and its checksum is another
    (or the rows record none), the rows are stale; they are deleted and the run is queued too
    (:attr:`requeued` counts them). A dataset whose checksum cannot be read (not a marlkd dataset) leaves
    them reused."""

    def __init__(
        self,
        root: Path,
        table: Path,
        todo: Sequence[RunSpec],
        run_fn: RunFn,
        dataset_fn: DatasetFn,
        backend: Any,
        unverified: Sequence[tuple[RunSpec, str]] = (),
    ) -> None:
        self.root, self.table, self.total = root, table, len(todo)
        self.run_fn, self.dataset_fn, self.backend = run_fn, dataset_fn, backend
        self.waiting: dict[str, list[tuple[int, RunSpec]]] = {}  # dataset key -> runs that need it
        self.ready: list[tuple[int, int, _Job]] = []  # heap of (priority, order, job)
        self.counter = 0  # order of datasets in the heap
        self.in_flight: dict[Future, _Job] = {}
        self.held: dict[str, filelock.FileLock] = {}  # run id -> its lock, from its start to its marker
        self.deferred: list[_Job] = []  # runs whose lock another driver holds
        self.done = self.datasets_made = self.shared = self.requeued = 0
        self.failed: list[FailedRun] = []
        self.last_look = time.monotonic()
        self.shown = ""
        self.bar: Any = None
        for order, run in enumerate(todo):
            key = run.dataset.key()
            if key not in self.waiting:
                self.waiting[key] = []
                self._push_dataset(_Job("dataset", run.dataset))
            self.waiting[key].append((order, run))
        self.n_datasets = len(self.waiting)
        # runs reused on their rows whose dataset this launch makes: checked when it is made
        self.unverified: dict[str, list[tuple[int, RunSpec, str]]] = {}
        for order, (run, checksum) in enumerate(unverified, start=len(todo)):
            if run.dataset.key() in self.waiting:
                self.unverified.setdefault(run.dataset.key(), []).append((order, run, checksum))

    # -- the loop

    def execute(self, bar: Any) -> None:
        """Run every job; on any exception (Ctrl-C included) stop the workers, let the locks go, re-raise."""
        self.bar = bar
        try:
            while self.ready or self.in_flight or self.deferred:
                self._requeue_deferred()
                self._submit_ready()
                self._refresh()
                if not self.in_flight:
                    self._idle()
                    continue
                self._collect()
                self._refresh()
        except BaseException:
            self.backend.close(cancel=True)
            self._release_all()
            raise
        finally:
            self.bar.close()
        self.backend.close()

    def _requeue_deferred(self) -> None:
        if self.deferred and time.monotonic() - self.last_look >= _POLL_S:
            self.last_look = time.monotonic()
            for job in self.deferred:
                self._push_run(job)
            self.deferred.clear()

    def _idle(self) -> None:
        """Nothing running: if only runs held by other drivers are left, wait before looking again."""
        if self.deferred and not self.ready:
            time.sleep(max(0.0, _POLL_S - (time.monotonic() - self.last_look)))

    def _submit_ready(self) -> None:
        while self.ready and len(self.in_flight) < self.backend.slots:
            _, _, job = heapq.heappop(self.ready)
            future = self._submit(job)
            if future is not None:
                self.in_flight[future] = job

    def _submit(self, job: _Job) -> Future | None:
        backend = self.backend
        if job.kind == "dataset":
            data_root = str(self.root / "datasets")
            return backend.submit(
                dataset_job, self.dataset_fn, job.key, data_root, backend.threads, backend.capture
            )
        assert job.run is not None
        if not self._claim(job):
            return None
        run_dir = str(run_dir_for(self.root, job.run))
        return backend.submit(
            run_job, self.run_fn, job.run, run_dir, job.dataset, backend.threads, backend.capture
        )

    def _collect(self) -> None:
        finished, _ = wait(list(self.in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
        if any(isinstance(future.exception(), BrokenProcessPool) for future in finished):
            # A dead worker breaks the whole pool: every job in it fails; requeue them all, new pool.
            finished, _ = wait(list(self.in_flight))
            self.backend.restart()
        for future in finished:
            job = self.in_flight.pop(future)
            outcome = self._outcome(job, future)
            if outcome is None:
                continue  # requeued
            if job.kind == "dataset":
                self._dataset_finished(job, outcome)
            else:
                self._run_finished(job, outcome)

    # -- queue

    def _push_dataset(self, job: _Job) -> None:
        heapq.heappush(self.ready, (0, self.counter, job))
        self.counter += 1

    def _push_run(self, job: _Job) -> None:
        heapq.heappush(self.ready, (1, job.order, job))

    # -- one job

    def _claim(self, job: _Job) -> bool:
        """Before a run starts: take its lock (or defer it), and settle it here if it need not execute (it
        was finished meanwhile by another driver, or its dataset failed). True: submit it."""
        run = job.run
        assert run is not None
        if run.run_id not in self.held:
            lock = try_lock_run(self.root, run.run_id)
            if lock is None:
                self.deferred.append(job)
                return False
            self.held[run.run_id] = lock
        marker = read_marker(run_dir_for(self.root, run))
        if is_done(marker):
            assert marker is not None
            self._release(run)
            append_rows(self.table, marker_rows(run, marker))  # idempotent: no row twice
            self.shared += 1
            return False
        if job.error is not None:
            self._record_failure(run, job.error, job.trace)
            return False
        return True

    def _outcome(self, job: _Job, future: Future) -> dict[str, Any] | None:
        """The job's outcome, or None when a dead worker broke it and it was queued again."""
        try:
            return future.result()
        except BrokenProcessPool:
            job.crashes += 1
            if job.crashes < _MAX_CRASHES:
                if job.kind == "dataset":
                    self._push_dataset(job)
                else:
                    self._push_run(job)
                return None
            error = "the worker process died (out of memory, or a crash in native code)"
            return {"ok": False, "error": error, "traceback": ""}
        except Exception as exc:  # the backend failed to run the job (e.g. a Ray system error)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": ""}

    def _dataset_finished(self, job: _Job, outcome: dict[str, Any]) -> None:
        dependents = self.waiting.pop(job.key.key())
        reused = self.unverified.pop(job.key.key(), [])
        if outcome["ok"]:
            self.datasets_made += 1
            made = outcome.get("checksum")
            stale = [(order, run) for order, run, checksum in reused if made and checksum != made]
            if stale:
                self._requeue_stale(stale)
                dependents = dependents + stale
            for order, run in dependents:
                self._push_run(_Job("run", job.key, run, outcome["path"], order=order))
            return
        error = (
            f"making dataset {job.key.env}/{job.key.quality}/{job.key.episodes} failed: {outcome['error']}"
        )
        for order, run in dependents:
            self._push_run(_Job("run", job.key, run, order=order, error=error, trace=outcome["traceback"]))

    def _requeue_stale(self, stale: list[tuple[int, RunSpec]]) -> None:
        """Runs whose recorded rows came from another dataset than the one just made: their rows go, and
        they are trained (counted in this launch's total, no longer among the skipped)."""
        remove_runs(self.table, [run.run_id for _, run in stale])
        self.requeued += len(stale)
        self.total += len(stale)
        if self.bar is not None and self.bar.total is not None:
            self.bar.total += len(stale)
        self.bar.write(
            f"{len(stale)} recorded runs were trained on another dataset than the one just made; "
            "training them again"
        )

    def _run_finished(self, job: _Job, outcome: dict[str, Any]) -> None:
        run = job.run
        assert run is not None
        if not outcome["ok"]:
            self._record_failure(run, outcome["error"], outcome["traceback"])
            return
        marker = {
            "status": "done",
            "run": run.to_dict(),
            "result": outcome["result"],
            "curve": outcome["curve"],
            "provenance": outcome.get("provenance") or provenance(),
            "elapsed_s": outcome.get("elapsed_s"),
            "dataset": job.dataset,
            "finished": now(),
        }
        write_json(run_dir_for(self.root, run) / MARKER_FILE, marker)
        self._release(run)
        append_rows(self.table, marker_rows(run, marker))
        self.done += 1

    def _record_failure(self, run: RunSpec, error: str, trace: str) -> None:
        directory = run_dir_for(self.root, run)
        write_json(
            directory / MARKER_FILE,
            {
                "status": "failed",
                "run": run.to_dict(),
                "error": error,
                "traceback": trace,
                "finished": now(),
            },
        )
        self._release(run)
        self.failed.append(FailedRun(run.run_id, error, str(directory)))
        self.bar.write(f"failed: {run.run_id}: {error}")

    # -- locks and display

    def _release(self, run: RunSpec) -> None:
        lock = self.held.pop(run.run_id, None)
        if lock is not None:
            release_run_lock(lock)

    def _release_all(self) -> None:
        for lock in self.held.values():
            release_run_lock(lock)
        self.held.clear()

    def _refresh(self) -> None:
        running = sum(1 for job in self.in_flight.values() if job.kind == "run")
        settled = self.done + len(self.failed) + self.shared
        state = (
            f"done {self.done}, failed {len(self.failed)}, running {running}, "
            f"remaining {self.total - settled}, datasets {self.datasets_made}/{self.n_datasets}"
        )
        if self.deferred:
            state += f", running elsewhere {len(self.deferred)}"
        if state != self.shown:  # redraw on change only (the bar's ETA comes from its count of finished runs)
            self.shown = state
            self.bar.set_postfix_str(state, refresh=False)
            self.bar.update(settled - self.bar.n)
            self.bar.refresh()


def progress_bar(total: int, sweep: str, enabled: bool) -> Any:
    from marlkd.progress import progress_bar

    return progress_bar(enabled, total=total, desc=sweep, unit="run", dynamic_ncols=True)
