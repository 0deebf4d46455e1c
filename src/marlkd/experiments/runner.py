"""Run a sweep: only what is missing, each dataset made once, failures recorded, locally or on Ray.

Each run executes in its own worker (a fresh spawned process from a local pool, or a Ray task) with a
run function (:data:`RunFn`; by default :func:`train_run`, which calls :func:`marlkd.train`).

Runs are kept in one store per experiments root, ``<root>/runs/<run_id>``, shared by every sweep: a run
that two sweeps contain (the same id) is trained once. The driver is the only writer of a run's state:
while it executes a run it holds the run's lock (:mod:`marlkd.filelock` on ``<root>/runs/<run_id>.lock``,
released by the system if the driver dies); when the run finishes it writes the run's marker
(``<root>/runs/<run_id>/experiment.json``, status ``done`` or ``failed`` with the traceback) and appends
the run's rows to its sweep's results table. A run with a ``done`` marker is skipped by every sweep (each
adds the run's rows to its own table); a failed or interrupted one is run again (the training loop
resumes it from its last checkpoint). A run whose lock another driver holds is left to it and waited for
at the end.

Local workers end when their driver does (each watches its parent), and the training loop locks its run
directory, so a driver killed with ``kill -9`` and launched again never has two processes training one
run. The results table is appended idempotently per run id and repaired from the markers at each launch
(see :mod:`marlkd.experiments.results`). The queue and its bookkeeping are :class:`_Scheduler`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import heapq
import importlib
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlkd import atomic, filelock
from marlkd.envs.plugins import IMPORT_ENV, import_modules
from marlkd.errors import ConfigError, MarlkdError
from marlkd.experiments.results import (
    append_rows,
    curve_points,
    marker_rows,
    provenance,
    read_curve,
    recorded_row_counts,
    recorded_run_ids,
    results_path,
    sweep_dir,
    sync_rows,
)
from marlkd.experiments.spec import (
    TEACHERS_DIR,
    DatasetKey,
    RunSpec,
    SweepSpec,
    check_against_registry,
    expand,
    load_spec,
    select_runs,
    teacher_group,
    with_teacher_cache,
)

RunFn = Callable[[RunSpec, Path, Path | None], Mapping[str, Any]]
"""Executes one run: ``(run, run_dir, dataset_path) -> results``. It writes what it likes into ``run_dir``
(a tidy ``metrics.csv`` there, or a ``curve`` list in the results, gives learning curves) and returns a
mapping whose numeric top-level entries become metric rows (``return_mean``, ``train_time_s``, ...).
It should resume or return at once when ``run_dir`` holds a finished or partial run."""

DatasetFn = Callable[[DatasetKey, Path], Path]
"""Makes (or finds) the dataset of a key under a data root and returns its path."""

DEFAULT_ROOT = "runs/experiments"
STORE_DIR = "runs"
LOCK_SUFFIX = ".lock"
# Names of the root's own folders, which no sweep may take: the run store and the shared datasets.
RESERVED_NAMES = (STORE_DIR, "datasets")
MARKER_FILE = "experiment.json"
LOG_FILE = "log.txt"
THREADS_ENV = "MARLKD_THREADS"
# A job in a pool whose worker process died this many times is recorded as failed, not retried again
# (a dead worker breaks every job of the pool, so a job near a crashing one is retried a few times).
_MAX_CRASHES = 3
# Seconds between looks at runs that another driver is executing.
_POLL_S = 2.0
# Seconds between a worker's looks at whether its driver is still alive, and its exit status when not.
_DRIVER_POLL_S = 0.5
_ORPHANED_EXIT = 75
# Seconds a run waits for its run directory's lock (held by an orphan of a killed driver until it notices).
_RUN_LOCK_WAIT_S = 30.0


# ----------------------------------------------------------------------------------------------------
# The default run and dataset functions


def train_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """The default :data:`RunFn` of offline sweeps: :func:`marlkd.train` on the run's config, in run_dir."""
    import torch

    import marlkd
    from marlkd.run_config import RunConfig

    if dataset is None:
        raise MarlkdError(f"run {run.run_id}: an offline run needs a dataset")
    threads = int(os.environ.get(THREADS_ENV, "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    config = RunConfig.from_dict({**run.config, "data": str(dataset), "out": str(run_dir)})
    return dict(marlkd.train(config, progress=False, lock_timeout=_RUN_LOCK_WAIT_S))


def make_dataset(key: DatasetKey, data_root: Path) -> Path:
    """The default :data:`DatasetFn`: :func:`marlkd.experts.ensure_dataset` (expert and data, made once),
    with the key's expert budget (``steps_scale`` of the recipe's PPO steps, reference and calibration
    episodes; what it does not set keeps ``marlkd.experts``'s default)."""
    from marlkd.experts import ensure_dataset, scaled_expert_steps

    budget = dict(key.expert)
    steps = scaled_expert_steps(key.env, budget["steps_scale"]) if "steps_scale" in budget else None
    path = ensure_dataset(
        key.env,
        key.quality,
        key.episodes,
        data_root,
        seed=key.seed,
        env_kwargs=dict(key.env_kwargs) or None,
        progress=False,
        steps=steps,
        reference_episodes=budget.get("reference_episodes"),
        calibration_episodes=budget.get("calibration_episodes"),
    )
    return Path(path)


def resolve_callable(reference: str) -> Callable[..., Any]:
    """The function named by ``module:function``, with a clear error if it is not there."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"run_fn {reference!r}: cannot import module {module_name!r} ({exc})") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"run_fn {reference!r}: module {module_name!r} has no function {attribute!r}")
    return function


# ----------------------------------------------------------------------------------------------------
# Work done in the workers


_busy = False  # in a worker process: whether it is executing a job


def _worker_init(driver: int | None = None) -> None:
    """Ctrl-C in a pool worker: interrupt the job it runs (the training loop keeps its checkpoint), or
    leave quietly when it runs none. With ``driver`` (the driver's pid), the worker also ends when the
    driver is gone, however it went (``kill -9`` included): no orphan trains on alone."""
    signal.signal(signal.SIGINT, _on_interrupt)
    if driver is not None:
        threading.Thread(target=_watch_driver, args=(driver,), name="watch-driver", daemon=True).start()


def _watch_driver(driver: int) -> None:
    """End this worker at once when its parent is no longer ``driver`` (the driver died; the worker was
    re-parented). The run's last checkpoint is kept; its lock goes with the process."""
    while True:
        time.sleep(_DRIVER_POLL_S)
        if os.getppid() != driver:
            os._exit(_ORPHANED_EXIT)


def _on_interrupt(signum: int, frame: Any) -> None:
    if _busy:
        raise KeyboardInterrupt
    os._exit(128 + signum)


@contextlib.contextmanager
def _working() -> Iterator[None]:
    global _busy
    _busy = True
    try:
        yield
    finally:
        _busy = False


def _limit_threads(threads: int) -> None:
    """Give this worker ``threads`` CPU threads (before torch is imported, and after, if it was)."""
    from marlkd.threads import apply_threads

    apply_threads(threads if threads > 0 else None)


@contextlib.contextmanager
def _captured(log_path: Path, capture: bool) -> Iterator[None]:
    """Send this worker's stdout and stderr to ``log_path`` (so the driver's progress display stays clean)."""
    if not capture:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"--- {_now()} pid {os.getpid()}\n")
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _failure(exc: BaseException, start: float) -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
        "elapsed_s": time.perf_counter() - start,
    }


def _dataset_job(
    dataset_fn: DatasetFn, key: DatasetKey, data_root: str, threads: int, capture: bool
) -> dict[str, Any]:
    _limit_threads(threads)
    start = time.perf_counter()
    root = Path(data_root)
    log_name = f"{key.env}-{key.quality}-{key.episodes}-s{key.seed}.log"
    try:
        with _working(), _captured(root / "logs" / log_name, capture):
            path = dataset_fn(key, root)
        return {"ok": True, "path": str(path), "elapsed_s": time.perf_counter() - start}
    except Exception as exc:
        return _failure(exc, start)


def _run_job(
    run_fn: RunFn, run: RunSpec, run_dir: str, dataset: str | None, threads: int, capture: bool
) -> dict[str, Any]:
    _limit_threads(threads)
    start = time.perf_counter()
    directory = Path(run_dir)
    origin = provenance()  # of the code this process runs (the driver's may be older, or on another node)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _working(), _captured(directory / LOG_FILE, capture):
            result = run_fn(run, directory, Path(dataset) if dataset else None)
        if not isinstance(result, Mapping):
            raise TypeError(f"the run function returned {type(result).__name__}, not a mapping of results")
        result = dict(result)
        curve = curve_points(result["curve"]) if "curve" in result else read_curve(directory / "metrics.csv")
        return {
            "ok": True,
            "result": _jsonable({k: v for k, v in result.items() if k != "curve"}),
            "curve": curve,
            "elapsed_s": time.perf_counter() - start,
            "provenance": origin,
        }
    except Exception as exc:
        return _failure(exc, start)


# ----------------------------------------------------------------------------------------------------
# Backends: something that runs a function somewhere and hands back a concurrent.futures.Future


class _InlineBackend:
    """Runs each job in this process, one at a time (``workers=0``: for debugging)."""

    slots = 1
    threads = 0
    capture = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def restart(self) -> None:
        """Nothing to restart."""

    def close(self, cancel: bool = False) -> None:
        """Nothing to close."""


class _LocalBackend:
    """A pool of ``workers`` spawned processes; each job gets a fresh one (no state leaks between runs)."""

    capture = True

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.slots = workers
        self.threads = max(1, _cpu_count() // workers)
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=self._context,
            max_tasks_per_child=1,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def restart(self) -> None:
        """Replace a pool broken by a dead worker (its pending jobs are resubmitted by the driver)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self, cancel: bool = False) -> None:
        """Wait for the pool to finish; with ``cancel`` (the driver was interrupted or failed), drop the
        queued jobs and stop the running ones: a worker not already stopping (Ctrl-C in a terminal reaches
        every process of the group) is sent SIGINT, so its run keeps its last checkpoint, and is killed if
        it still runs after a grace period."""
        if not cancel:
            self._pool.shutdown(wait=True)
            return
        # Stop the workers before shutting the pool down: shutting down first races with the pool's
        # management thread replacing a worker that exits (a TypeError in CPython 3.11's executor).
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for stop, grace in ((None, 3.0), (signal.SIGINT, 20.0), (signal.SIGKILL, 5.0)):
            alive = [process for process in processes if process.is_alive()]
            if not alive:
                break
            if stop is not None:  # the first phase only waits: the workers may be stopping already
                for process in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, stop)
            deadline = time.monotonic() + grace
            for process in alive:
                process.join(timeout=max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MarlkdError("the Ray backend needs Ray: pip install 'marlkd[ray]' (or 'ray[default]')") from exc
    return ray


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class _RayBackend:
    """Ray tasks on a local instance (``address="local"``) or a cluster; each task asks for ``threads`` CPUs
    (and ``gpus_per_run`` GPUs). Joins an already initialised Ray instance if there is one."""

    capture = True

    def __init__(self, address: str, workers: int | None, gpus_per_run: float) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owner = not ray.is_initialized()
        if self._owner:
            # workers elsewhere import the user's environment modules too (their code must be installed
            # or on their PYTHONPATH)
            imports = os.environ.get(IMPORT_ENV)
            runtime_env = {"env_vars": {IMPORT_ENV: imports}} if imports else None
            if address == "local":
                ray.init(
                    address="local", include_dashboard=False, logging_level="WARNING", runtime_env=runtime_env
                )
            else:
                ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.slots = workers or cpus
        self.threads = max(1, cpus // self.slots)
        self._task = ray.remote(_call).options(num_cpus=self.threads, num_gpus=gpus_per_run)
        self._refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        ref = self._task.remote(fn, *args)
        self._refs.append(ref)
        return ref.future()

    def restart(self) -> None:
        """Ray restarts dead workers itself."""

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self._refs:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        if self._owner:
            self._ray.shutdown()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------------
# Markers, status and the summary


@dataclass(frozen=True)
class FailedRun:
    """A run that raised (or whose dataset could not be made); the full traceback is in its marker."""

    run_id: str
    error: str
    run_dir: str


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did.

    Attributes:
        sweep: the sweep's name (``<spec>`` or ``<spec>-quick``).
        root: the experiments root directory.
        total: runs selected in the sweep.
        skipped: runs already finished (by this sweep or another) before this launch.
        done: runs finished by this launch.
        failed: runs that failed in this launch.
        shared: runs another driver (another sweep's, or a second launch) was executing; this launch
            waited for them and added their rows.
        datasets: datasets made or found for this launch.
        wall_time_s: seconds this launch took.
    """

    sweep: str
    root: str
    total: int
    skipped: int
    done: int
    failed: tuple[FailedRun, ...]
    datasets: int
    wall_time_s: float
    shared: int = 0

    @property
    def ok(self) -> bool:
        """Every selected run is finished."""
        return not self.failed and self.skipped + self.done + self.shared == self.total

    @property
    def results(self) -> Path:
        return results_path(self.root, self.sweep)


@dataclass(frozen=True)
class RunStatus:
    """One run's state on disk: ``done``, ``failed``, ``incomplete`` (started, no marker) or ``missing``."""

    run_id: str
    env: str
    method: str
    seed: int
    status: str
    error: str = ""


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


def _is_done(marker: Mapping[str, Any] | None) -> bool:
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
    return marker if _is_done(marker) else None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, value, default=str)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _resolve_spec(spec: SweepSpec | str | Path) -> SweepSpec:
    return spec if isinstance(spec, SweepSpec) else load_spec(spec)


def _selected(
    spec: SweepSpec,
    quick: bool,
    only_envs: Sequence[str],
    only_methods: Sequence[str],
    max_seeds: int | None = None,
) -> list[RunSpec]:
    for given, known, what in ((only_envs, spec.envs, "environment"), (only_methods, spec.methods, "method")):
        unknown = [value for value in given if value not in known]
        if unknown:
            raise ConfigError(
                f"sweep {spec.name} has no {what} {', '.join(map(repr, unknown))}; it has {', '.join(known)}"
            )
    if max_seeds is not None and max_seeds < 1:
        raise ConfigError(f"max_seeds must be >= 1, got {max_seeds}")
    return select_runs(expand(spec, quick), only_envs, only_methods, max_seeds)


def sweep_status(
    spec: SweepSpec | str | Path,
    root: str | Path = DEFAULT_ROOT,
    *,
    quick: bool = False,
    only_envs: Sequence[str] = (),
    only_methods: Sequence[str] = (),
    max_seeds: int | None = None,
) -> list[RunStatus]:
    """The state of every (selected) run of the sweep, from the markers in the shared store (a run finished
    by any sweep is done)."""
    spec = _resolve_spec(spec)
    statuses = []
    recorded = recorded_run_ids(results_path(Path(root), spec.sweep_name(quick)))
    for run in _selected(spec, quick, only_envs, only_methods, max_seeds):
        directory = run_dir_for(root, run)
        marker = read_marker(directory)
        if marker is not None and marker.get("status") in ("done", "failed"):
            status, error = marker["status"], marker.get("error", "")
        elif run.run_id in recorded:
            status, error = "done", ""
        else:
            status, error = ("incomplete" if directory.exists() else "missing"), ""
        statuses.append(RunStatus(run.run_id, run.env, run.method, run.seed, status, error))
    return statuses


def unrecorded_runs(
    spec: SweepSpec | str | Path, root: str | Path = DEFAULT_ROOT, quick: bool = False
) -> list[str]:
    """Ids of the sweep's finished runs (a ``done`` marker) whose rows the results table lacks in full (a
    table cut by a crash, or a driver killed before it wrote them); the next launch adds them."""
    spec = _resolve_spec(spec)
    table = results_path(Path(root), spec.sweep_name(quick))
    counts = recorded_row_counts(table)
    missing = []
    for run in expand(spec, quick):
        marker = finished_marker(root, run)
        if marker is not None and counts.get(run.run_id, 0) != len(marker_rows(run, marker)):
            missing.append(run.run_id)
    return missing


# ----------------------------------------------------------------------------------------------------
# The driver


def teacher_cache_dir(root: str | Path, spec: SweepSpec, quick: bool = False) -> Path:
    """``<root>/<sweep>/teachers`` (absolute): where a ``share_teacher`` sweep's ``ours`` runs keep their
    teachers."""
    return sweep_dir(Path(root).resolve(), spec.sweep_name(quick)) / TEACHERS_DIR


def launch_order(runs: Sequence[RunSpec], spread_teachers: bool = False) -> list[RunSpec]:
    """The order runs are started in: seed-major (every cell's first seed before any second seed, so a
    partial sweep already fills the table), grid order within a seed.

    With ``spread_teachers``, the runs of a seed that share a teacher (:func:`teacher_group`) are spread
    out: first one run of every group (its ``full`` ablation, if it has one), then a second of every group,
    and so on; so parallel workers start by training distinct teachers, and later runs of a group usually
    find its teacher already cached.
    """
    seed_rank = {seed: i for i, seed in enumerate(dict.fromkeys(run.seed for run in runs))}
    ordered = sorted(runs, key=lambda run: seed_rank[run.seed])
    if not spread_teachers:
        return ordered
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(ordered):
        groups.setdefault(teacher_group(run), []).append(index)
    position: dict[int, int] = {}
    for members in groups.values():
        members.sort(key=lambda i: (ordered[i].ablation != "full", i))
        position.update((index, rank) for rank, index in enumerate(members))
    keys = {index: (seed_rank[ordered[index].seed], position[index], index) for index in range(len(ordered))}
    return [ordered[i] for i in sorted(range(len(ordered)), key=keys.__getitem__)]


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


def run_sweep(
    spec: SweepSpec | str | Path,
    root: str | Path = DEFAULT_ROOT,
    *,
    quick: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    run_fn: RunFn | None = None,
    dataset_fn: DatasetFn | None = None,
    only_envs: Sequence[str] = (),
    only_methods: Sequence[str] = (),
    max_seeds: int | None = None,
    gpus_per_run: float = 0.0,
    progress: bool = True,
    group_seeds: bool = True,
) -> SweepSummary:
    """Run the sweep's missing runs and append the rows of all its finished runs to
    ``<root>/<sweep>/results.csv``.

    Args:
        spec: a :class:`SweepSpec`, a built-in spec's name or a spec file.
        root: the experiments root; datasets go to ``<root>/datasets`` and runs to ``<root>/runs/<run_id>``
            (both shared by the root's sweeps: a run finished by another sweep is not run again).
        quick: run the spec's quick variant (its own sweep, ``<name>-quick``).
        workers: runs at a time. Local: default 1; 0 runs everything in this process (debugging). Ray:
            default one per CPU of the cluster. Each run gets ``max(1, cpus // workers)`` torch threads.
        ray_address: run on Ray: ``"local"`` starts a local instance, anything else is a cluster address
            (``"auto"``, ``"ray://host:10001"``). Needs the ``ray`` extra; results are the same.
        run_fn: executes one run (see :data:`RunFn`); default: the spec's ``run_fn`` (for offline
            sweeps :func:`train_run`), after checking the spec against the installed environments,
            methods and config fields.
        dataset_fn: makes a dataset (see :data:`DatasetFn`); default :func:`make_dataset`. Each distinct
            (env, quality, episodes, seed, env_kwargs) is made once, before the runs that need it start.
        only_envs, only_methods: restrict the sweep to these environments / methods.
        max_seeds: only the grid's first ``max_seeds`` seeds (None: all); ids are unchanged, so a later call
            with more seeds goes on from there.
        gpus_per_run: GPUs each Ray task asks for.
        progress: show a progress bar (done, failed, running, remaining, ETA).
        group_seeds: with the default run function, train the runs that differ only in seed (IDT, MADT,
            the teacher) as the members of one program (``marlkd.experiments.members``); False: one by one.

    A run that raises is recorded as failed (marker with the traceback) and the others go on. Runs start
    in :func:`launch_order`. A run whose lock another driver holds (see :func:`try_lock_run`) is passed
    over and looked at again every few seconds until that driver lets go; then its rows are added, or, if
    it did not finish, it is run here. With the spec's ``share_teacher``, every ``ours`` run gets
    ``algo.teacher_cache = <root>/<sweep>/teachers`` (its id unchanged).
    """
    started = time.monotonic()
    spec = _resolve_spec(spec)
    runs = _selected(spec, quick, only_envs, only_methods, max_seeds)
    import_modules(spec.imports)  # the user's environments, here and (MARLKD_IMPORT) in the workers
    if run_fn is None:
        run_fn = resolve_callable(spec.run_fn)  # first: its module may register the environments
        check_against_registry(spec, runs)
    if workers is not None and workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    root = Path(root).resolve()  # workers (Ray tasks on other nodes) may start in another directory
    sweep = spec.sweep_name(quick)
    if sweep in RESERVED_NAMES:
        raise ConfigError(f"a sweep may not be named {sweep!r}: <root>/{sweep} is shared by all sweeps")
    table = results_path(root, sweep)
    if spec.share_teacher:
        cache = teacher_cache_dir(root, spec, quick)
        runs = [with_teacher_cache(run, cache) for run in runs]
    _write_json(sweep_dir(root, sweep) / "spec.json", dataclasses.asdict(spec))

    todo, skipped = _settle_finished(root, table, runs)
    todo = launch_order(todo, spread_teachers=spec.share_teacher)
    if run_fn is train_run and group_seeds:  # a cell's seeds train as the members of one program
        from marlkd.experiments.members import SeedGroups

        run_fn = SeedGroups.of(todo, lambda run: run_dir_for(root, run))
    scheduler = None
    if todo:  # nothing to do: start no workers (a Ray instance takes seconds to start)
        if ray_address:
            backend: Any = _RayBackend(ray_address, workers, gpus_per_run)
        elif workers == 0:
            backend = _InlineBackend()
        else:
            backend = _LocalBackend(workers or 1)
        scheduler = _Scheduler(root, table, todo, run_fn, dataset_fn or make_dataset, backend)
        scheduler.execute(_progress_bar(len(todo), sweep, progress))
    return SweepSummary(
        sweep=sweep,
        root=str(root),
        total=len(runs),
        skipped=skipped,
        done=scheduler.done if scheduler else 0,
        failed=tuple(scheduler.failed) if scheduler else (),
        datasets=scheduler.datasets_made if scheduler else 0,
        wall_time_s=time.monotonic() - started,
        shared=scheduler.shared if scheduler else 0,
    )


def _settle_finished(root: Path, table: Path, runs: Sequence[RunSpec]) -> tuple[list[RunSpec], int]:
    """(the runs still to do, how many are finished). The table is brought in line with the finished runs'
    markers: rows missing (a driver killed before writing them, a run finished by another sweep) are
    added, rows cut or damaged by a crash are rewritten."""
    recorded = recorded_run_ids(table)
    expected: dict[str, list[dict[str, Any]]] = {}
    todo: list[RunSpec] = []
    skipped = 0
    for run in runs:
        marker = finished_marker(root, run)
        if marker is not None:
            skipped += 1
            expected[run.run_id] = marker_rows(run, marker)
        elif run.run_id in recorded:
            # Rows without a run directory: finished where this table was made (a committed results.csv
            # copied to another machine), so the sweep carries on from it. Delete its rows to redo it.
            skipped += 1
        else:
            todo.append(run)
    sync_rows(table, expected)
    return todo, skipped


class _Scheduler:
    """One launch's queue and bookkeeping: datasets first (priority 0), then runs (priority 1) in launch
    order as their datasets are made; each run under its lock (taken at submission, released when its
    marker is written); runs another driver holds are looked at again every :data:`_POLL_S` seconds."""

    def __init__(
        self,
        root: Path,
        table: Path,
        todo: Sequence[RunSpec],
        run_fn: RunFn,
        dataset_fn: DatasetFn,
        backend: Any,
    ) -> None:
        self.root, self.table, self.total = root, table, len(todo)
        self.run_fn, self.dataset_fn, self.backend = run_fn, dataset_fn, backend
        self.waiting: dict[str, list[tuple[int, RunSpec]]] = {}  # dataset key -> runs that need it
        self.ready: list[tuple[int, int, _Job]] = []  # heap of (priority, order, job)
        self.counter = 0  # order of datasets in the heap
        self.in_flight: dict[Future, _Job] = {}
        self.held: dict[str, filelock.FileLock] = {}  # run id -> its lock, from its start to its marker
        self.deferred: list[_Job] = []  # runs whose lock another driver holds
        self.done = self.datasets_made = self.shared = 0
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
                _dataset_job, self.dataset_fn, job.key, data_root, backend.threads, backend.capture
            )
        assert job.run is not None
        if not self._claim(job):
            return None
        run_dir = str(run_dir_for(self.root, job.run))
        return backend.submit(
            _run_job, self.run_fn, job.run, run_dir, job.dataset, backend.threads, backend.capture
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
        if _is_done(marker):
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
        if outcome["ok"]:
            self.datasets_made += 1
            for order, run in dependents:
                self._push_run(_Job("run", job.key, run, outcome["path"], order=order))
            return
        error = (
            f"making dataset {job.key.env}/{job.key.quality}/{job.key.episodes} failed: {outcome['error']}"
        )
        for order, run in dependents:
            self._push_run(_Job("run", job.key, run, order=order, error=error, trace=outcome["traceback"]))

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
            "finished": _now(),
        }
        _write_json(run_dir_for(self.root, run) / MARKER_FILE, marker)
        self._release(run)
        append_rows(self.table, marker_rows(run, marker))
        self.done += 1

    def _record_failure(self, run: RunSpec, error: str, trace: str) -> None:
        directory = run_dir_for(self.root, run)
        _write_json(
            directory / MARKER_FILE,
            {
                "status": "failed",
                "run": run.to_dict(),
                "error": error,
                "traceback": trace,
                "finished": _now(),
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


def _progress_bar(total: int, sweep: str, enabled: bool) -> Any:
    from marlkd.progress import progress_bar

    return progress_bar(enabled, total=total, desc=sweep, unit="run", dynamic_ncols=True)
