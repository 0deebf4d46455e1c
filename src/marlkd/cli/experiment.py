"""``marlkd experiment``: list, run, check and report sweeps (the paper's tables and figures, or your own)."""

from __future__ import annotations

import argparse
import os
import signal
from collections import Counter

from marlkd.cli import add_quiet, add_wandb


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run the paper's experiments (or your own sweep spec) and report them",
        description="Sweeps over environments x methods x seeds x settings, from a spec: a built-in name "
        "(see `marlkd experiment list`) or a TOML file. See docs/experiments.md.",
        fill=_fill,
    )
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])


def _fill(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="experiment_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the built-in specs and their sizes")
    listing.set_defaults(func=_list)
    _add_run(actions)
    _add_report(actions)
    _add_status(actions)


def _add_common(p: argparse.ArgumentParser) -> None:
    from marlkd.experiments.runner import DEFAULT_ROOT

    p.add_argument("spec", metavar="SPEC", help="a built-in spec's name or a spec .toml file")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"experiments root (default: {DEFAULT_ROOT})")
    p.add_argument("--quick", action="store_true", help="the spec's quick variant (fewer seeds, steps)")


def _add_filters(p: argparse.ArgumentParser) -> None:
    for flag, metavar, what in (
        ("--only-env", "ENV", "environments"),
        ("--only-method", "METHOD", "methods"),
    ):
        p.add_argument(
            flag, nargs="+", action="extend", default=[], metavar=metavar, help=f"only these {what}"
        )
    p.add_argument(
        "--max-seeds",
        type=int,
        default=None,
        metavar="N",
        help="only the grid's first N seeds (run ids unchanged: raise N later to go on)",
    )


def _filters(args: argparse.Namespace) -> dict[str, object]:
    """The options :func:`_add_filters` adds, as ``run_sweep``'s and ``sweep_status``'s keyword arguments."""
    return {"only_envs": args.only_env, "only_methods": args.only_method, "max_seeds": args.max_seeds}


def _add_run(actions: argparse._SubParsersAction) -> None:
    run = actions.add_parser(
        "run", help="run what is missing of a sweep (runs finished by any sweep under the root are skipped)"
    )
    _add_common(run)
    _add_filters(run)
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at a time (local default 1; 0: in this process; Ray default: one per CPU)",
    )
    run.add_argument(
        "--runs-per-worker",
        type=int,
        default=None,
        metavar="N",
        help="local workers: runs (and datasets) a worker process serves before a fresh one replaces it, "
        "keeping its imports and JAX compilations (default 16; 1: a fresh process per run)",
    )
    run.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run on Ray: 'local' starts a local instance, or a cluster address ('auto', "
        "'ray://host:10001'); needs marlkd[ray]",
    )
    run.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task asks for")
    add_quiet(run)
    add_wandb(run)
    run.set_defaults(func=_run)


def _add_report(actions: argparse._SubParsersAction) -> None:
    report = actions.add_parser("report", help="tables, robust statistics and plots from the results table")
    _add_common(report)
    report.add_argument("--out", default=None, help="report folder (default: <root>/<sweep>/report)")
    report.add_argument("--bootstrap-reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    report.add_argument(
        "--rliable",
        action="store_true",
        help="compute the per-cell intervals with the rliable package if it is installed",
    )
    report.add_argument(
        "--all-runs", action="store_true", help="also report table rows of runs no longer in the spec's grid"
    )
    report.set_defaults(func=_report)


def _add_status(actions: argparse._SubParsersAction) -> None:
    status = actions.add_parser(
        "status",
        help="how many runs are done, failed, incomplete or missing "
        "(in the root's run store, shared by its sweeps)",
    )
    _add_common(status)
    _add_filters(status)
    status.add_argument("--failed", action="store_true", help="list every failed run with its error")
    status.set_defaults(func=_status)


