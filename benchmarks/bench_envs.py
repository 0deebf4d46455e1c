"""Throughput of the native batched environments: agent-steps per second under uniformly random actions.

Each measurement steps ``B`` copies for ``--steps`` calls of ``step`` (resetting all copies whenever all are
done, resets included in the time) and counts the agent-steps of copies that were still running. It is
repeated ``--repeats`` times; the median is reported as a Markdown table. One thread, as on the project's
shared 2-core machine:

    .venv/bin/python benchmarks/bench_envs.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread settings)

from marlkd.envs import make_batched  # noqa: E402

NATIVE = ("fill-in", "equal-space", "grid-world")


def agent_steps_per_second(env_id: str, num_envs: int, steps: int, seed: int) -> float:
    """Agent-steps of running copies per wall-clock second over ``steps`` calls of ``step``."""
    env = make_batched(env_id, num_envs)
    rng = np.random.default_rng(seed)
    n_agents, n_actions = env.spec.n_agents, env.spec.n_actions
    actions = rng.integers(0, n_actions, size=(steps, num_envs, n_agents))  # drawn before timing
    env.reset(seed=seed)
    agent_steps = 0
    start = time.perf_counter()
    for t in range(steps):
        running = ~env.done()
        if not running.any():
            env.reset()
            running = ~env.done()
        env.step(actions[t])
        agent_steps += int(running.sum()) * n_agents
    return agent_steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="batch sizes B")
    parser.add_argument("--steps", type=int, default=400, help="step calls per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell; the median is shown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    machine = platform.processor() or platform.machine()
    print(f"numpy {np.__version__}, Python {platform.python_version()}, {machine}, 1 thread")
    print(f"median of {args.repeats} runs x {args.steps} steps, random actions; million agent-steps/s\n")
    print("| environment | " + " | ".join(f"B = {size}" for size in args.sizes) + " |")
    print("| --- | " + " | ".join("---:" for _ in args.sizes) + " |")
    for env_id in NATIVE:
        cells = []
        for size in args.sizes:
            rates = [
                agent_steps_per_second(env_id, size, args.steps, args.seed + r) for r in range(args.repeats)
            ]
            cells.append(f"{statistics.median(rates) / 1e6:.2f}")
        print(f"| {env_id} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
