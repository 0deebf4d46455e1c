"""The factored teacher against the concatenation teacher and IDT, on Equal Space at several team sizes.

For each task (Equal Space with ``n_agents = n`` for each n of ``--agents``, then each SMAX map of
``--smax``) and each seed: a dataset of expert ("good") episodes (made once under ``<out>/datasets``, its
expert trained there first if missing), then IDT, ours with the concatenation teacher (the paper's) and
ours with the factored teacher, all with the sweeps' budget model (K = 10, width 64, 2 layers, MLP head
width 64) and ``--steps`` updates per phase. Reported per task: the teachers' own (centralized) return,
their students' (decentralized) return and IDT's, as the mean ± std over seeds and the interquartile mean
(IQM) with a 95 % bootstrap interval; written to ``<out>/teacher_scaling.md`` and ``.json``. Finished runs
are reused; ``--report-only`` tabulates those finished so far.

Then ``--cross`` (a Grid-World team size, default 2; 0 skips it) trains a factored teacher on Grid-World
with that many agents and evaluates the one checkpoint on ``--cross-eval`` team sizes (Grid-World's
observation does not grow with n), beside uniformly random actions.

    python scripts/teacher_scaling.py --out runs/teacher-scaling --agents 3 6 --seeds 2 --steps 200
    python scripts/teacher_scaling.py --out runs/teacher-scaling --agents 3 6 12 \
        --smax smax-8m-vs-9m smax-3s5z-vs-3s6z --seeds 10 --steps 1000 --workers 8
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

MODEL = {"context": 10, "width": 64, "layers": 2, "head_hidden": 64}  # the sweeps' budget model
VARIANTS = {  # name -> (method, algo fields)
    "idt": ("idt", {}),
    "ours-concat": ("ours", {"teacher": "concat"}),
    "ours-factored": ("ours", {"teacher": "factored"}),
}


def one_run(data: str, out: str, method: str, fields: dict, seed: int, steps: int, episodes: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import marlkd
    from marlkd.algos import ALGOS

    model = {k: v for k, v in MODEL.items() if method != "idt" or k != "head_hidden"}
    cfg = marlkd.RunConfig(
        method=method,
        data=data,
        out=out,
        algo=ALGOS[method].config_cls(**model, **fields),
        train=marlkd.TrainConfig(
            steps=steps, seed=seed, lr=3e-4, warmup_steps=min(100, steps // 5), threads=1
        ),
        eval=marlkd.EvalConfig(episodes=episodes),
    )
    return marlkd.train(cfg, progress=False)


def iqm_interval(values: list[float]) -> tuple[float, float, float]:
    """Interquartile mean of ``values`` and its 95 % percentile-bootstrap interval."""
    from marlkd.experiments.stats import iqm, stratified_bootstrap_ci

    low, high = stratified_bootstrap_ci([np.asarray(values)])
    return float(iqm(np.asarray(values))), low, high


def cell(values: list[float]) -> str:
    mean, std = statistics.mean(values), statistics.pstdev(values)
    iqm, low, high = iqm_interval(values)
    return f"{mean:.2f} ± {std:.2f} (IQM {iqm:.2f} [{low:.2f}, {high:.2f}])"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/teacher-scaling")
    parser.add_argument("--agents", type=int, nargs="*", default=[3, 6], help="Equal Space team sizes")
    parser.add_argument(
        "--smax", nargs="*", default=[], help="SMAX maps (e.g. smax-8m-vs-9m), after Equal Space"
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=500, help="updates per phase (ours: teacher, then students)"
    )
    parser.add_argument("--episodes", type=int, default=200, help="dataset episodes")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--cross", type=int, default=2, help="Grid-World team size to train on (0: skip)")
    parser.add_argument("--cross-eval", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--report-only", action="store_true", help="tabulate the finished runs, train nothing"
    )
    args = parser.parse_args()

    out = Path(args.out)
    lines: list[str] = []
    report: dict = {}
    if args.agents or args.smax:
        lines, report = equal_space(out, args)
    if args.cross and not args.report_only:
        cross_lines, report["grid_world_team_sizes"] = cross_size(out, args)
        lines += ["", *cross_lines]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_scaling.md").write_text(text)
    (out / "teacher_scaling.json").write_text(json.dumps({"args": vars(args), **report}, indent=2))
    print(text)


def tasks(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """Table column -> (environment, constructor arguments): Equal Space at each n, then SMAX maps."""
    columns = {f"equal-space-n{n}": ("equal-space", {"n_agents": n}) for n in args.agents}
    return columns | {env_id: (env_id, {}) for env_id in args.smax}


def equal_space(out: Path, args: argparse.Namespace) -> tuple[list[str], dict]:
    """IDT and ours with each teacher on every task of :func:`tasks` (with ``--report-only``, the table of
    the runs already finished under ``out``)."""
    columns = tasks(args)
    cells = [(task, seed, name) for task in columns for seed in range(args.seeds) for name in VARIANTS]
    run_dirs = {cell: out / cell[0] / cell[2] / f"s{cell[1]}" for cell in cells}
    if not args.report_only:
        from marlkd.experts import ensure_dataset

        datasets = {
            task: ensure_dataset(env_id, "good", args.episodes, out / "datasets", env_kwargs=kwargs or None)
            for task, (env_id, kwargs) in columns.items()
        }
        jobs = [
            (str(datasets[task]), str(run_dirs[task, seed, name]), *VARIANTS[name], seed, args.steps,
             args.eval_episodes)
            for task, seed, name in cells
        ]  # fmt: skip
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(one_run, *zip(*jobs, strict=True)))
    table: dict[tuple[str, str], list[float]] = {}
    for (task, _seed, name), run_dir in run_dirs.items():
        if not (run_dir / "results.json").exists():
            continue
        result = json.loads((run_dir / "results.json").read_text())
        table.setdefault((task, name), []).append(result["return_mean"])
        if "teacher/return_mean" in result:
            table.setdefault((task, name.replace("ours-", "teacher-")), []).append(
                result["teacher/return_mean"]
            )
    rows = ("teacher-concat", "teacher-factored", "ours-concat", "ours-factored", "idt")
    lines = [
        f"Good data ({args.episodes} episodes per task), {args.steps} updates per phase, model {MODEL}, "
        f"{args.eval_episodes} evaluation episodes; per-agent return, mean ± std over seeds "
        "(IQM [95 % bootstrap interval]), seeds in brackets.",
        "",
        "| | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for row in rows:
        values = [table.get((task, row), []) for task in columns]
        lines.append(f"| {row} | " + " | ".join(f"{cell(v)} [{len(v)}]" if v else "—" for v in values) + " |")
    return lines, {"tasks": {f"{row}/{task}": table.get((task, row), []) for row in rows for task in columns}}


class RandomPolicy:
    """Uniformly random available actions: the floor a team-size transfer is measured against."""

    def __init__(self, n_actions: int, seed: int) -> None:
        self.n_actions, self.rng = n_actions, np.random.default_rng(seed)

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        return self.rng.integers(self.n_actions, size=obs.shape[:2])

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        pass


def cross_size(out: Path, args: argparse.Namespace) -> tuple[list[str], dict]:
    """A factored teacher trained on Grid-World with ``args.cross`` agents, evaluated on other team sizes
    (the datasets of the other sizes are not used: their environments and targets are the training one's,
    only ``n_agents`` changes), beside uniformly random actions."""
    import torch

    from marlkd.algos.teacher_models import team_policy
    from marlkd.evaluate import evaluate
    from marlkd.experts import ensure_dataset
    from marlkd.training import load_run

    torch.set_num_threads(1)
    sizes = sorted(set(args.cross_eval) | {args.cross})
    data = ensure_dataset(
        "grid-world", "good", args.episodes, out / "datasets", env_kwargs={"n_agents": args.cross}
    )
    factored: dict[int, list[float]] = {n: [] for n in sizes}
    for seed in range(args.seeds):
        run_dir = out / f"grid-world-n{args.cross}" / "teacher-factored" / f"s{seed}"
        one_run(
            str(data), str(run_dir), "teacher", {"teacher": "factored"}, seed, args.steps, args.eval_episodes
        )
        _, algo, dataset = load_run(run_dir)
        target = float(dataset.episode_returns().max(axis=0).mean())  # per agent, as the run's own evaluation
        for n in sizes:
            result = evaluate(
                team_policy(algo, n, target), "grid-world", {"n_agents": n}, args.eval_episodes, 0
            )
            factored[n].append(result.mean)
    random = [
        evaluate(RandomPolicy(5, 0), "grid-world", {"n_agents": n}, args.eval_episodes, 0).mean for n in sizes
    ]

    def fmt(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}"

    values = {f"factored/n{n}": factored[n] for n in sizes} | {
        f"random/n{n}": r for n, r in zip(sizes, random, strict=True)
    }
    return [
        f"Grid-World: one factored teacher per seed trained on n = {args.cross} (good data, {args.episodes} "
        f"episodes, {args.steps} updates, model {MODEL}), evaluated on each team size; per-agent return over "
        f"{args.eval_episodes} episodes, mean ± std over {args.seeds} seeds.",
        "",
        "| policy | " + " | ".join(f"n = {n}" for n in sizes) + " |",
        "| --- |" + " ---: |" * len(sizes),
        f"| factored teacher (trained on n = {args.cross}) | "
        + " | ".join(fmt(factored[n]) for n in sizes)
        + " |",
        "| uniformly random actions | " + " | ".join(f"{r:.2f}" for r in random) + " |",
    ], values


if __name__ == "__main__":
    main()
