"""The training loop: build the method, update, log, checkpoint, resume, evaluate (:func:`train`), and a
trained run loaded back (:func:`load_run`, :func:`load_policy`, :func:`evaluate_run`)."""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlkd import atomic, checkpoint, filelock, tracking
from marlkd.algos import ALGOS, Algorithm, BuildContext
from marlkd.algos.base import ReturnConditioned
from marlkd.checkpoint import clean_stale_temporaries
from marlkd.config import EvalConfig, to_dict
from marlkd.data.format import check_environment
from marlkd.errors import ConfigError, MarlkdError
from marlkd.evaluate import can_evaluate, evaluate, record_gif
from marlkd.metrics_log import MetricsLog
from marlkd.optim import resolve_precision
from marlkd.provenance import provenance
from marlkd.run_config import RunConfig
from marlkd.threads import apply_threads
from marlkd.training.device import check_memory, resolve_device
from marlkd.training.run_dir import (
    CHECKPOINT,
    CONFIG,
    EVAL,
    LOCK_FILE,
    RESULTS,
    check_same_run,
    cut_dataset,
    first_missing,
    load_checkpoint,
    pin_dataset,
    prepare_run_dir,
    read_run_config,
    remove_unused_run_dir,
    restore_rng,
    training_state,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_dataset(config: RunConfig):
    """The run's dataset (checked against ``config.data_checksum`` when set), cut to
    ``train.num_trajectories`` episodes when that is set."""
    return cut_dataset(pin_dataset(config)[1], config)


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


def _env_of(dataset) -> tuple[str, dict[str, Any]]:
    return dataset.metadata.env_id, dict(dataset.metadata.env_kwargs)


def run_evaluation(policy, dataset, eval_cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate ``policy`` in the dataset's environment; the summary records the target return used."""
    env_id, env_kwargs = _env_of(dataset)
    if isinstance(policy, ReturnConditioned):
        if eval_cfg.target_return is not None:
            policy.target_return[:] = eval_cfg.target_return
        else:
            policy.target_return[:] = dataset.episode_returns().max(axis=0) * eval_cfg.target_scale
    result = evaluate(policy, env_id, env_kwargs, eval_cfg.episodes, eval_cfg.seed)
    summary: dict[str, Any] = dict(result.summary())
    if isinstance(policy, ReturnConditioned):
        summary["target_return"] = [float(v) for v in np.asarray(policy.target_return).reshape(-1)]
    return summary


def data_metrics(dataset: Any) -> dict[str, float]:
    """What the training data scores, for reports to set a method's return against: the mean and best
    per-agent episode return of the episodes trained on (``data/mean_return``, ``data/best_return``) and,
    when the data was made from an expert, the expert's return (``data/expert_return``)."""
    returns = dataset.episode_returns().mean(axis=1)  # (E,): per-agent episode return
    metrics = {"data/mean_return": float(returns.mean()), "data/best_return": float(returns.max())}
    expert = dataset.metadata.behavior_policy.get("expert", {})
    if "expert_return" in expert:
        metrics["data/expert_return"] = float(expert["expert_return"])
    return metrics


def train(
    config: RunConfig, *, progress: bool = True, lock_timeout: float = 0.0, wandb: bool | None = None
) -> dict[str, Any]:
    """Run (or resume, extend, re-evaluate, or return the finished results of) one training run.

    Returns results.json's content. The run directory is locked while this runs: a second process on
    the same directory waits ``lock_timeout`` seconds for it, then fails naming the holder. Everything
    the run needs (dataset, environment, memory) is checked before the first update. ``wandb``: also log
    to Weights & Biases (:mod:`marlkd.tracking`); None: as the environment variable ``MARLKD_WANDB`` says."""
    use_wandb = tracking.wanted(wandb)
    if use_wandb:
        tracking.check_available()  # before anything is written
    created = first_missing(Path(config.out))
    run_dir = prepare_run_dir(config.out)
    try:
        with filelock.locked(run_dir / LOCK_FILE, timeout=lock_timeout, what=f"run directory {run_dir}"):
            return _train_locked(config, run_dir, progress, use_wandb)
    except BaseException:
        if created is not None:  # a new run that failed before writing anything leaves no directory
            remove_unused_run_dir(run_dir, created)
        raise


def _train_locked(
    config: RunConfig, run_dir: Path, progress: bool, use_wandb: bool = False
) -> dict[str, Any]:
    clean_stale_temporaries(run_dir)
    results_path = run_dir / RESULTS
    existing = read_run_config(run_dir)
    finished = results_path.exists()
    relation = "new" if existing is None else check_same_run(run_dir, existing, config, finished)
    if existing is not None and config.data_checksum is None:
        config = replace(config, data_checksum=existing.data_checksum)
    if finished and relation == "same":
        return json.loads(results_path.read_text())
    config, dataset, evaluating = _training_data(config)
    apply_threads(config.train.threads)
    algo, dataset, ctx = build_algorithm(config, run_dir, dataset)
    if finished and relation == "eval":
        return _evaluate_again(algo, dataset, ctx, config, run_dir)
    if finished:  # extending a finished run: it is unfinished again until the new steps are done
        results_path.unlink()
    atomic.write_json(run_dir / CONFIG, config.to_dict())

    start, train_time = _resume(algo, run_dir / CHECKPOINT, ctx.device)
    tracker = tracking.WandbLogger(run_dir, config.to_dict()) if use_wandb else None
    log = MetricsLog(run_dir, resume_step=start, wandb=tracker)
    loop = _Updates(algo, config, dataset, run_dir / CHECKPOINT, log, evaluating)
    total, train_time = loop.run(start, train_time, progress)

    results = _training_results(algo, dataset, ctx, config, total, train_time)
    final = _final_evaluation(algo, dataset, config, run_dir)
    results.update(final)
    if "return_mean" in final:
        log.log(
            total,
            train_time,
            {"eval/return_mean": final["return_mean"], "eval/return_std": final["return_std"]},
        )
    log.close()
    written = _write_results(results_path, results, config)
    if tracker is not None:
        tracker.summary(written)
        tracker.close()
    return written


def _training_data(config: RunConfig):
    """(config with the dataset pinned, the dataset trained on, whether the run evaluates), after every
    check that needs the data (environment, memory)."""
    config, full = pin_dataset(config)
    dataset = cut_dataset(full, config)
    check_environment(dataset.metadata, str(config.data), needed=False)
    evaluating = config.eval.episodes > 0 and can_evaluate(dataset.metadata.env_id)
    if config.eval.episodes > 0 and not evaluating:
        # data of an environment marlkd cannot run (imported from elsewhere) trains with evaluation off
        print(
            f"marlkd: environment {dataset.metadata.env_id!r} of {config.data} is not registered: training "
            "with evaluation off (register the environment or an evaluator to evaluate)",
            file=sys.stderr,
        )
    check_memory(config, dataset)
    return config, dataset, evaluating


def _evaluate_again(algo, dataset, ctx: BuildContext, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """A finished run given other evaluation settings: its training results kept, its evaluation redone."""
    results_path = run_dir / RESULTS
    results = json.loads(results_path.read_text())
    load_checkpoint(algo, run_dir / CHECKPOINT, ctx.device)
    results = {k: v for k, v in results.items() if k in _TRAINING_RESULTS}
    atomic.write_json(run_dir / CONFIG, config.to_dict())
    results.update(_final_evaluation(algo, dataset, config, run_dir))
    return _write_results(results_path, results, config)


def _resume(algo, checkpoint_path: Path, device: torch.device) -> tuple[int, float]:
    """(updates done, training time so far) of the run's last checkpoint, loaded with its RNG states;
    (0, 0.0) when it has none."""
    if not checkpoint_path.exists():
        return 0, 0.0
    state = load_checkpoint(algo, checkpoint_path, device)
    restore_rng(state)
    return int(state["step"]), float(state["train_time_s"])


class _Updates:
    """The update loop of one run: log every ``train.log_every`` updates, evaluate every ``eval.every``,
    checkpoint every ``train.checkpoint_every`` and at the end."""

    def __init__(
        self, algo, config: RunConfig, dataset, checkpoint_path: Path, log: MetricsLog, evaluating: bool
    ):
        self.algo, self.config, self.dataset = algo, config, dataset
        self.checkpoint_path, self.log, self.evaluating = checkpoint_path, log, evaluating

    def run(self, start: int, train_time: float, progress: bool) -> tuple[int, float]:
        """Update from ``start`` to the method's number of updates; (that number, the training time)."""
        algo, config = self.algo, self.config
        total = int(algo.num_updates)  # after loading: it may be restored
        bar = None
        if progress and start < total:
            from marlkd.progress import progress_bar

            bar = progress_bar(total=total, initial=start, desc=config.method, unit="upd", dynamic_ncols=True)
        try:
            step = start
            while step < total:
                t0 = time.perf_counter()
                metrics = algo.update(step)
                train_time += time.perf_counter() - t0
                done = step = step + 1
                # a method counted in environment steps (GAIL, AIRL) extends its loop until its budget is
                # spent
                total = int(algo.num_updates)
                if bar is not None and bar.total != total:
                    bar.total = total
                if done % config.train.log_every == 0 or done == total:
                    self.log.log(done, train_time, metrics)
                    if bar is not None:
                        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:3]})
                if config.eval.every and done % config.eval.every == 0 and done < total and self.evaluating:
                    self.log.log(done, train_time, self._evaluation())
                if done % config.train.checkpoint_every == 0 and done < total:
                    self._save(done, train_time)
                if bar is not None:
                    bar.update(1)
            if start < total or not self.checkpoint_path.exists():
                self._save(total, train_time)
        finally:
            if bar is not None:
                bar.close()
        return total, train_time

    def _evaluation(self) -> dict[str, float]:
        """The metrics of an evaluation during training."""
        summary = run_evaluation(self.algo.policy(), self.dataset, self.config.eval)
        evaluated = {"eval/return_mean": summary["return_mean"], "eval/return_std": summary["return_std"]}
        # the diagnostic policies too (ours: the teacher, whose curve shows its training phase)
        for name, extra in self.algo.extra_policies().items():
            evaluated[f"{name}/eval/return_mean"] = run_evaluation(extra, self.dataset, self.config.eval)[
                "return_mean"
            ]
        return evaluated

    def _save(self, step: int, train_time: float) -> None:
        state = training_state(step, self.algo.state_dict(), train_time, self.config.method)
        checkpoint.save(state, self.checkpoint_path)


