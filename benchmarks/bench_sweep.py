"""Sweep throughput: runs per CPU-hour, every run alone against seeds trained as members.

A fixed set of cells of the built-in ``table1`` sweep on Grid-World (IDT, MADT, ours, BC, CQL; their exact
configs: the sweep's model, batch sizes and budget), ``--seeds`` seeds each, trained in this process with
one thread: first every run alone (``marlkd.train``), then the same runs as the sweep trains them
(IDT's and MADT's seeds as the members of one program, ``marlkd.experiments.members``; the other methods
one at a time). Each cell's time is the CPU time of this process (training and evaluation), so
other work on the machine does not count; a short warm-up run comes first, and ``--repeats 2`` measures
each cell twice, alternating which way goes first, so a drift in the machine's load hits both alike.
Also: the CPU time of one training step of the sweep's decision transformer as one run and as S seeds'
members (interleaved rounds, in each ``--profile-precision``), its FLOPs (``torch.utils.flop_counter``)
and achieved GFLOP/s, against a matmul microbenchmark at the model's largest matmul shape in the same
process, and one run's evaluation time against its updates.

    python benchmarks/bench_sweep.py                  # the sweep's budget: 1000 updates, 32 eval episodes
    python benchmarks/bench_sweep.py --steps 100 --seeds 4 --eval-episodes 8   # a short measurement
    python benchmarks/bench_sweep.py --device cuda    # on a GPU (wall time there)
    python benchmarks/bench_sweep.py --cells idt --seeds 10 --quality good   # the equality check
    python benchmarks/bench_sweep.py --cells idt madt bc --seeds 10 --steps 200 --quality good --repeats 2
    python benchmarks/bench_sweep.py --profile-only --profile-precision fp32 bf16 --seeds 10

The dataset is a Grid-World dataset of ``--episodes`` random-policy episodes (``--data FILE`` takes any
other): throughput does not depend on the data's quality. ``--quality good`` (or normal, poor) trains on
the tier the sweep trains on instead (``marlkd.experts.ensure_dataset`` under ``--data-root``: the PPO
expert is trained first if it is missing, a few CPU-minutes), which makes the comparison of returns the
one that matters. ``--json FILE`` also writes every figure, with each run's return.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import marlkd
from marlkd.experiments import expand, load_spec
from marlkd.experiments.members import MEMBER_METHODS, MemberFailure, train_members
from marlkd.run_config import RunConfig
from marlkd.threads import apply_threads

CELLS = ("idt", "madt", "ours", "bc", "cql")


class Clock:
    """CPU time of this process on the CPU; wall time (after synchronizing) on a GPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def cell_configs(
    method: str, seeds: int, data: Path, out: Path, args, precision: str | None = None
) -> list[RunConfig]:
    runs = [
        run
        for run in expand(load_spec("table1"))
        if run.env == "grid-world" and run.method == method and run.seed < seeds
    ]
    configs = []
    for run in sorted(runs, key=lambda r: r.seed):
        config = dict(run.config)
        config["train"] = {**config["train"], "device": args.device}
        if precision or args.precision:
            config["train"]["precision"] = precision or args.precision
        if args.steps:
            config["train"]["steps"] = args.steps
            config["train"]["checkpoint_every"] = max(args.steps, 1)
        config["eval"] = {**config.get("eval", {}), "episodes": args.eval_episodes}
        configs.append(RunConfig.from_dict({**config, "data": str(data), "out": str(out / f"s{run.seed}")}))
    return configs


def _return(result) -> float:
    """A run's mean evaluation return; a member that failed says so and counts as NaN."""
    if isinstance(result, MemberFailure):
        print(f"  member {result.out} failed: {result.error}")
        return float("nan")
    return result.get("return_mean", float("nan"))


def one_at_a_time(configs: list[RunConfig], clock: Clock) -> tuple[float, list[float]]:
    """(time, each run's mean evaluation return)."""
    start = clock()
    results = [marlkd.train(config, progress=False) for config in configs]
    return clock() - start, [_return(r) for r in results]


