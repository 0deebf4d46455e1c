"""Run a sweep: only what is missing, each dataset made once, failures recorded, locally or on Ray.

Each run executes in a worker (a spawned process from a local pool, which serves up to
``runs_per_worker`` runs with its state reset between them, or a Ray task) with a run function
(:data:`RunFn`; by default :func:`train_run`, which calls :func:`marlkd.train`).

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
(see :mod:`marlkd.experiments.results`). The run store is :mod:`marlkd.experiments.store`; the queue
and its bookkeeping are :mod:`marlkd.experiments.scheduler`'s; the workers and their backends are
:mod:`marlkd.experiments.workers`'.

The module is about 500 lines because its one job, running what is missing of a sweep, holds what a run
needs (the default run function, its dataset), the queries of what is done (:func:`sweep_status`,
:func:`unrecorded_runs`) and the launch that queues the runs and settles the finished ones.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlkd.envs.plugins import import_modules
from marlkd.errors import ConfigError, MarlkdError
from marlkd.experiments.results import (
    marker_rows,
    recorded_checksums,
    recorded_row_counts,
    recorded_run_ids,
    remove_runs,
    results_path,
    sweep_dir,
    sync_rows,
)
from marlkd.experiments.scheduler import FailedRun, Scheduler, progress_bar
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
from marlkd.experiments.store import (
    LOCK_SUFFIX,
    LOG_FILE,
    MARKER_FILE,
    STORE_DIR,
    finished_marker,
    read_marker,
    release_run_lock,
    run_dir_for,
    store_dir,
    try_lock_run,
    write_json,
)
from marlkd.experiments.workers import (
    DEFAULT_RUNS_PER_WORKER,
    DatasetFn,
    InlineBackend,
    LocalBackend,
    RayBackend,
    RunFn,
    check_runs_per_worker,
    dataset_job,
    run_job,
    worker_init,
)

DEFAULT_ROOT = "runs/experiments"
# Names of the root's own folders, which no sweep may take: the run store and the shared datasets.
RESERVED_NAMES = (STORE_DIR, "datasets")
THREADS_ENV = "MARLKD_THREADS"
# Seconds a run waits for its run directory's lock (held by an orphan of a killed driver until it notices).
_RUN_LOCK_WAIT_S = 30.0
# The job functions by the names a driver started from earlier code pickles them by (its new workers import
# the code as it is now).
_dataset_job, _run_job, _worker_init = dataset_job, run_job, worker_init

__all__ = [
    "DEFAULT_ROOT",
    "LOCK_SUFFIX",
    "LOG_FILE",
    "MARKER_FILE",
    "RESERVED_NAMES",
    "STORE_DIR",
    "DatasetFn",
    "FailedRun",
    "RunFn",
    "RunStatus",
    "SweepSummary",
    "dataset_file",
    "finished_marker",
    "launch_order",
    "make_dataset",
    "read_marker",
    "release_run_lock",
    "resolve_callable",
    "run_dir_for",
    "run_sweep",
    "store_dir",
    "sweep_status",
    "teacher_cache_dir",
    "train_run",
    "try_lock_run",
    "unrecorded_runs",
]


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


def _dataset_request(key: DatasetKey) -> dict[str, Any]:
    """The expert budget of ``key`` as :func:`marlkd.experts.ensure_dataset` takes it (``steps_scale`` of
    the recipe's PPO steps, reference and calibration episodes; None: ``marlkd.experts``'s default)."""
    from marlkd.experts import scaled_expert_steps

    budget = dict(key.expert)
    steps = scaled_expert_steps(key.env, budget["steps_scale"]) if "steps_scale" in budget else None
    return {
        "seed": key.seed,
        "env_kwargs": dict(key.env_kwargs) or None,
        "steps": steps,
        "reference_episodes": budget.get("reference_episodes"),
        "calibration_episodes": budget.get("calibration_episodes"),
    }


def make_dataset(key: DatasetKey, data_root: Path) -> Path:
    """The default :data:`DatasetFn`: :func:`marlkd.experts.ensure_dataset` (expert and data, made once),
    with the key's expert budget; the file is :func:`dataset_file`'s."""
    from marlkd.experts import ensure_dataset

    path = ensure_dataset(
        key.env, key.quality, key.episodes, data_root, progress=False, **_dataset_request(key)
    )
    return Path(path)


def dataset_file(key: DatasetKey, data_root: Path) -> Path:
    """Where :func:`make_dataset` keeps the dataset of ``key`` under ``data_root`` (which it need not hold
    yet): :func:`marlkd.experts.store.dataset_path` of the key and its expert budget."""
    from marlkd.experts.store import dataset_path

    return dataset_path(data_root, key.env, key.quality, key.episodes, **_dataset_request(key))


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
# Markers, status and the summary


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
    runs_per_worker: int = DEFAULT_RUNS_PER_WORKER,
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
        runs_per_worker: local workers: jobs (runs and datasets) a worker process serves before a fresh one
            replaces it, keeping its imports and JAX compilations (1: a fresh process per run). Not used
            by Ray, whose workers are Ray's, or with ``workers=0``.

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
    check_runs_per_worker(runs_per_worker)
    root = Path(root).resolve()  # workers (Ray tasks on other nodes) may start in another directory
    sweep = spec.sweep_name(quick)
    runs = _open_sweep(root, spec, quick, runs)
    table = results_path(root, sweep)
    locate = dataset_file if dataset_fn is None else None  # a custom dataset function's files: unknown
    todo, skipped, unverified = _settle_finished(root, table, runs, locate)
    todo = launch_order(todo, spread_teachers=spec.share_teacher)
    if run_fn is train_run and group_seeds:  # a cell's seeds train as the members of one program
        from marlkd.experiments.members import SeedGroups

        run_fn = SeedGroups.of(todo, lambda run: run_dir_for(root, run))
    scheduler = None
    if todo:  # nothing to do: start no workers (a Ray instance takes seconds to start)
        backend = _backend(ray_address, workers, gpus_per_run, runs_per_worker)
        scheduler = Scheduler(root, table, todo, run_fn, dataset_fn or make_dataset, backend, unverified)
        scheduler.execute(progress_bar(len(todo), sweep, progress))
    return _summary(sweep, root, len(runs), skipped, scheduler, time.monotonic() - started)


def _summary(
    sweep: str, root: Path, total: int, skipped: int, scheduler: Scheduler | None, wall_time_s: float
) -> SweepSummary:
    """What a launch did: ``scheduler``'s counts (None: nothing was left to run)."""
    summary = SweepSummary(sweep, str(root), total, skipped, 0, (), 0, wall_time_s)
    if scheduler is None:
        return summary
    return dataclasses.replace(
        summary,
        skipped=skipped - scheduler.requeued,  # reused on recorded rows, until their dataset was made anew
        done=scheduler.done,
        failed=tuple(scheduler.failed),
        datasets=scheduler.datasets_made,
        shared=scheduler.shared,
    )


