"""Pick ours's alpha (relational loss) and beta (KL) by a small sweep on Grid-World.

Every (alpha, beta) pair trains students from the same teacher per seed (``teacher_cache``), so the sweep
costs one teacher per seed plus one student phase per pair and seed. Writes a Markdown table of the mean
and std of the per-agent return over seeds to ``<out>/alpha_beta.md``.

    python scripts/sweep_alpha_beta.py --data runs/experiments/datasets/grid-world-normal.h5 \
        --out runs/alpha-beta --seeds 3 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PAIRS = [(0.0, 1.0), (0.1, 1.0), (1.0, 1.0), (3.0, 1.0), (1.0, 0.1), (1.0, 3.0)]
MODEL = {"context": 10, "width": 64, "layers": 2}  # the sweeps' budget model (docs/experiments.md)


def one_run(data: str, out: str, alpha: float, beta: float, seed: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import marlkd
    from marlkd.algos.ours import Config

    cfg = marlkd.RunConfig(
        method="ours",
        data=data,
        out=f"{out}/a{alpha}-b{beta}/s{seed}",
        algo=Config(**MODEL, alpha=alpha, beta=beta, teacher_cache=f"{out}/teachers"),
        train=marlkd.TrainConfig(steps=steps, seed=seed, lr=3e-4, warmup_steps=100, threads=1),
        eval=marlkd.EvalConfig(episodes=32),
    )
    return marlkd.train(cfg, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="runs/alpha-beta")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # every seed's first pair trains and caches its teacher before that seed's other pairs start
    jobs = [(args.data, args.out, a, b, s, args.steps) for a, b in PAIRS for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_run, *zip(*jobs, strict=True)))
    table = {}
    for (_, _, a, b, _, _), r in zip(jobs, results, strict=True):
        table.setdefault((a, b), []).append(r["return_mean"])
    lines = [
        f"Data: `{args.data}`; {args.seeds} seeds, {args.steps} student updates, model {MODEL}.",
        "",
        "| alpha | beta | per-agent return (mean ± std over seeds) |",
        "| ---: | ---: | --- |",
    ]
    for (a, b), values in table.items():
        lines.append(f"| {a} | {b} | {statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "alpha_beta.md").write_text(text)
    raw = {f"{a},{b}": values for (a, b), values in table.items()}
    (Path(args.out) / "alpha_beta.json").write_text(json.dumps(raw, indent=2))
    print(text)


if __name__ == "__main__":
    main()