def as_members(configs: list[RunConfig], clock: Clock) -> tuple[float, list[float]]:
    start = clock()
    if configs[0].method in MEMBER_METHODS:
        results = train_members(configs)
    else:
        results = [marlkd.train(config, progress=False) for config in configs]
    return clock() - start, [_return(r) for r in results]


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means ``mean(b) - mean(a)`` and the half-width of its 95 % interval (Welch's t)."""
    import math

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.mean(b) - statistics.mean(a), 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    z = statistics.NormalDist().inv_cdf(0.975)  # Student's t quantile by its Cornish-Fisher expansion
    t = z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
    t += (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    return statistics.mean(b) - statistics.mean(a), t * se


def step_profiles(data: Path, members: int, precisions: list[str], args, clock: Clock) -> dict[str, dict]:
    """Per precision: CPU (or GPU wall) seconds per training step of the sweep's IDT model as one run and as
    ``members`` seeds' members (medians over ``--profile-steps`` interleaved rounds: each round times every
    precision's single run and group in turn), and the step's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from marlkd.experiments.members import MemberGroup
    from marlkd.training import build_algorithm, load_training_dataset, run_evaluation

    tmp = Path(tempfile.mkdtemp())
    try:
        evaluation = {}
        updates: dict[tuple[str, str], object] = {}
        flops: dict[str, int] = {}
        for precision in precisions:
            configs = cell_configs("idt", members, data, tmp / precision, args, precision)
            dataset = load_training_dataset(configs[0])
            learners = [
                build_algorithm(c, tmp / precision / f"p{i}", dataset)[0] for i, c in enumerate(configs)
            ]
            single = build_algorithm(configs[0], tmp / precision / "single", dataset)[0]
            with FlopCounterMode(display=False) as counter:
                single.update(0)
            flops[precision] = counter.get_total_flops()
            updates[precision, "one"] = single.update
            updates[precision, "members"] = MemberGroup(learners).update
            evaluation[precision] = (single, dataset, configs[0].eval)
        for step in range(3):  # warm-up
            for update in updates.values():
                update(step)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in updates}
        for step in range(args.profile_steps):
            for key, update in updates.items():
                t0 = clock()
                update(step)
                times[key].append(clock() - t0)
        result = {
            precision: {
                "flops": flops[precision],
                "one": statistics.median(times[precision, "one"]),
                "members": statistics.median(times[precision, "members"]),
            }
            for precision in precisions
        }
        for precision, (single, dataset, eval_config) in evaluation.items():
            if eval_config.episodes:  # one run's evaluation (the second of two: the first warms up)
                for _ in range(2):
                    t0 = clock()
                    run_evaluation(single.policy(), dataset, eval_config)
                    result[precision]["evaluation"] = clock() - t0
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def matmul_rates(
    shape: tuple[int, int, int], dtypes: list[torch.dtype | None], device: str, clock: Clock
) -> list[float]:
    """GFLOP/s of an (m x k) @ (k x n) matmul in each dtype (None: fp32), median of 20 interleaved rounds
    of 10 products."""
    m, k, n = shape
    pairs = [
        (
            torch.randn(m, k, device=device, dtype=d or torch.float32),
            torch.randn(k, n, device=device, dtype=d or torch.float32),
        )
        for d in dtypes
    ]
    for a, b in pairs:
        for _ in range(5):
            a @ b
    times: list[list[float]] = [[] for _ in dtypes]
    for _ in range(20):
        for index, (a, b) in enumerate(pairs):
            t0 = clock()
            for _ in range(10):
                a @ b
            times[index].append((clock() - t0) / 10)
    return [2 * m * k * n / statistics.median(t) / 1e9 for t in times]


def warm_up(data: Path, work: Path, args) -> None:
    """One short IDT run before anything is timed: the first run in a process pays one-time costs (lazy
    imports, oneDNN's kernel generation) that would otherwise count against the one-at-a-time column."""
    import dataclasses

    (config,) = cell_configs("idt", 1, data, work / "warm-up", args)
    train = dataclasses.replace(config.train, steps=2, checkpoint_every=2)
    marlkd.train(dataclasses.replace(config, train=train), progress=False)
    shutil.rmtree(work / "warm-up", ignore_errors=True)


def print_profiles(data: Path, args, clock: Clock, record: dict) -> None:
    from marlkd.optim import resolve_precision

    precisions = args.profile_precision or [args.precision or marlkd.TrainConfig().precision]
    profiles = step_profiles(data, args.profile_members or args.seeds, precisions, args, clock)
    dtypes = [resolve_precision(p, torch.device(args.device)) for p in precisions]
    shape = (64 * 3 * 10, 64, 256)  # (B x 3K tokens) x D @ D x 4D: the MLP's first matmul
    rates = matmul_rates(shape, dtypes, args.device, clock)
    members = args.profile_members or args.seeds
    record["step"] = {"members": members, "matmul_shape": shape}
    for precision, dtype, rate in zip(precisions, dtypes, rates, strict=True):
        profile = profiles[precision]
        gflops = profile["flops"] / 1e9
        one, group = profile["one"], profile["members"]
        name = str(dtype or "fp32").replace("torch.", "")
        print(
            f"\nIDT training step (sweep model, precision={precision}: {name}, one member per agent): "
            f"{gflops:.2f} GFLOP; one run: {one * 1e3:.1f} ms ({gflops / one:.1f} GFLOP/s); "
            f"{members} seeds as members: {group * 1e3:.1f} ms "
            f"({gflops * members / group:.1f} GFLOP/s, {group / one:.2f}x one run's step)"
        )
        print(
            f"matmul {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]} in {name}: {rate:.1f} GFLOP/s; the step "
            f"reaches {100 * gflops / one / rate:.0f} % of it in one run, "
            f"{100 * gflops * members / group / rate:.0f} % as members"
        )
        if "evaluation" in profile:
            steps = args.steps or cell_configs("idt", 1, data, Path("unused"), args)[0].train.steps
            seconds = profile["evaluation"]
            print(
                f"one run's evaluation ({args.eval_episodes} episodes): {seconds:.2f} s, against "
                f"{steps * one:.1f} s for its {steps} updates ({100 * seconds / (steps * one):.1f} %)"
            )
        record["step"][precision] = {
            "evaluation_seconds": profile.get("evaluation"),
            "dtype": name,
            "gflop": gflops,
            "seconds_one": one,
            "seconds_members": group,
            "matmul_gflops": rate,
        }
    if len(precisions) > 1:
        base = profiles[precisions[0]]
        for precision in precisions[1:]:
            other = profiles[precision]
            print(
                f"{precision} against {precisions[0]}: one run's step {base['one'] / other['one']:.2f}x "
                f"as fast, {members} members' {base['members'] / other['members']:.2f}x"
            )


def run_cells(data: Path, work: Path, args, clock: Clock, unit: str, record: dict) -> None:
    """Each cell one run at a time, then as the sweep trains it; rates, ratios and the returns' check."""
    print(
        "| cell | one at a time (s) | as members (s) | runs/hour, one at a time | runs/hour, members "
        "| ratio |"
    )
    print("|---|---|---|---|---|---|")
    totals = {"dt_old": 0.0, "dt_new": 0.0, "all_old": 0.0, "all_new": 0.0}
    returns: dict[str, tuple[list[float], list[float]]] = {}
    for method in args.cells:
        old = new = 0.0
        for repeat in range(args.repeats):  # old, new; new, old; ...: a drift in the load hits both alike
            ways = ["old", "new"] if repeat % 2 == 0 else ["new", "old"]
            for way in ways:
                configs = cell_configs(method, args.seeds, data, work / f"{method}-{way}{repeat}", args)
                if way == "old":
                    seconds, old_returns_now = one_at_a_time(configs, clock)
                    old += seconds / args.repeats
                else:
                    seconds, new_returns_now = as_members(configs, clock)
                    new += seconds / args.repeats
                shutil.rmtree(work / f"{method}-{way}{repeat}", ignore_errors=True)
            if repeat == 0:  # a repeat trains the same seeds again: the first pass's returns
                old_returns, new_returns = old_returns_now, new_returns_now
        returns[method] = (old_returns, new_returns)
        n = args.seeds
        record["cells"][method] = {
            "seconds_one_at_a_time": old,
            "seconds_members": new,
            "runs_per_hour_one_at_a_time": n * 3600 / old,
            "runs_per_hour_members": n * 3600 / new,
            "ratio": old / new,
            "returns_one_at_a_time": old_returns,
            "returns_members": new_returns,
        }
        print(
            f"| {method} | {old:.1f} | {new:.1f} | {n * 3600 / old:.0f} | {n * 3600 / new:.0f} "
            f"| {old / new:.2f}x |"
        )
        totals["all_old"] += old
        totals["all_new"] += new
        if method in MEMBER_METHODS or method == "ours":
            totals["dt_old"] += old
            totals["dt_new"] += new
    runs = args.seeds * len(args.cells)
    print(
        f"\nall cells: {runs * 3600 / totals['all_old']:.0f} runs per {unit}-hour one at a time, "
        f"{runs * 3600 / totals['all_new']:.0f} as members: {totals['all_old'] / totals['all_new']:.2f}x"
    )
    if totals["dt_new"]:
        print(
            f"decision-transformer cells: {totals['dt_old'] / totals['dt_new']:.2f}x more runs "
            f"per {unit}-hour"
        )

    if args.eval_episodes and args.seeds > 1:
        print(
            "\nmean evaluation return per cell, one at a time / as members (95 % interval of the difference):"
        )
        for method, (old_all, new_all) in returns.items():
            old_returns = [r for r in old_all if r == r]  # without failed runs (NaN)
            new_returns = [r for r in new_all if r == r]
            if min(len(old_returns), len(new_returns)) < 2:
                print(f"  {method}: fewer than two finished runs one way")
                continue
            diff, half = difference_interval(old_returns, new_returns)
            verdict = "within" if abs(diff) <= half else "OUTSIDE"
            record["cells"][method].update(difference=diff, interval_half_width=half)
            print(
                f"  {method}: {statistics.mean(old_returns):.3f} / {statistics.mean(new_returns):.3f}, "
                f"difference {diff:+.3f} +- {half:.3f} ({verdict} its interval)"
            )
            print(
                f"    std {statistics.stdev(old_returns):.3f} / {statistics.stdev(new_returns):.3f}; "
                f"per seed, one at a time: {' '.join(f'{r:.3f}' for r in old_returns)}; "
                f"as members: {' '.join(f'{r:.3f}' for r in new_returns)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=0, help="updates per run (0: the sweep's budget)")
    parser.add_argument("--eval-episodes", type=int, default=32, help="evaluation episodes per run")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--episodes", type=int, default=1000, help="episodes of the random-policy dataset")
    parser.add_argument("--data", type=Path, default=None, help="a Grid-World dataset to use instead")
    parser.add_argument(
        "--quality",
        choices=("random", "good", "normal", "poor"),
        default="random",
        help="random: a random-policy dataset in a temporary folder; else one of that tier as the sweep "
        "makes it (--episodes episodes, made under --data-root if missing, its expert too)",
    )
    parser.add_argument("--data-root", type=Path, default=Path("runs/bench/datasets"))
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default=None, help="override the spec's precision"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure each cell this many times both ways, alternating which way goes first (mean time)",
    )
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument(
        "--profile-precision",
        nargs="+",
        choices=("auto", "fp32", "bf16"),
        default=None,
        help="precisions of the step profile, timed interleaved (default: the cells' precision)",
    )
    parser.add_argument(
        "--profile-members", type=int, default=0, help="seeds in the profiled member group (0: --seeds)"
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="only the step profile and the matmul rates, no cells"
    )
    args = parser.parse_args()
    apply_threads(args.threads)
    clock = Clock(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        data = args.data
        if data is None and args.quality == "random":
            from marlkd.data import collect_random_dataset

            data = collect_random_dataset("grid-world", args.episodes, work / "gw.h5", seed=0)
        elif data is None:
            from marlkd.experts import ensure_dataset

            data = ensure_dataset("grid-world", args.quality, args.episodes, args.data_root, progress=False)
            data = Path(data)
        unit = "GPU wall" if args.device == "cuda" else "CPU"
        precision = args.precision or marlkd.TrainConfig().precision
        print(
            f"Grid-World ({Path(data).name}), table1's configs, {args.seeds} seeds, "
            f"{args.steps or 'sweep budget'} updates, "
            f"{args.eval_episodes} eval episodes, threads={args.threads}, device={args.device}, "
            f"precision={precision}; {unit} seconds per cell\n"
        )
        record: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "precision": precision}
        record["cells"] = {}
        if not args.profile_only:
            warm_up(data, work, args)
            run_cells(data, work, args, clock, unit, record)
        print_profiles(data, args, clock, record)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
