"""Flat step streams (episodes one after another, as OG-MARL Vaults and D4RL files store them) <-> padded
episodes (marlkd's layout), and the importer for flat D4RL-style HDF5 files.

A flat stream holds ``L_total`` steps; an episode ends with a step at which every agent is terminal or
truncated. Steps after the last such step (a recording stopped mid-episode) form a last episode of their
own, so that nothing is dropped and the conversion back gives the same stream.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.errors import DatasetError

# marlkd field -> the key a D4RL-style file uses for it (``infos/...`` are paths inside the file).
D4RL_KEYS: dict[str, str] = {
    "obs": "observations",
    "actions": "actions",
    "rewards": "rewards",
    "terminals": "terminals",
    "truncations": "timeouts",
    "state": "infos/state",
    "avail_actions": "infos/action_mask",
}
_D4RL_OPTIONAL = ("state", "avail_actions")


def episode_bounds(done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` (int64, one per episode) of the episodes in a flat stream.

    Args:
        done: ``(L_total,)`` bool: the step ends its episode (all agents terminal or truncated).
    """
    ends = np.flatnonzero(done) + 1  # one past each episode's last step
    if ends.size == 0 or ends[-1] != done.shape[0]:
        ends = np.append(ends, done.shape[0])  # a trailing episode without an end flag
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return starts, (ends - starts).astype(np.int64)


def pad_episodes(
    flat: Mapping[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray, horizon: int | None = None
) -> dict[str, np.ndarray]:
    """Cut each ``(L_total, ...)`` array into episodes padded with zeros to ``(E, T, ...)``; adds ``mask``.

    ``T`` is ``horizon``, at least the longest episode's length (default: that length).
    """
    n_episodes, horizon = int(lengths.size), max(int(lengths.max()), horizon or 0)
    episode = np.repeat(np.arange(n_episodes), lengths)  # (L_total,) episode of each step
    position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)  # step within its episode
    padded: dict[str, np.ndarray] = {}
    for name, array in flat.items():
        out = np.zeros((n_episodes, horizon, *array.shape[1:]), dtype=array.dtype)
        out[episode, position] = array
        padded[name] = out
    mask = np.zeros((n_episodes, horizon), dtype=bool)
    mask[episode, position] = True
    padded["mask"] = mask
    return padded


