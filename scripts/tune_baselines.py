"""The tuning protocol of docs/baselines.md: a small grid per method on a configuration no table reports.

Every method (the baselines, IDT, MADT and ours) gets a learning-rate axis and one or two method knobs. The
grid runs on the *tuning configuration*: Equal Space with *normal* data (the tables report Equal Space with
good data only) and seeds 100 and up (the tables use seeds 0-9), at reduced budgets that fit a small
machine. Each run is a plain ``marlkd.train`` run under ``ROOT/runs/<method>/<setting>/s<seed>`` (a finished
run is read back, not redone, so the script resumes); the summary is written to ``ROOT/grid.json`` and
printed as the Markdown tables of docs/baselines.md.

Convergence is judged on the same runs: the TD methods train for ``--td-steps`` updates (more than the
others' ``--steps``), and with ``--dt-steps`` the decision transformers (IDT, MADT and ours, teacher and
students alike) train for that many; such runs evaluate every ``--steps`` updates and the table shows the
return at both points. The learning rate is constant after its warm-up, so the return at ``--steps`` is
that of a run of ``--steps`` updates; a method whose return still rises between the two points needs more.

    nice -n 10 python scripts/tune_baselines.py --root runs/tuning --methods bc cql bcq icq
    nice -n 10 python scripts/tune_baselines.py --root runs/tuning --methods gail airl idt madt ours
    nice -n 10 python scripts/tune_baselines.py --root runs/dt-budget --methods idt madt ours \
        --steps 1000 --dt-steps 3000                          # the decision transformers' budget check
    python scripts/tune_baselines.py --root runs/tuning --methods bc cql --dry-run      # list the runs
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

# method -> (fixed settings, {axis: values}); axes are "train.<field>" or "algo.<field>"
GRID: dict[str, tuple[dict[str, Any], dict[str, list[Any]]]] = {
    "bc": ({"train.batch_size": 256}, {"train.lr": [3e-4, 1e-3], "algo.history": [1, 4]}),
    "cql": (
        {"train.batch_size": 256, "algo.target_period": 200},
        {"train.lr": [3e-4, 1e-3], "algo.alpha": [0.1, 1.0]},
    ),
    "bcq": (
        {"train.batch_size": 256, "algo.target_period": 200},
        {"train.lr": [3e-4, 1e-3], "algo.threshold": [0.1, 0.3]},
    ),
    "icq": (
        {"train.batch_size": 256, "algo.target_period": 200},
        {"train.lr": [3e-4, 1e-3], "algo.critic_alpha": [10.0, 1000.0]},
    ),
    "gail": ({}, {"algo.lr": [3e-4, 1e-3], "algo.reward": ["positive", "negative"]}),
    "airl": ({}, {"algo.lr": [3e-4, 1e-3]}),
    "idt": ({"algo.context": 10, "algo.width": 64, "algo.layers": 2}, {"train.lr": [3e-4, 1e-3]}),
    "madt": ({"algo.context": 10, "algo.width": 64, "algo.layers": 2}, {"train.lr": [3e-4, 1e-3]}),
    "ours": ({"algo.context": 10, "algo.width": 64, "algo.layers": 2}, {"train.lr": [3e-4, 1e-3]}),
}
TD_METHODS = ("cql", "bcq", "icq")
SEQUENCE_METHODS = ("idt", "madt", "ours")
ADVERSARIAL = ("gail", "airl")


def settings_grid(method: str) -> list[dict[str, Any]]:
    """Every combination of ``method``'s axes, each merged over its fixed settings."""
    fixed, axes = GRID[method]
    names = list(axes)
    return [
        {**fixed, **dict(zip(names, values, strict=True))} for values in itertools.product(*axes.values())
    ]


def tag(settings: dict[str, Any], method: str) -> str:
    """A directory name for the grid point: its axis values only."""
    _, axes = GRID[method]
    return "_".join(f"{name.split('.')[-1]}={settings[name]}" for name in axes)


def long_steps(method: str, args: argparse.Namespace) -> int | None:
    """The longer budget ``method`` trains for in the convergence check (None: it trains ``--steps``)."""
    if method in TD_METHODS:
        return args.td_steps
    if method in SEQUENCE_METHODS and args.dt_steps:
        return args.dt_steps
    return None


