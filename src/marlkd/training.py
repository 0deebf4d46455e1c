"""The one training loop behind every method: build, update, log, checkpoint, resume, evaluate.

A run directory holds ``config.json``, ``metrics.csv`` (tidy: step, wall_time_s, metric, value),
TensorBoard events under ``tb/``, ``checkpoint.pt`` (written atomically) and, once finished,
``results.json``. Giving the same command again resumes a killed run from its last checkpoint, and
returns a finished run's results without redoing it.
"""

from __future__ import annotations

import csv
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import marlkd
from marlkd import atomic
from marlkd.algos import ALGOS, Algorithm, BuildContext
from marlkd.algos.base import ReturnConditioned
from marlkd.config import EvalConfig, to_dict
from marlkd.errors import ConfigError, MarlkdError
from marlkd.evaluate import can_evaluate, evaluate, record_gif
from marlkd.optim import resolve_precision
from marlkd.run_config import RunConfig

CHECKPOINT, RESULTS, CONFIG, METRICS = "checkpoint.pt", "results.json", "config.json", "metrics.csv"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config field train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_dataset(config: RunConfig):
    """The run's dataset, cut to ``train.num_trajectories`` episodes when that is set."""
    from marlkd.data.format import load_dataset

    dataset = load_dataset(config.data)
    n = config.train.num_trajectories
    if n:
        if n > dataset.n_episodes:
            raise ConfigError(
                f"config field train.num_trajectories: {n} exceeds the {dataset.n_episodes} "
                f"episodes of {config.data}"
            )
        dataset = dataset.subset(np.arange(n))
    return dataset


def build_algorithm(config: RunConfig, run_dir: Path, dataset=None) -> tuple[Algorithm, Any, BuildContext]:
    """(algorithm, dataset, context) for a run, with seeds set."""
    dataset = dataset if dataset is not None else load_training_dataset(config)
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    ctx = BuildContext(
        dataset=dataset,
        config=config.algo,
        train=config.train,
        device=device,
        autocast_dtype=resolve_precision(config.train.precision, device),
        run_dir=run_dir,
        seed=config.train.seed,
    )
    return ALGOS[config.method].build(ctx), dataset, ctx


def _check_run_dir(run_dir: Path, config: RunConfig) -> None:
    path = run_dir / CONFIG
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MarlkdError(f"{path}: not valid JSON ({exc}); remove it or use another --out") from exc
    try:  # through the config classes, so fields added since (with their defaults) compare equal
        existing = RunConfig.from_dict(existing).to_dict()
    except MarlkdError:
        pass  # an unreadable old config: compared as it is, and reported below if it differs
    mine = config.to_dict()
    # evaluation settings may change between invocations, and a run directory may be moved; training
    # settings may not change
    free = ("eval", "out")
    if {k: v for k, v in existing.items() if k not in free} != {k: mine[k] for k in mine if k not in free}:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({path}); use another --out or "
            "delete the directory"
        )


