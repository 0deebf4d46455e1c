"""Run and dataset functions for the fault-injection tests (importable by spawned workers and by driver
processes started with ``tests`` on the path).

``stepping_run`` stands in for training: it holds the run directory's lock as the training loop does,
appends one line per step to ``steps.txt`` (its "checkpoint": a resumed run starts after the last line),
and records its pid, so a test can see whether two processes ever trained one run, and whether a worker
outlived its driver. ``crashing_run`` kills its worker once, in the middle of one run."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from marlkd import filelock
from marlkd.experiments.spec import DatasetKey, RunSpec, parse_spec

STEPS = 12
STEP_S = 0.05

SPEC = """
name = "faults"
description = "A small sweep for the fault-injection tests."

[grid]
envs = ["grid-world"]
methods = ["idt", "bc"]
seeds = 3
steps = [12]
eval_episodes = [2]
dataset_episodes = [4]
"""


def spec():
    return parse_spec(SPEC)


def stepping_run(
    run: RunSpec, run_dir: Path, dataset: Path | None, kill_at: int | None = None
) -> dict[str, Any]:
    """``kill_at``: the process kills itself (``kill -9``) right after that step."""
    with filelock.locked(run_dir / ".lock", timeout=30, what=f"run directory {run_dir}"):
        with open(run_dir / "pids.txt", "a") as f:
            f.write(f"{os.getpid()}\n")
        steps = run_dir / "steps.txt"
        done = len(steps.read_text().splitlines()) if steps.exists() else 0
        for step in range(done + 1, STEPS + 1):
            time.sleep(STEP_S)
            with open(steps, "a") as f:
                f.write(f"{step} {os.getpid()}\n")
            if step == kill_at:
                (run_dir / "killed").write_text(f"{os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
    return {"return_mean": float(run.seed), "return_std": 0.0, "train_steps": STEPS, "seed": run.seed}


def crashing_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """``stepping_run``, except that the worker executing seed 1 of IDT is killed at its step 5 (once)."""
    crash = run.method == "idt" and run.seed == 1 and not (run_dir / "killed").exists()
    return stepping_run(run, run_dir, dataset, kill_at=5 if crash else None)


def quick_dataset(key: DatasetKey, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key.env}-{key.quality}-{key.episodes}-s{key.seed}.h5"
    path.write_text("placeholder")
    return path


def main() -> None:
    """``python fault_helpers.py ROOT WORKERS``: one sweep driver (as ``marlkd experiment run`` is)."""
    from marlkd.experiments.runner import run_sweep

    root, workers = sys.argv[1], int(sys.argv[2])
    summary = run_sweep(
        spec(), root, workers=workers, run_fn=stepping_run, dataset_fn=quick_dataset, progress=False
    )
    print(
        f"done {summary.done} shared {summary.shared} skipped {summary.skipped} ok {summary.ok}", flush=True
    )


if __name__ == "__main__":
    main()
