"""What a run pays for its process: sweep workers that serve one run each against workers that serve
several, and SMAX runs with and without JAX's persistent compilation cache.

**Workers.** The same sweep (Grid-World runs of ``table1``'s IDT and BC configs (its model, batch sizes and
one thread per run), ``--steps`` updates,
``--eval-episodes`` evaluation episodes, one thread, seeds trained one at a time) is run through the local
backend with ``--workers`` processes, once with a fresh process per run (``runs_per_worker = 1``) and once
with each ``--runs-per-worker`` value, in alternating order over ``--repeats`` rounds, each in a new
experiments root. The dataset (random-policy Grid-World) is made once before anything is timed. Printed per
setting: CPU seconds per run (the driver and its worker processes, ``RUSAGE_CHILDREN`` of a subprocess that
runs the sweep), wall seconds per run, the CPU seconds per run saved against a fresh process per run, the
fraction of a run's CPU that is, and the workers' peak memory. ``--env smax-2s3z`` runs IDT on SMAX instead
(JAX's compilation cache off, so that only the process's reuse is measured).

**SMAX.** ``marlkd train idt`` of a small run on ``smax-2s3z`` (``--smax-steps`` updates, evaluation
episodes as ``--eval-episodes``) as separate processes, interleaved: with the compilation cache off, with
an empty cache (cold: compiles and writes it) and with the cache the cold run wrote (warm). CPU and wall
seconds of each process; then where a SMAX process's start goes (imports, first reset and step, each
compiled on first use), with the cache off, empty and warm. Needs ``marlkd[smax]``.

    python benchmarks/bench_workers.py                            # both
    python benchmarks/bench_workers.py --skip-smax --runs 8 --runs-per-worker 4 16 --repeats 2
    python benchmarks/bench_workers.py --skip-workers --repeats 2
    python benchmarks/bench_workers.py --skip-smax --env smax-2s3z --runs 4 --steps 20 --episodes 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name = "bench-workers"
description = "Grid-World runs for benchmarks/bench_workers.py."

[grid]
envs = ["{env}"]
methods = {methods}
seeds = {seeds}
steps = [{steps}]
eval_episodes = [{eval_episodes}]
dataset_episodes = [{episodes}]

# table1's budget block: its decision transformer, batch sizes and one thread per run
[train]
lr = 3e-4
warmup_steps = 100
log_every = 50
checkpoint_every = 500
threads = 1

{bc_override}
[overrides.idt.algo]
context = 10
width = 64
layers = 2
"""

_SWEEP = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from bench_workers import random_dataset
from marlkd.experiments import parse_spec
from marlkd.experiments.runner import run_sweep
start = time.perf_counter()
summary = run_sweep(parse_spec({spec!r}), {root!r}, workers={workers}, runs_per_worker={per_worker},
                    dataset_fn=random_dataset, progress=False, group_seeds=False)
assert summary.ok, summary.failed
children = resource.getrusage(resource.RUSAGE_CHILDREN)
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"done": summary.done, "wall": time.perf_counter() - start,
                  "cpu": me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime,
                  "worker_rss_mb": children.ru_maxrss / 1024}}))
