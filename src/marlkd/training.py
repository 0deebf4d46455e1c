"""The one training loop behind every method: build, update, log, checkpoint, resume, evaluate.

A run directory holds ``config.json`` (with the dataset's absolute path and checksum), ``metrics.csv``
(tidy: step, wall_time_s, metric, value), TensorBoard events under ``tb/``, ``checkpoint.pt`` (written
atomically, read without running code: :mod:`marlkd.checkpoint`) and, once finished, ``results.json``
(with the target return used and the code revision). Giving the same command again resumes a killed run
from its last checkpoint (metrics logged after that checkpoint are dropped, so no step appears twice),
returns a finished run's results without redoing it, re-evaluates it when only evaluation settings
changed, and extends it when ``train.steps`` grew. A lock (``.lock``) keeps two processes from training
one run directory at once; ``marlkd eval RUN`` writes ``eval.json``.
"""

from __future__ import annotations

import json
import os
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
from marlkd.checkpoint import CheckpointError, clean_stale_temporaries
from marlkd.config import EvalConfig, to_dict
from marlkd.data.format import check_environment
from marlkd.errors import ConfigError, DatasetError, MarlkdError
from marlkd.evaluate import can_evaluate, evaluate, record_gif
from marlkd.metrics_log import MetricsLog
from marlkd.optim import resolve_precision
from marlkd.provenance import provenance
from marlkd.run_config import RunConfig
from marlkd.threads import apply_threads

CHECKPOINT, RESULTS, CONFIG = "checkpoint.pt", "results.json", "config.json"
EVAL = "eval.json"
LOCK_FILE = ".lock"


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
    """The run's dataset (checked against ``config.data_checksum`` when set), cut to
    ``train.num_trajectories`` episodes when that is set."""
    return _cut(_pin(config)[1], config)


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


# Fields that may change between invocations on one run directory: evaluation settings (a change
# re-evaluates), where the run directory and the dataset are (the dataset is recognised by its checksum).
_FREE_FIELDS = ("eval", "out", "data", "data_checksum")


def read_run_config(run_dir: Path) -> RunConfig | None:
    """The config.json of ``run_dir`` (None when there is none); a damaged one is a clear error."""
    path = run_dir / CONFIG
    if not path.exists():
        return None
    return RunConfig.load(path)


def _training_part(config: RunConfig, steps: int | None = None) -> dict[str, Any]:
    mine = config.to_dict()
    if steps is not None:
        mine["train"] = {**mine["train"], "steps": steps}
    return {k: v for k, v in mine.items() if k not in _FREE_FIELDS}


def _check_same_run(run_dir: Path, existing: RunConfig, config: RunConfig, finished: bool) -> str:
    """How ``config`` relates to the run ``existing`` in ``run_dir``: ``same``, ``extend`` (more steps of a
    finished or partial run) or ``eval`` (only evaluation settings differ). Anything else is an error."""
    if _training_part(existing) == _training_part(config):
        return "same" if existing.eval == config.eval else "eval"
    old, new = existing.train.steps, config.train.steps
    if _training_part(existing, steps=new) == _training_part(config) and new > old:
        return "extend"
    if _training_part(existing, steps=new) == _training_part(config) and finished:
        raise ConfigError(
            f"{run_dir} holds a finished run of {old} steps; a run cannot be shortened to {new} "
            "(give a larger --steps to extend it, or use another --out)"
        )
    raise ConfigError(
        f"{run_dir} holds a run with a different config ({run_dir / CONFIG}); use another --out or "
        "delete the directory"
    )


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


def _prepare_run_dir(out: str) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"config field out: {run_dir} is a file, not a run directory; use another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"config field out: cannot create {run_dir} ({exc.strerror or exc})") from exc
    if not os.access(run_dir, os.W_OK):
        raise ConfigError(f"config field out: {run_dir} is not writable")
    return run_dir


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
    run_dir = _prepare_run_dir(config.out)
    with filelock.locked(run_dir / LOCK_FILE, timeout=lock_timeout, what=f"run directory {run_dir}"):
        return _train_locked(config, run_dir, progress, use_wandb)


def _pin(config: RunConfig):
    """(config with the dataset's absolute path and checksum, the full dataset)."""
    from marlkd.data.format import load_dataset

    full = load_dataset(config.data)
    if config.data_checksum is not None and full.metadata.checksum != config.data_checksum:
        raise DatasetError(
            f"{config.data}: not the dataset this run was made with (its checksum is "
            f"{full.metadata.checksum[:16]}..., the run's config.json pins {config.data_checksum[:16]}...); "
            "give the original file, or train a new run"
        )
    pinned = replace(config, data=str(Path(config.data).resolve()), data_checksum=full.metadata.checksum)
    return pinned, full


def _cut(dataset, config: RunConfig):
    n = config.train.num_trajectories
    if not n:
        return dataset
    if n > dataset.n_episodes:
        raise ConfigError(
            f"config field train.num_trajectories: {n} exceeds the {dataset.n_episodes} "
            f"episodes of {config.data}"
        )
    return dataset.subset(np.arange(n))


