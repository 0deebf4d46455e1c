"""Where a sweep's jobs execute: the worker side of a job (threads, captured output, outcome) and the
backends that run jobs (in this process, a local pool of spawned processes, or Ray tasks).

A local worker process serves up to ``runs_per_worker`` jobs before it is replaced, so its imports (torch,
marlkd, JAX for SMAX) and its in-memory JAX compilations serve several runs. What a job could leave behind
for the next is reset around each job (:func:`_job_scope`): the global random generators (seeded from
the OS, as in a fresh process), the signal handlers the worker started with, environment variables and
working directory, warning filters (and the record of warnings shown once), torch's grad mode and default
dtype; each job sets its own threads and captures its output to its own log file, and logging handlers
left writing to that file are pointed back at the worker's stderr. The driver-watch thread is started
once per process. Runs seed everything they draw from themselves (``marlkd.training.build_algorithm``).

A backend runs a function somewhere and hands back a :class:`concurrent.futures.Future`; a job returns its
outcome as a plain dict (``ok``, and the dataset's path and checksum or the run's results, or the error
and traceback), so nothing but data crosses a process boundary.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from marlkd.envs.plugins import IMPORT_ENV
from marlkd.errors import ConfigError, MarlkdError
from marlkd.experiments.results import curve_points, provenance, read_curve
from marlkd.experiments.spec import DatasetKey, RunSpec
from marlkd.experiments.store import LOG_FILE, now

RunFn = Callable[[RunSpec, Path, Path | None], Mapping[str, Any]]
"""Executes one run: ``(run, run_dir, dataset_path) -> results``. It writes what it likes into ``run_dir``
(a tidy ``metrics.csv`` there, or a ``curve`` list in the results, gives learning curves) and returns a
mapping whose numeric top-level entries become metric rows (``return_mean``, ``train_time_s``, ...).
It should resume or return at once when ``run_dir`` holds a finished or partial run."""

DatasetFn = Callable[[DatasetKey, Path], Path]
"""Makes (or finds) the dataset of a key under a data root and returns its path."""

# Seconds between a worker's looks at whether its driver is still alive, and its exit status when not.
_DRIVER_POLL_S = 0.5
_ORPHANED_EXIT = 75

#: Runs (and dataset jobs) a local worker process serves before it is replaced: ``LocalBackend``'s
#: default (``benchmarks/bench_workers.py`` measures what a worker's start costs a run).
DEFAULT_RUNS_PER_WORKER = 16
# Signals whose handlers a job may change and the next job must not inherit.
_RESET_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)

_busy = False  # in a worker process: whether it is executing a job
_worker_signals: dict[int, Any] | None = None  # in a pool worker: its handlers between jobs


def worker_init(driver: int | None = None) -> None:
    """Ctrl-C in a pool worker: interrupt the job it runs (the training loop keeps its checkpoint), or
    leave quietly when it runs none. With ``driver`` (the driver's pid), the worker also ends when the
    driver is gone, however it went (``kill -9`` included): no orphan trains on alone. Called once per
    worker process, however many jobs it serves; marks the process as a pool worker, whose jobs are reset
    around (:func:`_job_scope`)."""
    global _worker_signals
    signal.signal(signal.SIGINT, _on_interrupt)
    _worker_signals = {signum: signal.getsignal(signum) for signum in _RESET_SIGNALS}
    if driver is not None:
        threading.Thread(target=_watch_driver, args=(driver,), name="watch-driver", daemon=True).start()


def _fresh_random_state() -> None:
    """The global random generators as a fresh process has them: torch's default generator, NumPy's global
    generator and Python's, each seeded from the OS (a run that uses any of them seeds it itself)."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


@contextlib.contextmanager
def _job_scope() -> Iterator[None]:
    """In a pool worker (after :func:`worker_init`; a no-op in the driver, where ``InlineBackend`` runs
    jobs): give the job a worker as it was before any job ran, and take back what the job changed of the
    process (see the module docstring)."""
    if _worker_signals is None:
        yield
        return
    for signum, handler in _worker_signals.items():
        with contextlib.suppress(OSError, ValueError, TypeError):
            signal.signal(signum, handler)
    if hasattr(signal, "alarm"):
        signal.alarm(0)
    _fresh_random_state()
    environ, cwd = dict(os.environ), os.getcwd()
    torch = sys.modules.get("torch")
    dtype = torch.get_default_dtype() if torch is not None else None
    try:
        with warnings.catch_warnings():  # restores the filters; the registries of "once" warnings too
            yield
    finally:
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_grad_enabled(True)
            torch.set_default_dtype(dtype if dtype is not None else torch.float32)
        gc.collect()


def _release_log_handlers(log: Any) -> None:
    """Point logging handlers that a job left writing to its (now closed) log file at this process's
    stderr."""
    loggers = [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is log:
                handler.setStream(sys.__stderr__)


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


def limit_threads(threads: int) -> None:
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
        log.write(f"--- {now()} pid {os.getpid()}\n")
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            _release_log_handlers(log)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _failure(exc: BaseException, start: float) -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
        "elapsed_s": time.perf_counter() - start,
    }


def dataset_job(
    dataset_fn: DatasetFn, key: DatasetKey, data_root: str, threads: int, capture: bool
) -> dict[str, Any]:
    limit_threads(threads)
    start = time.perf_counter()
    root = Path(data_root)
    log_name = f"{key.env}-{key.quality}-{key.episodes}-s{key.seed}.log"
    try:
        with _job_scope(), _working(), _captured(root / "logs" / log_name, capture):
            path = dataset_fn(key, root)
        from marlkd.data.format import stored_checksum

        return {
            "ok": True,
            "path": str(path),
            "checksum": stored_checksum(path),  # None: not a marlkd dataset (a custom dataset function's)
            "elapsed_s": time.perf_counter() - start,
        }
    except Exception as exc:
        return _failure(exc, start)


def run_job(
    run_fn: RunFn, run: RunSpec, run_dir: str, dataset: str | None, threads: int, capture: bool
) -> dict[str, Any]:
    limit_threads(threads)
    start = time.perf_counter()
    directory = Path(run_dir)
    origin = provenance()  # of the code this process runs (the driver's may be older, or on another node)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _job_scope(), _working(), _captured(directory / LOG_FILE, capture):
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


class InlineBackend:
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


class LocalBackend:
    """A pool of ``workers`` spawned processes, each serving up to ``runs_per_worker`` jobs (runs and
    datasets) before a fresh one takes its place (1: a fresh process per job). A worker keeps its imports
    and JAX's in-memory compilations from job to job; what a job changes of the process is reset around it
    (:func:`_job_scope`). A worker that dies breaks the pool: the driver restarts it and resubmits the jobs
    that were in it (:class:`marlkd.experiments.scheduler.Scheduler`)."""

    capture = True

    def __init__(self, workers: int, runs_per_worker: int = DEFAULT_RUNS_PER_WORKER) -> None:
        import multiprocessing

        check_runs_per_worker(runs_per_worker)
        self.slots = workers
        self.runs_per_worker = runs_per_worker
        self.threads = max(1, _cpu_count() // workers)
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=self._context,
            max_tasks_per_child=self.runs_per_worker,
            initializer=worker_init,
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


def check_runs_per_worker(runs_per_worker: Any) -> None:
    """A clear error unless ``runs_per_worker`` is an int >= 1."""
    if isinstance(runs_per_worker, bool) or not isinstance(runs_per_worker, int) or runs_per_worker < 1:
        raise ConfigError(
            f"runs_per_worker: must be an integer >= 1 (1: a fresh process per run), got {runs_per_worker!r}"
        )


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MarlkdError("the Ray backend needs Ray: pip install 'marlkd[ray]' (or 'ray[default]')") from exc
    return ray


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RayBackend:
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
