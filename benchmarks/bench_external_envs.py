"""Throughput of the external environments: Highway (highway-env) and SMAX (jaxmarl).

Prints environment steps and agent steps per second:

* Highway, ``highway`` (highway-fast-v0) and ``highway-slow`` (highway-v0), 3 controlled vehicles, random
  actions, in this process and in 2 worker processes. Only steps of copies still running are counted
  (a finished copy is a no-op until every copy is done and all are reset).
* SMAX, every scenario with B copies (default 256) in one jitted, vmapped step, random available actions.
  Compilation is timed separately and warmed up before timing; all B copies are counted on every step
  (a frozen copy costs the same as a running one). The time to draw actions is not counted.

Steps per CPU second of this process are printed too (not for worker processes): on a shared machine they
say what one core does, whatever the load. Usage:
``python benchmarks/bench_external_envs.py [--seconds 10] [--only highway|smax] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _random_valid(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(mask, rng.random(mask.shape), -1.0).argmax(axis=-1)


def bench_highway(env_id: str, workers: int, copies: int, seconds: float) -> tuple[float, float, float]:
    """(env steps/s, agent steps/s, env steps per CPU second of this process) of ``copies`` copies in
    ``workers`` processes (0: this process; the CPU figure is meaningful only then)."""
    from marlkd.envs import make_batched

    rng = np.random.default_rng(0)
    with make_batched(env_id, copies, num_workers=workers) as env:
        n = env.spec.n_agents
        env.reset(seed=0)
        agent_done = np.zeros((copies, n), dtype=bool)
        env_steps = agent_steps = 0
        elapsed = cpu = 0.0
        episode = 0
        while elapsed < seconds:
            if env.done().all():
                episode += 1
                env.reset(seed=episode * copies)
                agent_done[:] = False
            env_steps += int((~env.done()).sum())
            agent_steps += int((~agent_done).sum())
            start, start_cpu = time.perf_counter(), time.process_time()
            _, _, terminated, truncated = env.step(rng.integers(0, 5, size=(copies, n)))
            elapsed += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            agent_done = terminated | truncated
        return env_steps / elapsed, agent_steps / elapsed, env_steps / max(cpu, 1e-9)


def bench_smax(env_id: str, copies: int, seconds: float) -> tuple[float, float, float, float]:
    """(env steps/s, agent steps/s, env steps per CPU second, compile seconds) of ``copies`` copies."""
    from marlkd.envs import make_batched

    rng = np.random.default_rng(0)
    env = make_batched(env_id, copies)
    start = time.perf_counter()
    env.reset(seed=0)
    env.step(_random_valid(env.action_mask(), rng))
    env.step(_random_valid(env.action_mask(), rng))
    compile_seconds = time.perf_counter() - start
    steps = 0
    elapsed = cpu = 0.0
    episode = 0
    while elapsed < seconds:
        if env.done().all():
            episode += 1
            env.reset(seed=episode * copies)
        actions = _random_valid(env.action_mask(), rng)
        start, start_cpu = time.perf_counter(), time.process_time()
        env.step(actions)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        steps += 1
    rate = steps * copies / elapsed
    return rate, rate * env.spec.n_agents, steps * copies / max(cpu, 1e-9), compile_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--only", choices=["highway", "smax"], help="run one family only")
    parser.add_argument("--batch", type=int, default=256, help="SMAX copies B")
    parser.add_argument("--highway-copies", type=int, default=4, help="Highway copies per measurement")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu count {os.cpu_count()}; load average {load:.1f}; {args.seconds:g} s per measurement")
    print(
        f"{'environment':<20} {'setting':<28} {'env steps/s':>12} {'agent steps/s':>14} "
        f"{'env steps/CPU-s':>16}"
    )
    if args.only in (None, "highway"):
        for env_id in ("highway", "highway-slow"):
            for workers, label in ((0, "1 process"), (2, "2 worker processes")):
                rate, agent_rate, cpu_rate = bench_highway(env_id, workers, args.highway_copies, args.seconds)
                setting = f"{label}, {args.highway_copies} copies"
                per_cpu = f"{cpu_rate:.1f}" if workers == 0 else "-"
                row = f"{env_id:<20} {setting:<28} {rate:>12.1f} {agent_rate:>14.1f} {per_cpu:>16}"
                print(row, flush=True)
    if args.only in (None, "smax"):
        from marlkd.envs.smax import SMAX_SCENARIOS

        for env_id in SMAX_SCENARIOS:
            rate, agent_rate, cpu_rate, compile_seconds = bench_smax(env_id, args.batch, args.seconds)
            setting = f"B={args.batch} (compile {compile_seconds:.1f} s)"
            row = f"{env_id:<20} {setting:<28} {rate:>12.0f} {agent_rate:>14.0f} {cpu_rate:>16.0f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
