"""A run directory's files: ``config.json`` (the run's settings, the dataset pinned by its absolute path and
checksum), ``checkpoint.pt`` (the learner's state, the RNG states, steps done and training time),
``results.json`` once finished, ``eval.json`` from ``marlkd eval``, and the ``.lock`` that keeps two
processes from training one run directory at once; and how a config given again relates to the run there
(:func:`check_same_run`)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlkd import checkpoint
from marlkd.checkpoint import CheckpointError
from marlkd.errors import ConfigError, DatasetError
from marlkd.run_config import RunConfig

CHECKPOINT, RESULTS, CONFIG = "checkpoint.pt", "results.json", "config.json"
EVAL = "eval.json"
LOCK_FILE = ".lock"

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


def check_same_run(run_dir: Path, existing: RunConfig, config: RunConfig, finished: bool) -> str:
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


def prepare_run_dir(out: str) -> Path:
    """The run directory ``out``, created; a clear error when it cannot be written."""
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


def first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself included) that does not exist yet; None if it exists."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_unused_run_dir(run_dir: Path, created: Path) -> None:
    """Remove a run directory that was created, with its parents up to ``created``, for a run that failed
    before it wrote anything (the directory holds at most its lock file): a failed start leaves nothing."""
    try:
        if set(os.listdir(run_dir)) - {LOCK_FILE}:
            return
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        for folder in (run_dir, *run_dir.parents):
            folder.rmdir()
            if folder == created:
                break
    except OSError:  # something else appeared meanwhile, or is not ours to remove: leave it
        return


def pin_dataset(config: RunConfig):
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


def cut_dataset(dataset, config: RunConfig):
    """The dataset's first ``train.num_trajectories`` episodes (all when that is not set)."""
    n = config.train.num_trajectories
    if not n:
        return dataset
    if n > dataset.n_episodes:
        raise ConfigError(
            f"config field train.num_trajectories: {n} exceeds the {dataset.n_episodes} "
            f"episodes of {config.data}"
        )
    return dataset.subset(np.arange(n))


def training_state(step: int, algo_state: dict[str, Any], train_time: float, method: str) -> dict[str, Any]:
    """A run checkpoint's content: the learner's state after ``step`` updates, the RNG states (torch's
    and NumPy's global ones), the training time so far and the method."""
    return {
        "step": step,
        "algo": algo_state,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": numpy_rng_state(),
        "train_time_s": train_time,
        "method": method,
    }


def load_checkpoint(algo, path: Path, device: torch.device) -> dict[str, Any]:
    """Load the run checkpoint at ``path`` into ``algo``; the checkpoint's content."""
    state = checkpoint.load(path, map_location=device, what="run checkpoint")
    if not isinstance(state, dict) or not {"algo", "step", "torch_rng", "numpy_rng"} <= set(state):
        raise CheckpointError(f"{path}: not a marlkd run checkpoint")
    try:
        algo.load_state_dict(state["algo"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: does not fit this run's method and model ({first})") from exc
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set torch's and NumPy's global RNG states to a checkpoint's."""
    torch.set_rng_state(state["torch_rng"])
    set_numpy_rng_state(state["numpy_rng"])


def numpy_rng_state() -> dict[str, Any]:
    """NumPy's global RNG state, as plain values a checkpoint can hold."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    """Set NumPy's global RNG state to one :func:`numpy_rng_state` returned."""
    np.random.set_state(
        (
            state["name"],
            np.asarray(state["keys"], dtype=np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached"],
        )
    )