def _train_locked(
    config: RunConfig, run_dir: Path, progress: bool, use_wandb: bool = False
) -> dict[str, Any]:
    clean_stale_temporaries(run_dir)
    results_path = run_dir / RESULTS
    existing = read_run_config(run_dir)
    finished = results_path.exists()
    relation = "new" if existing is None else _check_same_run(run_dir, existing, config, finished)
    if existing is not None and config.data_checksum is None:
        config = replace(config, data_checksum=existing.data_checksum)
    if finished and relation == "same":
        return json.loads(results_path.read_text())
    config, full = _pin(config)
    dataset = _cut(full, config)
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
    apply_threads(config.train.threads)
    algo, dataset, ctx = build_algorithm(config, run_dir, dataset)
    checkpoint_path = run_dir / CHECKPOINT
    if finished and relation == "eval":
        results = json.loads(results_path.read_text())
        _load_checkpoint(algo, checkpoint_path, ctx.device)
        results = {k: v for k, v in results.items() if k in _TRAINING_RESULTS}
        atomic.write_json(run_dir / CONFIG, config.to_dict())
        results.update(_final_evaluation(algo, dataset, config, run_dir))
        return _write_results(results_path, results, config)
    if finished:  # extending a finished run: it is unfinished again until the new steps are done
        results_path.unlink()
    atomic.write_json(run_dir / CONFIG, config.to_dict())

    start, train_time = 0, 0.0
    if checkpoint_path.exists():
        state = _load_checkpoint(algo, checkpoint_path, ctx.device)
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_rng_state(state["numpy_rng"])
        start, train_time = int(state["step"]), float(state["train_time_s"])
    total = int(algo.num_updates)  # after loading: it may be restored

    def save(step: int) -> None:
        checkpoint.save(
            {
                "step": step,
                "algo": algo.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": _numpy_rng_state(),
                "train_time_s": train_time,
                "method": config.method,
            },
            checkpoint_path,
        )

    tracker = tracking.WandbLogger(run_dir, config.to_dict()) if use_wandb else None
    log = MetricsLog(run_dir, resume_step=start, wandb=tracker)
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
            # a method counted in environment steps (GAIL, AIRL) extends its loop until its budget is spent
            total = int(algo.num_updates)
            if bar is not None and bar.total != total:
                bar.total = total
            if done % config.train.log_every == 0 or done == total:
                log.log(done, train_time, metrics)
                if bar is not None:
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:3]})
            if config.eval.every and done % config.eval.every == 0 and done < total and evaluating:
                summary = run_evaluation(algo.policy(), dataset, config.eval)
                evaluated = {
                    "eval/return_mean": summary["return_mean"],
                    "eval/return_std": summary["return_std"],
                }
                # the diagnostic policies too (ours: the teacher, whose curve shows its training phase)
                for name, extra in algo.extra_policies().items():
                    evaluated[f"{name}/eval/return_mean"] = run_evaluation(extra, dataset, config.eval)[
                        "return_mean"
                    ]
                log.log(done, train_time, evaluated)
            if done % config.train.checkpoint_every == 0 and done < total:
                save(done)
            if bar is not None:
                bar.update(1)
        if start < total or not checkpoint_path.exists():
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
        "dataset_checksum": config.data_checksum,
        "env_steps": int(algo.env_steps),
        **data_metrics(dataset),
    }
    if algo.return_scale is not None:
        results["return_scale"] = float(algo.return_scale)
    results.update(algo.summary())  # a method's own end-of-run summary (ours: its distillation diagnostics)
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


def _load_checkpoint(algo, path: Path, device: torch.device) -> dict[str, Any]:
    state = checkpoint.load(path, map_location=device, what="run checkpoint")
    if not isinstance(state, dict) or not {"algo", "step", "torch_rng", "numpy_rng"} <= set(state):
        raise CheckpointError(f"{path}: not a marlkd run checkpoint")
    try:
        algo.load_state_dict(state["algo"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: does not fit this run's method and model ({first})") from exc
    return state


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state(
        (
            state["name"],
            np.asarray(state["keys"], dtype=np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached"],
        )
    )


def check_memory(config: RunConfig, dataset) -> None:
    """Refuse batch and context sizes whose activations cannot fit in this machine's memory."""
    need = estimate_memory(config, dataset)
    device = resolve_device(config.train.device)
    have = _device_memory(device)
    if have and need > 0.8 * have:
        fields = "train.batch_size" + (" / algo.context" if hasattr(config.algo, "context") else "")
        raise ConfigError(
            f"config field {fields}: batch size {config.train.batch_size}"
            + (f" with context {config.algo.context}" if hasattr(config.algo, "context") else "")
            + f" needs about {_bytes(need)} for one update, more than this machine's {_bytes(have)} of "
            f"{device.type} memory; lower them"
        )


def estimate_memory(config: RunConfig, dataset) -> int:
    """A rough lower bound (bytes) on one update's activations: attention scores and hidden states of
    every layer for sequence models, hidden layers for the others (fp32)."""
    batch, agents = config.train.batch_size, dataset.n_agents
    algo = config.algo
    width = int(getattr(algo, "width", getattr(algo, "hidden", 256)) or 256)
    layers = int(getattr(algo, "layers", 2) or 2)
    context = getattr(algo, "context", None)
    if context is None:  # per-transition MLPs
        return 4 * batch * agents * (dataset.obs_dim + 4 * width * layers)
    heads = int(getattr(algo, "heads", 1) or 1)
    tokens = 3 * int(context)  # return-to-go, observation, action per step
    # per agent sequence (students) or one sequence of all agents (centralized): the larger of the two
    per_sequence = max(agents * tokens * tokens, (agents * tokens) ** 2) * heads + agents * tokens * width * 8
    return 4 * 2 * batch * layers * per_sequence


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


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
    config, full = _pin(config)
    algo, dataset, ctx = build_algorithm(config, run_dir, _cut(full, config))
    _load_checkpoint(algo, run_dir / CHECKPOINT, ctx.device)
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