def run_config(
    method: str, settings: dict[str, Any], seed: int, data: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    long = long_steps(method, args)
    steps = long or args.steps
    train = {"steps": steps, "seed": seed, "lr": 3e-4, "warmup_steps": 50, "threads": 1, "log_every": 50}
    train["checkpoint_every"] = steps
    evaluation: dict[str, Any] = {"episodes": args.eval_episodes}
    if long:
        evaluation["every"] = args.steps  # the return at the shorter budget too: the convergence check
    algo: dict[str, Any] = {}
    if method in ADVERSARIAL:
        algo.update(env_steps=args.env_steps, num_envs=16)
    if method == "ours":
        algo["teacher_steps"] = steps
    for name, value in settings.items():
        section, field = name.split(".")
        (train if section == "train" else algo)[field] = value
    return {
        "method": method,
        "data": str(data),
        "out": str(out),
        "train": train,
        "eval": evaluation,
        "algo": algo,
    }


def eval_curve(run_dir: Path) -> dict[int, float]:
    """``{update: eval/return_mean}`` from a run's metrics.csv (rows: step, wall_time_s, metric, value)."""
    curve: dict[int, float] = {}
    with open(run_dir / "metrics.csv") as f:
        for step, _, metric, value in csv.reader(f):
            if metric == "eval/return_mean":
                curve[int(step)] = float(value)
    return curve


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("runs/tuning"))
    parser.add_argument("--methods", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--env", default="equal-space")
    parser.add_argument("--quality", default="normal")
    parser.add_argument("--episodes", type=int, default=500, help="dataset episodes")
    parser.add_argument("--dataset-seed", type=int, default=7)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    parser.add_argument("--steps", type=int, default=300, help="updates (and ours's teacher updates)")
    parser.add_argument("--td-steps", type=int, default=600, help="updates of CQL, BCQ and ICQ")
    parser.add_argument(
        "--dt-steps",
        type=int,
        default=0,
        help="updates of IDT, MADT and ours (teacher and students) in the convergence check (0: --steps)",
    )
    parser.add_argument("--env-steps", type=int, default=8000, help="GAIL/AIRL environment steps")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--dry-run", action="store_true", help="list the runs only")
    parser.add_argument(
        "--summarize", action="store_true", help="tabulate the finished runs only (train nothing)"
    )
    return parser.parse_args()


def tune_method(method: str, data: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train (or, with --summarize, read) every seed of each of ``method``'s settings; a row per setting."""
    from marlkd.run_config import RunConfig
    from marlkd.training import train

    rows = []
    for settings in settings_grid(method):
        returns, early, wall = [], [], []
        for seed in args.seeds:
            out = args.root / "runs" / method / tag(settings, method) / f"s{seed}"
            config = run_config(method, settings, seed, data, out, args)
            if args.dry_run:
                print(json.dumps(config))
                continue
            if args.summarize:
                if not (out / "results.json").exists():
                    continue
                result = json.loads((out / "results.json").read_text())
                wall.append(result["train_time_s"])
            else:
                t0 = time.perf_counter()
                result = train(RunConfig.from_dict(config), progress=False)
                wall.append(time.perf_counter() - t0)
            returns.append(result["return_mean"])
            if long_steps(method, args):
                # ours's metrics count its teacher's updates first: its students' return after --steps
                # of their own updates is logged at teacher_steps + --steps
                at = config["algo"].get("teacher_steps", 0) + args.steps
                early.append(eval_curve(out).get(at, float("nan")))
        if args.dry_run or not returns:
            continue
        row = {"settings": settings, "returns": returns, "mean": statistics.fmean(returns)}
        if early:
            row["returns_at_steps"] = early
            row["mean_at_steps"] = statistics.fmean(early)
        row["wall_s"] = sum(wall)
        rows.append(row)
        print(method, tag(settings, method), f"{row['mean']:.3f}", returns, flush=True)
    return rows


def main() -> None:
    args = parse_args()

    import torch

    from marlkd.experts import ensure_dataset

    torch.set_num_threads(1)
    root = args.root / "datasets"
    data = root / f"{args.env}-{args.quality}-{args.episodes}ep-seed{args.dataset_seed}.h5"
    if not args.summarize:
        made = ensure_dataset(
            args.env, args.quality, args.episodes, root, seed=args.dataset_seed, progress=False
        )
        data = Path(made)
    summary: dict[str, Any] = {
        "command": vars(args) | {"root": str(args.root)},
        "tuning_configuration": {
            "env": args.env,
            "quality": args.quality,
            "dataset_episodes": args.episodes,
            "dataset_seed": args.dataset_seed,
            "seeds": args.seeds,
        },
        "grid": {},
    }
    for method in args.methods:
        rows = tune_method(method, data, args)
        if rows:
            best = max(rows, key=lambda r: r["mean"])
            summary["grid"][method] = {"rows": rows, "chosen": best["settings"]}
    if not args.dry_run:
        path = args.root / "grid.json"  # several invocations (method subsets) add up to one summary
        if args.summarize:
            print(markdown(summary, args))
            return
        if path.exists():
            previous = json.loads(path.read_text())
            summary["grid"] = {**previous.get("grid", {}), **summary["grid"]}
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(markdown(summary, args))


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """The grid as one Markdown table per method (mean per-agent return over the seeds)."""
    lines = []
    for method, entry in summary["grid"].items():
        _, axes = GRID[method]
        checked = long_steps(method, args) is not None  # trained longer: the convergence check's column
        head = [name.split(".")[-1] for name in axes] + ["return (seeds)", "mean"]
        if checked:
            head += [f"mean at {args.steps} updates"]
        lines += [f"**{method}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in entry["rows"]:
            chosen = " (chosen)" if row["settings"] == entry["chosen"] else ""
            cells = [str(row["settings"][name]) for name in axes]
            cells += [", ".join(f"{r:.2f}" for r in row["returns"]), f"{row['mean']:.2f}{chosen}"]
            if checked:
                cells.append(f"{row['mean_at_steps']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