def _list(_args: argparse.Namespace) -> int:
    from marlkd.experiments.spec import builtin_spec_names, expand, load_spec

    rows = []
    for name in builtin_spec_names():
        spec = load_spec(name)
        rows.append(
            (name, spec.kind, str(len(expand(spec))), str(len(expand(spec, quick=True))), spec.description)
        )
    header = ("spec", "kind", "runs", "quick", "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    print("\nRun one with `marlkd experiment run SPEC [--quick]`; or give a path to your own .toml.")
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(args: argparse.Namespace) -> int:
    from marlkd.experiments.runner import DEFAULT_ROOT, run_sweep

    if args.wandb:  # each run logs to W&B; local worker processes inherit the variable
        from marlkd import tracking

        tracking.check_available()
        os.environ[tracking.ENV_FLAG] = "1"
    # A scheduler's SIGTERM (SLURM, Kubernetes, `kill`) stops the sweep as Ctrl-C does: the workers are
    # stopped, interrupted runs keep their checkpoints, and the next launch resumes them.
    per_worker = {} if args.runs_per_worker is None else {"runs_per_worker": args.runs_per_worker}
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = run_sweep(
            args.spec,
            args.root,
            quick=args.quick,
            workers=args.workers,
            ray_address=args.ray,
            **_filters(args),
            gpus_per_run=args.gpus_per_run,
            progress=not args.quiet,
            **per_worker,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    shared = f", {summary.shared} finished by another driver" if summary.shared else ""
    print(
        f"{summary.sweep}: {summary.total} runs: {summary.skipped} already finished, {summary.done} done "
        f"now{shared}, {len(summary.failed)} failed ({summary.wall_time_s:.0f} s). "
        f"Results: {summary.results}"
    )
    for failure in summary.failed:
        print(f"  failed: {failure.run_id}: {failure.error}  (details: {failure.run_dir})")
    if summary.failed:
        print("Run the same command again to retry the failed runs.")
    else:
        print(
            f"Report: marlkd experiment report {args.spec}{' --quick' if args.quick else ''}"
            f"{'' if args.root == DEFAULT_ROOT else f' --root {args.root}'}"
        )
    return 0 if summary.ok else 1


def _report(args: argparse.Namespace) -> int:
    from marlkd.errors import MarlkdError
    from marlkd.experiments.report import write_report
    from marlkd.experiments.runner import unrecorded_runs

    missing = unrecorded_runs(args.spec, args.root, quick=args.quick)
    if missing:
        raise MarlkdError(
            f"the results table lacks the rows of {len(missing)} finished run(s) ({missing[0]}"
            f"{', ...' if len(missing) > 1 else ''}); run `marlkd experiment run {args.spec}"
            f"{' --quick' if args.quick else ''}` to restore them from the runs, then report"
        )
    path = write_report(
        args.spec,
        args.root,
        quick=args.quick,
        out=args.out,
        bootstrap_reps=args.bootstrap_reps,
        seed=args.seed,
        use_rliable=args.rliable,
        all_runs=args.all_runs,
    )
    print(f"wrote {path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from marlkd.experiments.runner import sweep_status

    statuses = sweep_status(args.spec, args.root, quick=args.quick, **_filters(args))
    states = ("done", "failed", "incomplete", "missing")
    cells: dict[tuple[str, str], Counter] = {}
    for status in statuses:
        cells.setdefault((status.env, status.method), Counter())[status.status] += 1
    totals = Counter(status.status for status in statuses)
    width_env = max([len("env"), *(len(env) for env, _ in cells)])
    width_method = max([len("method"), *(len(method) for _, method in cells)])
    print(
        f"{'env'.ljust(width_env)}  {'method'.ljust(width_method)}  " + "  ".join(s.rjust(10) for s in states)
    )
    for (env, method), counts in cells.items():
        print(
            f"{env.ljust(width_env)}  {method.ljust(width_method)}  "
            + "  ".join(str(counts[s]).rjust(10) for s in states)
        )
    print(
        f"{'total'.ljust(width_env)}  {''.ljust(width_method)}  "
        + "  ".join(str(totals[s]).rjust(10) for s in states)
    )
    failed = [s for s in statuses if s.status == "failed"]
    if failed and not args.failed:
        print(f"\n{len(failed)} failed; list them with --failed (tracebacks in each run's experiment.json)")
    for status in failed if args.failed else []:
        print(f"failed: {status.run_id}: {status.error}")
    return 0
