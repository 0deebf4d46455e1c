"""Experts and datasets kept under a data root, made when missing and reused when there:
:func:`ensure_expert` (``<root>/experts/<env>...``) and :func:`ensure_dataset`
(``<root>/<env>-<quality>...h5``).
A file lock per target keeps concurrent processes from training or writing the same thing twice; a
smaller budget than the default gets its own directory or file (:func:`default_expert_dir`,
:func:`dataset_path`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marlkd import filelock
from marlkd.data.format import load_dataset
from marlkd.errors import DatasetError
from marlkd.experts import datasets, training
from marlkd.experts.datasets import CALIBRATION_EPISODES, calibrated
from marlkd.experts.training import EXPERT_INFO_FILE, REFERENCE_EPISODES, expert_config, full_kwargs
from marlkd.threads import apply_threads

DEFAULT_EPISODES = {"highway": 500, "highway-slow": 500}  # every other environment: 1,000


def default_episodes(env_id: str) -> int:
    """The default dataset size of ``env_id`` (1,000 episodes; 500 for the slow Highway simulation)."""
    return DEFAULT_EPISODES.get(env_id, 1000)


@contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock tied to ``target`` (a ``.lock`` file beside it) for the ``with`` block."""
    with filelock.locked(target.with_name(target.name + ".lock"), what=str(target)):
        yield


def _kwargs_tag(env_id: str, env_kwargs: Mapping[str, Any] | None) -> str:
    """'' for the default constructor arguments, else ``-`` and 8 hex digits of their hash."""
    if not env_kwargs or full_kwargs(env_id, env_kwargs) == full_kwargs(env_id, None):
        return ""
    text = json.dumps(full_kwargs(env_id, env_kwargs), sort_keys=True)
    return "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _expert_tag(env_id: str, steps: int | None, reference_episodes: int | None) -> str:
    """'' for the recipe's budget (its PPO steps, :data:`REFERENCE_EPISODES`), else
    ``-s<steps>-r<reference episodes>``."""
    recipe_steps = expert_config(env_id).total_steps
    steps = recipe_steps if steps is None else steps
    episodes = REFERENCE_EPISODES if reference_episodes is None else reference_episodes
    if steps == recipe_steps and episodes == REFERENCE_EPISODES:
        return ""
    return f"-s{steps}-r{episodes}"


def default_expert_dir(
    env_id: str,
    root: str | Path,
    env_kwargs: Mapping[str, Any] | None = None,
    steps: int | None = None,
    reference_episodes: int | None = None,
) -> Path:
    """Where :func:`ensure_expert` keeps ``env_id``'s expert: ``<root>/experts/<env>[-<kwargs hash>]``,
    with ``-s<steps>-r<reference episodes>`` appended for a budget other than the recipe's (``steps``
    other than its ``total_steps``, or ``reference_episodes`` other than :data:`REFERENCE_EPISODES`;
    None: the default)."""
    tag = _kwargs_tag(env_id, env_kwargs) + _expert_tag(env_id, steps, reference_episodes)
    return Path(root) / "experts" / f"{env_id}{tag}"


def ensure_expert(
    env_id: str,
    root: str | Path,
    steps: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    mode: str | None = None,
    progress: bool = True,
    reference_episodes: int | None = None,
) -> Path:
    """``env_id``'s expert directory (:func:`default_expert_dir`), trained first if it is missing.

    ``steps`` and ``reference_episodes`` (None: the recipe's and :data:`REFERENCE_EPISODES`) pick the
    directory: a smaller budget gets its own. An existing expert is reused whatever ``seed``/``mode`` it was
    trained with. Concurrent callers wait for one another; an interrupted training (no ``expert.json``) is
    redone.
    """
    apply_threads()
    directory = default_expert_dir(env_id, root, env_kwargs, steps, reference_episodes)
    with _file_lock(directory):
        if not (directory / EXPERT_INFO_FILE).is_file():
            training.train_expert(
                env_id,
                directory,
                steps=steps,
                seed=seed,
                env_kwargs=env_kwargs,
                mode=mode,
                progress=progress,
                reference_episodes=reference_episodes,
            )
    return directory


def _budget_tag(
    env_id: str,
    quality: str,
    steps: int | None,
    reference_episodes: int | None,
    calibration_episodes: int | None,
) -> str:
    """What of a non-default expert budget a dataset of ``quality`` depends on: the expert's
    (:func:`default_expert_dir`'s tag) for good, normal and poor; ``-c<episodes>`` for the epsilon search of
    normal and poor when not :data:`CALIBRATION_EPISODES`; nothing for random (made without an expert)."""
    if quality == "random":
        return ""
    tag = _expert_tag(env_id, steps, reference_episodes)
    if calibrated(quality) and calibration_episodes not in (None, CALIBRATION_EPISODES):
        tag += f"-c{calibration_episodes}"
    return tag