def _training_results(algo, dataset, ctx: BuildContext, config: RunConfig, total: int, train_time: float):
    """results.json's entries that training made, and the method's own end-of-run summary."""
    results: dict[str, Any] = {
        "method": config.method,
        "env_id": dataset.metadata.env_id,
        "train_steps": total,
        "train_time_s": train_time,
        "seed": config.train.seed,
        "precision": str(ctx.autocast_dtype or "fp32").replace("torch.", ""),
        "dataset_episodes": dataset.n_episodes,
        "dataset_checksum": config.data_checksum,
        "env_steps": int(algo.env_steps),
        **data_metrics(dataset),
    }
    if algo.return_scale is not None:
        results["return_scale"] = float(algo.return_scale)
    results.update(algo.summary())  # a method's own end-of-run summary (ours: its distillation diagnostics)
    return results


# The entries of results.json that training made (kept when only the evaluation is redone).
_TRAINING_RESULTS = frozenset(
    {
        "method",
        "env_id",
        "train_steps",
        "train_time_s",
        "seed",
        "precision",
        "dataset_episodes",
        "dataset_checksum",
        "env_steps",
        "return_scale",
    }
)


def _final_evaluation(algo, dataset, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The final evaluation's entries of results.json (none when ``eval.episodes`` is 0)."""
    if config.eval.episodes <= 0 or not can_evaluate(dataset.metadata.env_id):
        return {}
    t0 = time.perf_counter()
    policy = algo.policy()
    results = run_evaluation(policy, dataset, config.eval)
    # diagnostic policies a method carries besides its deployable one (ours: its centralized teacher)
    for name, extra in algo.extra_policies().items():
        summary = run_evaluation(extra, dataset, config.eval)
        results[f"{name}/return_mean"] = summary["return_mean"]
        results[f"{name}/return_std"] = summary["return_std"]
    results["eval_time_s"] = time.perf_counter() - t0
    if config.eval.gif:
        env_id, env_kwargs = _env_of(dataset)
        record_gif(policy, env_id, env_kwargs, config.eval.seed, run_dir / "episode.gif")
    return results


def _write_results(path: Path, results: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    results = {
        **results,
        **provenance(),
        "python": platform.python_version(),
        "config": to_dict(config),
    }
    atomic.write_json(path, results)
    return results


def load_run(run_dir: str | Path):
    """(config, algorithm with the final checkpoint loaded, dataset) of a trained run directory.

    The dataset is the one config.json names (an absolute path, so this works from any directory),
    checked against the checksum config.json pins."""
    apply_threads()
    run_dir = Path(run_dir)
    for name in (CONFIG, CHECKPOINT):
        if not (run_dir / name).exists():
            raise MarlkdError(f"{run_dir}: no {name}; is this a marlkd run directory?")
    config = RunConfig.load(run_dir / CONFIG)
    config, full = pin_dataset(config)
    algo, dataset, ctx = build_algorithm(config, run_dir, cut_dataset(full, config))
    load_checkpoint(algo, run_dir / CHECKPOINT, ctx.device)
    return config, algo, dataset


def load_policy(run_dir: str | Path):
    """The trained policy of a run directory (decentralized for every method but ``teacher``)."""
    return load_run(run_dir)[1].policy()


def evaluate_run(
    run_dir: str | Path, eval_cfg: EvalConfig | None = None, gif: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate a trained run again (e.g. with more episodes or another target return); the summary (with
    the target return used and the evaluation settings) is also written to ``<run_dir>/eval.json``."""
    run_dir = Path(run_dir)
    config, algo, dataset = load_run(run_dir)
    if not can_evaluate(dataset.metadata.env_id):
        raise MarlkdError(
            f"{run_dir}: environment {dataset.metadata.env_id!r} is not registered and has no evaluator; "
            "register one (marlkd.evaluate.register_evaluator) in a module loaded with --import"
        )
    eval_cfg = eval_cfg or config.eval
    if eval_cfg.episodes < 1:
        raise ConfigError(f"config field eval.episodes: must be >= 1 to evaluate, got {eval_cfg.episodes}")
    check_environment(dataset.metadata, config.data, needed=False)
    policy = algo.policy()
    summary = run_evaluation(policy, dataset, eval_cfg)
    if gif:
        env_id, env_kwargs = _env_of(dataset)
        record_gif(policy, env_id, env_kwargs, eval_cfg.seed, gif)
    atomic.write_json(run_dir / EVAL, {**summary, "eval": to_dict(eval_cfg), **provenance()})
    return summary
