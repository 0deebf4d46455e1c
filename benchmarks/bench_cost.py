"""Training cost of ours (teacher + distillation) against IDT and MADT on the same data.

Times ``update`` of each method on one dataset at the default model size (B = 64, K = 20, width 128,
3 layers), interleaving the methods over several rounds so load changes on a shared machine hit all alike,
plus the one-off teacher cache (the frozen teacher's features and logits over the whole dataset).

    python benchmarks/bench_cost.py [--data data/grid-world-good.h5] [--threads 2] [--steps 20] [--rounds 3]

Prints ms per update and the cost ratios against their targets: distillation / IDT (target <= 1.1) and
ours in total / IDT at equal steps (target <= 1.1 x (n+1)/n; the teacher is one more DT).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from marlkd.algos import ALGOS, BuildContext
from marlkd.algos.ours import Ours
from marlkd.algos.teacher import teacher_outputs
from marlkd.config import TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.optim import resolve_precision


def per_update(update, steps: int, start: int = 0) -> float:
    t0 = time.perf_counter()
    for step in range(start, start + steps):
        update(step)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/grid-world-good.h5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="updates timed per method per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.data)
    if not path.exists():
        path = collect_random_dataset("grid-world", 1000, Path("/tmp/marlkd-bench-grid-world.h5"), seed=0)
    dataset = load_dataset(path)
    device = torch.device("cpu")
    train = TrainConfig(steps=10_000, precision=args.precision)
    dtype = resolve_precision(args.precision, device)

    def ctx(method: str, **algo) -> BuildContext:
        return BuildContext(
            dataset=dataset,
            config=ALGOS[method].config_cls(**algo),
            train=train,
            device=device,
            autocast_dtype=dtype,
            run_dir=None,
            seed=0,
        )

    idt, madt = ALGOS["idt"].build(ctx("idt")), ALGOS["madt"].build(ctx("madt"))
    ours: Ours = ALGOS["ours"].build(ctx("ours", teacher_steps=0))
    t0 = time.perf_counter()
    ours.cache = teacher_outputs(ours.teacher, ours.teacher.sampler)
    cache_time = time.perf_counter() - t0
    times: dict[str, list[float]] = {"idt": [], "madt": [], "teacher": [], "distillation": []}
    for r in range(args.rounds):
        offset = r * args.steps + 2  # two warm-up updates first
        for name, update in (
            ("idt", idt.update),
            ("madt", madt.update),
            ("teacher", ours.teacher.update),
            ("distillation", lambda s: ours._student_update(log_step=False)),
        ):
            if r == 0:
                per_update(update, 2)
            times[name].append(per_update(update, args.steps, offset))
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    n = dataset.n_agents
    steps_equal = 2000  # ours at equal steps: S teacher updates + S student updates, against S IDT updates
    ours_total = ms["teacher"] + ms["distillation"] + 1000 * cache_time / steps_equal
    print(
        f"{path.name}: {dataset.n_episodes} episodes, n = {n} agents; threads={args.threads}, precision="
        f"{str(dtype or 'fp32').replace('torch.', '')}; "
        f"median of {args.rounds} rounds x {args.steps} updates\n"
    )
    print("| method | ms / update |")
    print("| --- | ---: |")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} |")
    print(f"| teacher cache (once per dataset) | {1000 * cache_time:.0f} ms in total |")
    print()
    print(f"- distillation / IDT: {ms['distillation'] / ms['idt']:.2f} (target <= 1.1)")
    print(f"- MADT / IDT: {ms['madt'] / ms['idt']:.2f}")
    print(
        f"- ours in total / IDT at {steps_equal} updates each (teacher + cache + students): "
        f"{ours_total / ms['idt']:.2f} (target <= 1.1 x (n+1)/n = {1.1 * (n + 1) / n:.2f})"
    )


if __name__ == "__main__":
    main()
