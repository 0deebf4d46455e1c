"""The main job, end to end on an embedded default: dataset, teacher, students, baselines, a results table.

``marlkd demo`` (``make demo``) makes a Grid-World expert and its good-quality dataset, trains IDT, MADT,
ours (the centralized teacher, then the distilled students) and BC on it, evaluates each decentralized, and
writes ``results.md`` (a Markdown table of per-agent return) and ``curves.png`` (training curves). Every
step is resumable: giving the command again reuses what is finished.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlkd import atomic
from marlkd.algos import ALGOS
from marlkd.config import EvalConfig, Precision, TrainConfig, check
from marlkd.names import Quality
from marlkd.run_config import RunConfig


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        out: output directory (data, runs, results.md, curves.png).
        env: environment id.
        quality: dataset quality tier.
        episodes: dataset episodes.
        expert_steps: environment steps of the expert's PPO training (a shorter budget than the full
            recipe's, enough for a good Grid-World expert).
        steps: updates per method (ours: this many teacher updates, then as many student updates).
        methods: methods to train, in table order.
        seed: training seed.
        eval_episodes: evaluation episodes per method.
        precision: training precision (auto: bf16 where the CPU supports it).
    """

    out: str = "demo_out"
    env: str = "grid-world"
    quality: Quality = "good"
    episodes: int = 1000
    expert_steps: int = 100_000
    steps: int = 600
    methods: tuple[str, ...] = ("bc", "idt", "madt", "ours")
    seed: int = 0
    eval_episodes: int = 32
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        check(self.episodes >= 1, "demo.episodes", "must be >= 1")
        check(self.steps >= 1, "demo.steps", "must be >= 1")
        check(self.expert_steps >= 1, "demo.expert_steps", "must be >= 1")
        unknown = [m for m in self.methods if m not in ALGOS]
        check(not unknown, "demo.methods", f"unknown method(s) {unknown}; known: {sorted(ALGOS)}")


def _read_curve(run_dir: Path, metric: str) -> tuple[list[float], list[float], list[float]]:
    steps, times, values = [], [], []
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["metric"] == metric:
                steps.append(float(row["step"]))
                times.append(float(row["wall_time_s"]))
                values.append(float(row["value"]))
    return steps, times, values


def plot_curves(runs: dict[str, Path], path: Path) -> Path:
    """Action loss against updates for each method (ours: teacher and students) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, run_dir in runs.items():
        for metric, label in (("loss/action", method), ("teacher/loss/action", f"{method} (teacher)")):
            steps, _, values = _read_curve(run_dir, metric)
            if steps:
                ax.plot(steps, values, label=label, marker="." if len(steps) < 20 else None)
    ax.set_xlabel("update")
    ax.set_ylabel("action loss (cross-entropy)")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def results_table(rows: list[dict[str, Any]], dataset_info: dict[str, Any]) -> str:
    lines = [
        f"Environment `{dataset_info['env']}`, {dataset_info['quality']} data "
        f"({dataset_info['episodes']} episodes, mean per-agent return {dataset_info['mean_return']:.3f}).",
        "",
        "| method | per-agent return (mean ± std over episodes) | updates | train time (s) |",
        "| --- | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['return_mean']:.3f} ± {r['return_std']:.3f} | {r['train_steps']} | "
            f"{r['train_time_s']:.0f} |"
        )
        if "teacher/return_mean" in r:
            lines.append(
                f"| {r['method']}: its centralized teacher | {r['teacher/return_mean']:.3f} ± "
                f"{r['teacher/return_std']:.3f} | | |"
            )
    return "\n".join(lines) + "\n"


def run_demo(config: DemoConfig, progress: bool = True) -> str:
    """Run the demo; returns the Markdown results table (also written to ``out/results.md``)."""
    from marlkd.data.format import load_dataset
    from marlkd.experts import ensure_dataset, ensure_expert
    from marlkd.training import train

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"[demo] dataset: {config.env}, {config.quality}, {config.episodes} episodes "
        "(its expert is trained first if missing)"
    )
    ensure_expert(config.env, out / "data", steps=config.expert_steps, seed=config.seed, progress=progress)
    data = ensure_dataset(
        config.env,
        config.quality,
        config.episodes,
        out / "data",
        seed=config.seed,
        progress=progress,
        steps=config.expert_steps,  # the expert just made (its budget names its directory)
    )
    meta = load_dataset(data).metadata
    print(
        f"[demo] dataset ready in {time.perf_counter() - t0:.0f} s: {data} "
        f"(mean per-agent return {meta.mean_return:.3f})"
    )
    rows, runs = [], {}
    for method in config.methods:
        run_dir = out / "runs" / method
        run = RunConfig(
            method=method,
            data=str(data),
            out=str(run_dir),
            train=TrainConfig(
                steps=config.steps,
                seed=config.seed,
                precision=config.precision,
                log_every=max(1, config.steps // 60),
            ),
            eval=EvalConfig(episodes=config.eval_episodes),
        )
        print(f"[demo] training {method}")
        rows.append(train(run, progress=progress))
        runs[method] = run_dir
    table = results_table(
        rows,
        {
            "env": config.env,
            "quality": config.quality,
            "episodes": meta.n_episodes,
            "mean_return": meta.mean_return,
        },
    )
    atomic.write_text(out / "results.md", table)
    plot_curves(runs, out / "curves.png")
    print()
    print(table)
    print(
        f"[demo] done in {time.perf_counter() - t0:.0f} s; table: {out / 'results.md'}, curves: "
        f"{out / 'curves.png'}"
    )
    return table