def dataset_path(
    root: str | Path,
    env_id: str,
    quality: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    steps: int | None = None,
    reference_episodes: int | None = None,
    calibration_episodes: int | None = None,
) -> Path:
    """Where :func:`ensure_dataset` keeps a dataset: ``<root>/<env>-<quality>.h5`` for the default size,
    seed 0, default environment arguments and the default expert budget, else with
    ``-<episodes>ep-seed<seed>[-<kwargs hash>]`` and, for a smaller expert budget (``steps``,
    ``reference_episodes``, ``calibration_episodes``; None: the defaults), what of it the tier depends on
    (``-s<steps>-r<reference episodes>`` for the expert, ``-c<calibration episodes>`` for normal and poor)."""
    suffix = "" if episodes == default_episodes(env_id) and seed == 0 else f"-{episodes}ep-seed{seed}"
    budget = _budget_tag(env_id, quality, steps, reference_episodes, calibration_episodes)
    return Path(root) / f"{env_id}-{quality}{suffix}{_kwargs_tag(env_id, env_kwargs)}{budget}.h5"


def ensure_dataset(
    env_id: str,
    quality: str,
    episodes: int,
    root: str | Path,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    steps: int | None = None,
    reference_episodes: int | None = None,
    calibration_episodes: int | None = None,
) -> Path:
    """The dataset of ``quality`` under ``root`` (:func:`dataset_path`), made first if it is missing.

    The expert (:func:`ensure_expert`, under ``root/experts``, with ``steps`` and ``reference_episodes``) is
    trained if needed, except for the random tier, which is made without one (its normalized score is then
    NaN). ``calibration_episodes`` goes to :func:`make_dataset`. None: the defaults (the recipe's steps,
    :data:`REFERENCE_EPISODES`, :data:`CALIBRATION_EPISODES`). An existing file is checked against the
    request and reused; concurrent callers wait for one another.
    """
    apply_threads()
    path = dataset_path(
        root, env_id, quality, episodes, seed, env_kwargs, steps, reference_episodes, calibration_episodes
    )
    with _file_lock(path):
        if path.exists():
            _check_existing(
                path, env_id, quality, episodes, seed, env_kwargs, reference_episodes, calibration_episodes
            )
            return path
        experts = (
            None
            if quality == "random"
            else ensure_expert(
                env_id,
                root,
                steps=steps,
                env_kwargs=env_kwargs,
                progress=progress,
                reference_episodes=reference_episodes,
            )
        )
        datasets.make_dataset(
            env_id,
            quality,
            episodes,
            path,
            expert_dir=experts,
            seed=seed,
            env_kwargs=env_kwargs,
            progress=progress,
            calibration_episodes=calibration_episodes,
        )
    return path


def _check_existing(
    path: Path,
    env_id: str,
    quality: str,
    episodes: int,
    seed: int,
    env_kwargs: Mapping[str, Any] | None,
    reference_episodes: int | None,
    calibration_episodes: int | None,
) -> None:
    """Refuse a dataset file at ``path`` made by another request than this one."""
    metadata = load_dataset(path).metadata
    expected: dict[str, Any] = {
        "env_id": env_id,
        "quality": quality,
        "n_episodes": episodes,
        "seed": seed,
        "env_kwargs": full_kwargs(env_id, env_kwargs),
    }
    found = {key: getattr(metadata, key) for key in expected}
    # How the expert was measured and epsilon searched (files from before these were recorded
    # lack the first: not checked then).
    recorded = dict(metadata.behavior_policy)
    if quality != "random" and "reference_episodes" in recorded.get("expert", {}):
        found["reference_episodes"] = recorded["expert"]["reference_episodes"]
        expected["reference_episodes"] = (
            REFERENCE_EPISODES if reference_episodes is None else reference_episodes
        )
    if calibrated(quality) and "calibration" in recorded:
        found["calibration_episodes"] = recorded["calibration"]["episodes"]
        expected["calibration_episodes"] = (
            CALIBRATION_EPISODES if calibration_episodes is None else calibration_episodes
        )
    if found != expected:
        raise DatasetError(f"{path}: holds {found}, expected {expected}; move it away to remake it")