"""


def random_dataset(key, root: Path) -> Path:
    """The sweep's dataset function here: a random-policy dataset (made once, then found)."""
    from marlkd.data import collect_random_dataset

    path = Path(root) / f"{key.env}-random-{key.episodes}-s{key.seed}.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        collect_random_dataset(key.env, key.episodes, path, seed=key.seed)
    return path


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "MARLKD_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _sweep(spec: str, root: Path, workers: int, per_worker: int, datasets: Path) -> dict:
    root.mkdir(parents=True)
    (root / "datasets").symlink_to(datasets.resolve(), target_is_directory=True)
    code = _SWEEP.format(
        bench=str(Path(__file__).resolve().parent),
        spec=spec,
        root=str(root),
        workers=workers,
        per_worker=per_worker,
    )
    env = {**_env(), "MARLKD_JAX_CACHE": "off"}  # SMAX: what reusing the process saves, without the cache
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_workers(args, work: Path) -> dict:
    methods = ["idt", "bc"] if args.env == "grid-world" else ["idt"]
    spec = SPEC.format(
        env=args.env,
        methods=json.dumps(methods),
        seeds=max(1, args.runs // len(methods)),
        steps=args.steps,
        eval_episodes=args.eval_episodes,
        episodes=args.episodes,
        bc_override="[overrides.bc.train]\nbatch_size = 256\nlr = 0.001\n" if "bc" in methods else "",
    )
    datasets = work / "datasets"
    from marlkd.experiments import expand, parse_spec

    for key in {run.dataset.key(): run.dataset for run in expand(parse_spec(spec))}.values():
        random_dataset(key, datasets)  # made before anything is timed
    settings = [1, *[n for n in args.runs_per_worker if n != 1]]
    results: dict[int, list[dict]] = {n: [] for n in settings}
    for repeat in range(args.repeats):
        order = settings if repeat % 2 == 0 else settings[::-1]
        for n in order:
            outcome = _sweep(spec, work / f"r{repeat}-n{n}", args.workers, n, datasets)
            results[n].append(outcome)
            print(
                f"  round {repeat + 1}, runs_per_worker={n:3d}: {outcome['done']} runs, "
                f"{outcome['cpu']:.1f} CPU s, {outcome['wall']:.1f} wall s",
                flush=True,
            )
    runs = results[1][0]["done"]
    base = statistics.mean(r["cpu"] for r in results[1]) / runs
    print(
        f"\n{runs} {args.env} runs ({' and '.join(methods).upper()}, {args.steps} updates, "
        f"{args.eval_episodes} eval episodes), "
        f"{args.workers} worker(s), mean of {args.repeats} round(s):"
    )
    print("runs/worker  CPU s/run  wall s/run  saved CPU s/run  of a run  worker peak MB")
    summary = {}
    for n in settings:
        cpu = statistics.mean(r["cpu"] for r in results[n]) / runs
        wall = statistics.mean(r["wall"] for r in results[n]) / runs
        rss = max(r["worker_rss_mb"] for r in results[n])
        print(
            f"{n:11d}  {cpu:9.2f}  {wall:10.2f}  {base - cpu:15.2f}  {(base - cpu) / base:7.1%}  {rss:14.0f}"
        )
        summary[n] = {"cpu_per_run": cpu, "wall_per_run": wall, "worker_peak_mb": rss, "rounds": results[n]}
    return summary


def _train_smax(data: Path, out: Path, cache: str, args) -> tuple[float, float]:
    env = {**_env(), "MARLKD_JAX_CACHE": cache}
    command = [
        sys.executable,
        "-m",
        "marlkd",
        "train",
        "idt",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(args.smax_steps),
        "--eval-episodes",
        str(args.eval_episodes),
        "--quiet",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return cpu, wall


_PHASES = """
import time
import numpy as np
clock = time.process_time
t0 = clock()
import torch
t1 = clock()
import marlkd.envs.smax as smax
t2 = clock()
env = smax.make_batched_smax(8, "smax-2s3z")
env.reset(seed=0)
t3 = clock()
env.step(np.full((8, env.spec.n_agents), 4))
t4 = clock()
print(f"import torch {t1 - t0:.2f}, import marlkd's SMAX (JAX, jaxmarl) {t2 - t1:.2f}, "
      f"first reset {t3 - t2:.2f}, first step {t4 - t3:.2f} CPU s")
"""


def smax_phases(work: Path) -> None:
    """Where a SMAX process's start goes (B = 8), with the cache off, empty and warm."""
    cache = work / "jax-cache-phases"
    for kind, where in (("off", "off"), ("cold", str(cache)), ("warm", str(cache))):
        env = {**_env(), "MARLKD_JAX_CACHE": where}
        out = subprocess.run([sys.executable, "-c", _PHASES], env=env, capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr.strip()[-300:]
        print(f"  cache {kind:4s}: {line}")


def bench_smax(args, work: Path) -> dict:
    try:
        import jaxmarl  # noqa: F401
    except ImportError:
        print("SMAX: skipped (needs marlkd[smax])")
        return {}
    from marlkd.data import collect_random_dataset

    data = args.smax_data or collect_random_dataset("smax-2s3z", 8, work / "smax.h5", seed=0)
    times: dict[str, list[tuple[float, float]]] = {"off": [], "cold": [], "warm": []}
    for repeat in range(args.repeats):
        cache = work / f"jax-cache-{repeat}"
        order = ["off", "cold", "warm"] if repeat % 2 == 0 else ["cold", "warm", "off"]
        for kind in order:
            where = "off" if kind == "off" else str(cache)
            cpu, wall = _train_smax(data, work / f"smax-{kind}-{repeat}", where, args)
            times[kind].append((cpu, wall))
            print(f"  round {repeat + 1}, cache {kind:4s}: {cpu:6.1f} CPU s, {wall:6.1f} wall s", flush=True)
    print(
        f"\nmarlkd train idt on smax-2s3z ({args.smax_steps} updates, {args.eval_episodes} eval episodes), "
        f"one process each, mean of {args.repeats} round(s):"
    )
    off_cpu = statistics.mean(c for c, _ in times["off"])
    summary = {}
    for kind in times:
        cpu = statistics.mean(c for c, _ in times[kind])
        wall = statistics.mean(w for _, w in times[kind])
        print(f"  cache {kind:4s}: {cpu:6.1f} CPU s, {wall:6.1f} wall s  ({off_cpu - cpu:+.1f} CPU s saved)")
        summary[kind] = {"cpu": cpu, "wall": wall, "rounds": times[kind]}
    print("\nA SMAX process's start, CPU s:")
    smax_phases(work)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per sweep (half IDT, half BC)")
    parser.add_argument("--steps", type=int, default=100, help="updates per Grid-World run")
    parser.add_argument("--eval-episodes", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=200, help="episodes of the Grid-World dataset")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--env",
        default="grid-world",
        help="environment of the workers' sweep (grid-world: IDT and BC runs; another, e.g. smax-2s3z: IDT "
        "runs, with JAX's compilation cache off)",
    )
    parser.add_argument("--runs-per-worker", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smax-steps", type=int, default=20)
    parser.add_argument("--smax-data", type=Path, default=None, help="an smax-2s3z dataset (default: random)")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-smax", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    record: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        if not args.skip_workers:
            record["workers"] = bench_workers(args, work)
        if not args.skip_smax:
            record["smax"] = bench_smax(args, work)
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
