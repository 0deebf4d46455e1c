"""Shared test setup: one thread for torch, fixed seeds, a JAX compilation cache of the session's own, and
small datasets made in milliseconds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from marlkd.data.format import write_dataset

torch.set_num_threads(1)

# SMAX's JAX compilations go to a cache of this test session's own (shared by the workers the tests spawn),
# not to the user's ~/.cache/marlkd/jax.
os.environ.setdefault("MARLKD_JAX_CACHE", tempfile.mkdtemp(prefix="marlkd-jax-cache-"))


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_dataset_arrays() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A valid dataset in memory: 6 episodes of lengths 1..6 (T = 6), N = 2 agents, O = 3, A = 4, S = 5.

    Returns ``(arrays, metadata)`` as :func:`marlkd.data.write_dataset` takes them, with ``state`` and
    ``avail_actions``; a fresh copy on every use, so a test may modify it.
    """
    rng = np.random.default_rng(0)
    episodes, steps, agents, obs_dim, n_actions, state_dim = 6, 6, 2, 3, 4, 5
    lengths = np.arange(1, episodes + 1)
    mask = np.arange(steps)[None, :] < lengths[:, None]  # (E, T)
    agent_mask = mask[:, :, None]  # (E, T, 1)
    avail = rng.random((episodes, steps, agents, n_actions)) < 0.6
    avail[..., 0] = True  # action 0 (no-op) always available
    actions = np.where(avail, rng.random(avail.shape), -1.0).argmax(axis=-1)  # a random available action
    last = mask & ~np.roll(mask, -1, axis=1)
    last[:, -1] = mask[:, -1]  # (E, T): the final valid step
    arrays = {
        "obs": rng.normal(size=(episodes, steps, agents, obs_dim)).astype(np.float32) * agent_mask[..., None],
        "actions": (actions * agent_mask).astype(np.int64),
        "rewards": rng.normal(size=(episodes, steps, agents)).astype(np.float32) * agent_mask,
        "mask": mask,
        "terminals": np.repeat((last & (lengths[:, None] < steps))[:, :, None], agents, axis=2),
        "truncations": np.repeat((last & (lengths[:, None] == steps))[:, :, None], agents, axis=2),
        "state": rng.normal(size=(episodes, steps, state_dim)).astype(np.float32) * mask[..., None],
        "avail_actions": avail & agent_mask[..., None],
    }
    metadata = {
        "env_id": "test-tiny",
        "env_kwargs": {"size": 3},
        "n_actions": n_actions,
        "behavior_policy": {"name": "synthetic", "function": "tests/conftest.py::tiny_dataset_arrays"},
        "quality": "random",
        "seed": 0,
    }
    return arrays, metadata


@pytest.fixture
def tiny_dataset(tmp_path: Path, tiny_dataset_arrays: tuple[dict[str, np.ndarray], dict[str, Any]]) -> Path:
    """Path of a small valid dataset file (the arrays of ``tiny_dataset_arrays``) under ``tmp_path``."""
    arrays, metadata = tiny_dataset_arrays
    return write_dataset(tmp_path / "tiny.h5", arrays, metadata)