def _open_sweep(root: Path, spec: SweepSpec, quick: bool, runs: list[RunSpec]) -> list[RunSpec]:
    """Check the sweep's name, write its ``spec.json`` and return its runs, with the shared teacher cache
    when the spec asks for one."""
    sweep = spec.sweep_name(quick)
    if sweep in RESERVED_NAMES:
        raise ConfigError(f"a sweep may not be named {sweep!r}: <root>/{sweep} is shared by all sweeps")
    if spec.share_teacher:
        cache = teacher_cache_dir(root, spec, quick)
        runs = [with_teacher_cache(run, cache) for run in runs]
    write_json(sweep_dir(root, sweep) / "spec.json", dataclasses.asdict(spec))
    return runs


def _backend(
    ray_address: str | None,
    workers: int | None,
    gpus_per_run: float,
    runs_per_worker: int = DEFAULT_RUNS_PER_WORKER,
) -> Any:
    """Where the jobs run: Ray tasks, this process (``workers=0``) or a pool of ``workers`` processes,
    each serving up to ``runs_per_worker`` jobs."""
    if ray_address:
        return RayBackend(ray_address, workers, gpus_per_run)
    if workers == 0:
        return InlineBackend()
    return LocalBackend(workers or 1, runs_per_worker)


def _settle_finished(
    root: Path,
    table: Path,
    runs: Sequence[RunSpec],
    locate: Callable[[DatasetKey, Path], Path] | None = dataset_file,
) -> tuple[list[RunSpec], int, list[tuple[RunSpec, str]]]:
    """(the runs still to do, how many are finished, the runs reused on rows whose dataset is not there yet
    with their rows' checksum). The table is brought in line with the finished runs' markers: rows missing
    (a driver killed before writing them, a run finished by another sweep) are added, rows cut or damaged
    by a crash, or naming another dataset than the marker's, are rewritten.

    A run with rows but no ``done`` marker (a committed results.csv copied to another machine) counts as
    finished only if its rows name the dataset it would be trained on now: when that dataset's file
    (``locate(key, <root>/datasets)``) exists, its checksum must equal the rows' ``dataset_checksum``;
    otherwise (another checksum, or rows that record none) the run is trained again and its stale rows are
    deleted now, so its new rows take their place. When the file is not there yet (or ``locate`` is None:
    a custom dataset function's files cannot be found before it runs), the rows are reused for now; the
    scheduler checks them once it has made that dataset (:class:`Scheduler`'s ``unverified``)."""
    from marlkd.data.format import stored_checksum

    recorded = recorded_checksums(table)
    data_root = root / "datasets"
    present: dict[str, str | None] = {}  # dataset key -> its file's checksum (None: no file)
    expected: dict[str, list[dict[str, Any]]] = {}
    todo: list[RunSpec] = []
    stale: list[str] = []
    unverified: list[tuple[RunSpec, str]] = []
    skipped = 0
    for run in runs:
        marker = finished_marker(root, run)
        if marker is not None:
            skipped += 1
            expected[run.run_id] = marker_rows(run, marker)
            continue
        if run.run_id not in recorded:
            todo.append(run)
            continue
        key = run.dataset.key()
        if key not in present:
            present[key] = stored_checksum(locate(run.dataset, data_root)) if locate is not None else None
        if present[key] is None:
            skipped += 1  # for now: checked if this launch makes the dataset
            unverified.append((run, recorded[run.run_id]))
        elif recorded[run.run_id] == present[key]:
            skipped += 1  # trained on this very dataset where the table was made
        else:
            stale.append(run.run_id)
            todo.append(run)
    remove_runs(table, stale)
    sync_rows(table, expected)
    return todo, skipped, unverified