class MetricsLog:
    """Appends tidy metric rows to metrics.csv and scalars to TensorBoard."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["step", "wall_time_s", "metric", "value"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except ImportError:  # tensorboard is a dependency; tolerate its absence in stripped installs
            self.tb = None

    def log(self, step: int, wall_time: float, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.writerow([step, f"{wall_time:.3f}", key, f"{value:.6g}"])
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _env_of(dataset) -> tuple[str, dict[str, Any]]:
    return dataset.metadata.env_id, dict(dataset.metadata.env_kwargs)


def run_evaluation(policy, dataset, eval_cfg: EvalConfig) -> dict[str, float]:
    env_id, env_kwargs = _env_of(dataset)
    if isinstance(policy, ReturnConditioned):
        if eval_cfg.target_return is not None:
            policy.target_return[:] = eval_cfg.target_return
        else:
            policy.target_return[:] = dataset.episode_returns().max(axis=0) * eval_cfg.target_scale
    result = evaluate(policy, env_id, env_kwargs, eval_cfg.episodes, eval_cfg.seed)
    return result.summary()


def train(config: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or return the finished results of) one training run. Returns results.json's content."""
    run_dir = Path(config.out)
    results_path = run_dir / RESULTS
    _check_run_dir(run_dir, config)
    if results_path.exists():
        return json.loads(results_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    algo, dataset, ctx = build_algorithm(config, run_dir)
    atomic.write_json(run_dir / CONFIG, config.to_dict())

    start, train_time = 0, 0.0
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=ctx.device, weights_only=False)
        algo.load_state_dict(state["algo"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        start, train_time = int(state["step"]), float(state["train_time_s"])
    total = int(algo.num_updates)  # after loading: it may be restored

    def save(step: int) -> None:
        atomic.torch_save(
            {
                "step": step,
                "algo": algo.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "train_time_s": train_time,
                "method": config.method,
            },
            checkpoint_path,
        )

    # data of an environment marlkd cannot run (imported from elsewhere) trains with evaluation off
    evaluating = config.eval.episodes > 0 and can_evaluate(dataset.metadata.env_id)
    if config.eval.episodes > 0 and not evaluating:
        print(
            f"marlkd: environment {dataset.metadata.env_id!r} of {config.data} is not registered: training "
            "with evaluation off (register the environment or an evaluator to evaluate)",
            file=sys.stderr,
        )
    log = MetricsLog(run_dir)
    bar = None
    if progress and start < total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"{config.method}", unit="upd", dynamic_ncols=True)
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            metrics = algo.update(step)
            train_time += time.perf_counter() - t0
            done = step + 1
            if done % config.train.log_every == 0 or done == total:
                log.log(done, train_time, metrics)
                if bar is not None:
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:3]})
            if config.eval.every and done % config.eval.every == 0 and done < total and evaluating:
                summary = run_evaluation(algo.policy(), dataset, config.eval)
                log.log(
                    done,
                    train_time,
                    {"eval/return_mean": summary["return_mean"], "eval/return_std": summary["return_std"]},
                )
            if done % config.train.checkpoint_every == 0 and done < total:
                save(done)
            if bar is not None:
                bar.update(1)
        save(total)
    finally:
        if bar is not None:
            bar.close()

    results: dict[str, Any] = {
        "method": config.method,
        "env_id": dataset.metadata.env_id,
        "train_steps": total,
        "train_time_s": train_time,
        "seed": config.train.seed,
        "precision": str(ctx.autocast_dtype or "fp32").replace("torch.", ""),
        "dataset_episodes": dataset.n_episodes,
        "env_steps": int(algo.env_steps),
    }
    if algo.return_scale is not None:
        results["return_scale"] = float(algo.return_scale)
    if evaluating:
        t0 = time.perf_counter()
        policy = algo.policy()
        results.update(run_evaluation(policy, dataset, config.eval))
        # diagnostic policies a method carries besides its deployable one (ours: its centralized teacher)
        for name, extra in algo.extra_policies().items():
            summary = run_evaluation(extra, dataset, config.eval)
            results[f"{name}/return_mean"] = summary["return_mean"]
            results[f"{name}/return_std"] = summary["return_std"]
        results["eval_time_s"] = time.perf_counter() - t0
        log.log(
            total,
            train_time,
            {"eval/return_mean": results["return_mean"], "eval/return_std": results["return_std"]},
        )
        if config.eval.gif:
            env_id, env_kwargs = _env_of(dataset)
            record_gif(policy, env_id, env_kwargs, config.eval.seed, run_dir / "episode.gif")
    log.close()
    results.update(
        {
            "marlkd_version": marlkd.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "config": to_dict(config),
        }
    )
    atomic.write_json(results_path, results)
    return results


def load_run(run_dir: str | Path):
    """(config, algorithm with the final checkpoint loaded, dataset) of a trained run directory."""
    run_dir = Path(run_dir)
    for name in (CONFIG, CHECKPOINT):
        if not (run_dir / name).exists():
            raise MarlkdError(f"{run_dir}: no {name}; is this a marlkd run directory?")
    config = RunConfig.load(run_dir / CONFIG)
    algo, dataset, ctx = build_algorithm(config, run_dir)
    state = torch.load(run_dir / CHECKPOINT, map_location=ctx.device, weights_only=False)
    algo.load_state_dict(state["algo"])
    return config, algo, dataset


def load_policy(run_dir: str | Path):
    """The trained policy of a run directory (decentralized for every method but ``teacher``)."""
    return load_run(run_dir)[1].policy()


def evaluate_run(run_dir: str | Path, eval_cfg: EvalConfig | None = None, gif: str | None = None) -> dict:
    """Evaluate a trained run again (e.g. with more episodes or another target return)."""
    config, algo, dataset = load_run(run_dir)
    if not can_evaluate(dataset.metadata.env_id):
        raise MarlkdError(
            f"{run_dir}: environment {dataset.metadata.env_id!r} is not registered and has no evaluator; "
            "register one (marlkd.evaluate.register_evaluator) in a module loaded with --import"
        )
    eval_cfg = eval_cfg or config.eval
    policy = algo.policy()
    summary = run_evaluation(policy, dataset, eval_cfg)
    if gif:
        env_id, env_kwargs = _env_of(dataset)
        record_gif(policy, env_id, env_kwargs, eval_cfg.seed, gif)
    return summary