def flatten_episodes(arrays: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The reverse of :func:`pad_episodes`: the valid steps of ``(E, T, ...)`` arrays, episode by episode."""
    return {name: array[mask] for name, array in arrays.items() if name != "mask"}


def all_done(terminals: np.ndarray, truncations: np.ndarray) -> np.ndarray:
    """``(L,)``: every agent is terminal or truncated at the step (the flags are ``(L, N)``)."""
    return (terminals | truncations).all(axis=1)


def check_split(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Check that the episodes of ``arrays`` (marlkd layout) can be found again in a flat stream: every
    episode but the last ends with all agents terminal or truncated, and no episode has such a step
    before its end. Raises :class:`DatasetError` naming the episode otherwise."""
    mask = arrays["mask"]
    done = (arrays["terminals"] | arrays["truncations"]).all(axis=2) & mask  # (E, T)
    lengths = mask.sum(axis=1)
    last = done[np.arange(mask.shape[0]), lengths - 1]
    early = done.sum(axis=1) - last  # all-done steps before the episode's last step
    if early.any():
        e = int(np.argmax(early > 0))
        t = int(np.argmax(done[e]))
        raise DatasetError(
            f"{where}: fields 'terminals'/'truncations': episode {e} has every agent done at step {t}, "
            f"before its end (step {int(lengths[e]) - 1}); a flat stream would split it there"
        )
    if not last[:-1].all():
        e = int(np.argmin(last[:-1]))
        raise DatasetError(
            f"{where}: fields 'terminals'/'truncations': episode {e} ends without every agent terminal or "
            "truncated; a flat stream would merge it with the next episode"
        )


def _as_flags(array: np.ndarray, field: str, where: str) -> np.ndarray:
    """0/1 (or bool) values as bool; anything else is an error naming the field."""
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
        raise DatasetError(f"{where}: field {field!r}: flags must be 0 or 1 (or bool), got {array.dtype}")
    return array != 0


def _as_actions(array: np.ndarray, field: str, where: str) -> np.ndarray:
    """Discrete actions as int64; float arrays must hold whole numbers (continuous actions are refused)."""
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    raise DatasetError(
        f"{where}: field {field!r}: continuous actions (dtype {array.dtype}) are not supported; marlkd's "
        "methods need discrete actions (whole numbers)"
    )


def streams_to_arrays(
    flat: Mapping[str, np.ndarray], where: str, *, n_actions: int | None = None, horizon: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Convert flat per-step arrays to marlkd's padded arrays and ``n_actions``.

    Args:
        flat: ``obs (L, N, ...)``, ``actions (L, N)``, ``rewards (L, N)``, ``terminals (L, N)``,
            ``truncations (L, N)``, optional ``state (L, ...)`` and ``avail_actions (L, N, A)``, any
            numeric dtypes. Observations and states with more axes are flattened per agent / per step.
        where: names the source in errors.
        n_actions: A when there is no ``avail_actions`` (default: the largest action + 1).
        horizon: pad episodes to this many steps when the longest is shorter.
    """
    arrays: dict[str, np.ndarray] = {}
    obs = np.asarray(flat["obs"])
    if obs.ndim < 3:
        raise DatasetError(f"{where}: field 'obs': shape {obs.shape}, expected (steps, agents, ...)")
    steps, agents = obs.shape[:2]
    arrays["obs"] = obs.reshape(steps, agents, -1)
    expected = {"actions": 2, "rewards": 2, "terminals": 2, "truncations": 2, "avail_actions": 3}
    for name, ndim in expected.items():
        if name not in flat:
            continue
        array = np.asarray(flat[name])
        if array.ndim != ndim or array.shape[:2] != (steps, agents):
            axes = "(steps, agents)" if ndim == 2 else "(steps, agents, actions)"
            raise DatasetError(
                f"{where}: field {name!r}: shape {array.shape} does not fit {axes} = ({steps}, {agents}, ...)"
            )
        arrays[name] = array
    arrays["actions"] = _as_actions(arrays["actions"], "actions", where)
    for name in ("terminals", "truncations", "avail_actions"):
        if name in arrays:
            arrays[name] = _as_flags(arrays[name], name, where)
    if "state" in flat:
        state = np.asarray(flat["state"])
        if state.ndim < 1 or state.shape[0] != steps:
            raise DatasetError(f"{where}: field 'state': shape {state.shape}, expected ({steps}, ...)")
        arrays["state"] = state.reshape(steps, -1)
    if "avail_actions" in arrays:
        n_actions = arrays["avail_actions"].shape[2]
    elif n_actions is None:
        n_actions = int(arrays["actions"].max()) + 1 if arrays["actions"].size else 1
    if steps == 0:
        raise DatasetError(f"{where}: no steps to import")
    starts, lengths = episode_bounds(all_done(arrays["terminals"], arrays["truncations"]))
    return pad_episodes(arrays, starts, lengths, horizon), int(n_actions)


def _broadcast_agents(array: np.ndarray, agents: int) -> np.ndarray:
    """A per-step ``(L,)`` array (a team reward or flag) repeated for each agent: ``(L, N)``."""
    return np.repeat(array[:, None], agents, axis=1) if array.ndim == 1 else array


def import_d4rl(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    keys: Mapping[str, str] | None = None,
    quality: str = "unknown",
    n_actions: int | None = None,
) -> Path:
    """Convert a flat D4RL-style HDF5 file into a marlkd dataset at ``out``.

    The file holds the steps of all episodes one after another: ``observations (L, N, ...)`` (or
    ``(L, O)``: one agent), ``actions (L, N)`` or ``(L,)``, ``rewards``, ``terminals`` and ``timeouts``
    ``(L, N)`` or ``(L,)`` (a team value, given to every agent), optionally ``infos/state`` and
    ``infos/action_mask``. Episodes end where every agent is terminal or timed out.

    Args:
        keys: marlkd field -> path in the file, overriding :data:`D4RL_KEYS` (e.g.
            ``{"avail_actions": "infos/legals"}``).
        env_id, env_kwargs: the environment recorded in the dataset (need not be one marlkd can run;
            training then runs with evaluation off).
        n_actions: A when the file has no action masks (default: the largest action + 1).
    """
    import h5py

    source = Path(source)
    where = str(source)
    mapping = {**D4RL_KEYS, **dict(keys or {})}
    unknown = set(mapping) - set(D4RL_KEYS)
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) in the key mapping: {', '.join(sorted(unknown))}")
    if not source.is_file():
        raise DatasetError(f"{where}: file not found")
    try:
        file = h5py.File(source, "r")
    except OSError as exc:
        raise DatasetError(f"{where}: not a readable HDF5 file ({exc})") from exc
    flat: dict[str, np.ndarray] = {}
    with file:
        for field, key in mapping.items():
            if key not in file:
                if field in _D4RL_OPTIONAL and field not in (keys or {}):  # absent by default: fine
                    continue
                raise DatasetError(f"{where}: field {field!r}: key {key!r} not found (map it with keys=...)")
            node = file[key]
            if not isinstance(node, h5py.Dataset):
                raise DatasetError(f"{where}: field {field!r}: {key!r} is not an array")
            flat[field] = node[()]
    obs = flat["obs"]
    if obs.ndim == 2:  # one agent
        flat["obs"] = obs[:, None]
        if flat["actions"].ndim == 1:
            flat["actions"] = flat["actions"][:, None]
    agents = flat["obs"].shape[1] if flat["obs"].ndim >= 2 else 1
    for name in ("rewards", "terminals", "truncations"):
        flat[name] = _broadcast_agents(np.asarray(flat[name]), agents)
    arrays, actions = streams_to_arrays(flat, where, n_actions=n_actions)
    from marlkd.data.format import write_dataset

    behavior = {"source": "d4rl-hdf5", "file": str(source.resolve()), "keys": mapping}
    metadata = {
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "n_actions": actions,
        "quality": quality,
        "behavior_policy": behavior,
    }
    return write_dataset(out, arrays, metadata)
