"""The dataset schema: the arrays a dataset holds (dtypes and axes), its metadata, and the checks every
dataset passes, however it was made or read (:func:`check_arrays`).

Shapes: E episodes, T timesteps, N agents, O observation size, S state size, A actions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from marlkd.errors import DatasetError

FORMAT_VERSION = 1

# name -> (dtype, axes). The order fixes the checksum. Axes letters: E, T, N, O, S, A.
ARRAY_FIELDS: dict[str, tuple[np.dtype, tuple[str, ...]]] = {
    "obs": (np.dtype(np.float32), ("E", "T", "N", "O")),
    "actions": (np.dtype(np.int64), ("E", "T", "N")),
    "rewards": (np.dtype(np.float32), ("E", "T", "N")),
    "mask": (np.dtype(np.bool_), ("E", "T")),
    "terminals": (np.dtype(np.bool_), ("E", "T", "N")),
    "truncations": (np.dtype(np.bool_), ("E", "T", "N")),
    "state": (np.dtype(np.float32), ("E", "T", "S")),
    "avail_actions": (np.dtype(np.bool_), ("E", "T", "N", "A")),
}
REQUIRED_ARRAYS = ("obs", "actions", "rewards", "mask", "terminals", "truncations")
OPTIONAL_ARRAYS = ("state", "avail_actions")


@dataclass(frozen=True)
class DatasetMetadata:
    """What a dataset file says about itself (its HDF5 root attributes).

    Attributes:
        format_version: version of this file layout (:data:`FORMAT_VERSION`).
        env_id: registry id of the environment, e.g. ``"grid-world"``.
        env_kwargs: the environment's constructor arguments.
        n_agents: N.
        obs_dim: O, length of one agent's observation.
        n_actions: A, number of discrete actions.
        state_dim: S, length of the stored global state; 0 when the file has no ``state``.
        behavior_policy: how the data was made, enough to remake it (e.g. the function and its arguments).
        quality: data tier (one of :data:`marlkd.names.QUALITIES`: ``"good"``, ``"normal"``, ``"poor"``,
            ``"medium"``, ``"early"``, ``"replay"``, ``"mixed"``, ``"random"``) or a user's own label.
        seed: the seed the data was collected with; None when unknown.
        n_episodes: E.
        mean_return, min_return, max_return: over episodes, of the per-agent episode return (the episode's
            summed rewards, averaged over agents).
        normalized_score: ``(return - random) / (expert - random)``; NaN when unknown.
        checksum: SHA-256 (hex) of the arrays, their names, dtypes and shapes.
        marlkd_version: version of marlkd that wrote the file.
    """

    format_version: int
    env_id: str
    env_kwargs: dict[str, Any]
    n_agents: int
    obs_dim: int
    n_actions: int
    state_dim: int
    behavior_policy: dict[str, Any]
    quality: str
    seed: int | None
    n_episodes: int
    mean_return: float
    min_return: float
    max_return: float
    normalized_score: float
    checksum: str
    marlkd_version: str

    def to_dict(self) -> dict[str, Any]:
        """The metadata as a plain dict (JSON-serializable apart from NaN)."""
        return dataclasses.asdict(self)


def all_fields(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """Every field of :data:`ARRAY_FIELDS`, None where ``arrays`` lacks it."""
    return {name: arrays.get(name) for name in ARRAY_FIELDS}


def compute_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the present arrays in :data:`ARRAY_FIELDS` order: name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, (dtype, _) in ARRAY_FIELDS.items():
        if name not in arrays:
            continue
        array = np.ascontiguousarray(arrays[name], dtype=dtype.newbyteorder("<"))
        digest.update(f"{name}|{dtype.name}|{array.shape}\n".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def array_statistics(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Return statistics and checksum, the metadata that depends on the arrays' values."""
    per_episode = arrays["rewards"].sum(axis=1, dtype=np.float64).mean(axis=1)  # (E,)
    return {
        "mean_return": float(per_episode.mean()),
        "min_return": float(per_episode.min()),
        "max_return": float(per_episode.max()),
        "checksum": compute_checksum(arrays),
    }


def _first_index(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))


def _where(index: tuple[int, ...]) -> str:
    parts = ["episode", "step", "agent"]
    return " ".join(f"{label} {value}" for label, value in zip(parts, index, strict=False))


def check_arrays(arrays: Mapping[str, np.ndarray], n_actions: int, where: str) -> dict[str, int]:
    """Validate dtypes, shapes and values of ``arrays``; return the sizes E, T, N, O, S, A.

    Raises :class:`DatasetError` naming ``where`` (the file) and the field.
    """
    for name in REQUIRED_ARRAYS:
        if name not in arrays:
            raise _fail(where, name, "missing (required)")
    sizes = _check_shapes(arrays, n_actions, where)
    _check_mask(arrays["mask"], sizes["T"], where)
    _check_values(arrays, where)
    _check_actions(arrays, n_actions, where)
    return sizes


def _fail(where: str, field: str, problem: str) -> DatasetError:
    return DatasetError(f"{where}: field {field!r}: {problem}")


def _check_shapes(arrays: Mapping[str, np.ndarray], n_actions: int, where: str) -> dict[str, int]:
    """Dtypes, and shapes that agree on every axis; the sizes E, T, N, O, S, A."""
    sizes: dict[str, int] = {}
    for name, array in arrays.items():
        dtype, axes = ARRAY_FIELDS[name]
        if array.dtype != dtype:
            raise _fail(where, name, f"dtype {array.dtype} where {dtype} is required")
        if array.ndim != len(axes):
            raise _fail(
                where, name, f"shape {array.shape} has {array.ndim} dimensions, expected ({', '.join(axes)})"
            )
        for axis, size in zip(axes, array.shape, strict=True):
            expected = sizes.setdefault(axis, size)
            if size != expected:
                raise _fail(
                    where,
                    name,
                    f"shape {array.shape} does not fit ({', '.join(axes)}): {axis} is {size} here "
                    f"but {expected} in the fields before it",
                )
    if sizes.setdefault("A", n_actions) != n_actions:
        raise DatasetError(
            f"{where}: attribute 'n_actions': says {n_actions} but 'avail_actions' has {sizes['A']} actions"
        )
    if sizes.setdefault("S", 0) < 1 and "state" in arrays:
        raise _fail(
            where, "state", "has an empty state axis; leave 'state' out when there is no global state"
        )
    for axis in ("E", "T", "N", "O", "A"):
        if sizes[axis] < 1:
            field = "n_actions" if axis == "A" else "obs"
            raise _fail(where, field, f"size {axis} must be at least 1, got {sizes[axis]}")
    return sizes


def _check_mask(mask: np.ndarray, steps: int, where: str) -> None:
    """Each episode's valid steps are a non-empty prefix of its ``steps`` padded ones."""
    lengths = mask.sum(axis=1)
    prefix = np.arange(steps)[None, :] < lengths[:, None]
    bad_episodes = np.flatnonzero((prefix != mask).any(axis=1) | (lengths == 0))
    if bad_episodes.size:
        e = int(bad_episodes[0])
        problem = "no valid step" if lengths[e] == 0 else "valid steps are not a prefix (valid, then padding)"
        raise _fail(where, "mask", f"episode {e}: {problem}")


def _check_values(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Finite observations, rewards and states; zeros in every field's padding."""
    padding = ~arrays["mask"]
    has_padding = bool(padding.any())
    padded_episodes, padded_steps = np.nonzero(padding)
    for name, array in arrays.items():
        if name == "mask":
            continue
        if name in ("obs", "rewards", "state"):
            finite = np.isfinite(array)
            if not finite.all():
                index = _first_index(~finite)
                kind = "NaN" if np.isnan(array[index]) else "an infinite value"
                raise _fail(where, name, f"contains {kind} at {_where(index)}")
        if has_padding:
            padded = array[padding]  # (P, ...): the padded (episode, step) pairs
            nonzero = (padded != 0).reshape(padded.shape[0], -1).any(axis=1)  # (P,)
            if nonzero.any():
                first = int(np.argmax(nonzero))
                e, t = int(padded_episodes[first]), int(padded_steps[first])
                raise _fail(
                    where, name, f"padding is not zero at episode {e} step {t} (after the episode's end)"
                )


def _check_actions(arrays: Mapping[str, np.ndarray], n_actions: int, where: str) -> None:
    """Actions in ``[0, n_actions)``, and available where the file says which are."""
    actions = arrays["actions"]
    out_of_range = (actions < 0) | (actions >= n_actions)
    if out_of_range.any():
        index = _first_index(out_of_range)
        raise _fail(
            where, "actions", f"action {int(actions[index])} at {_where(index)} is outside [0, {n_actions})"
        )
    if "avail_actions" in arrays:
        taken = np.take_along_axis(arrays["avail_actions"], actions[..., None], axis=-1)[..., 0]
        unavailable = ~taken & arrays["mask"][:, :, None]
        if unavailable.any():
            index = _first_index(unavailable)
            action = int(actions[index])
            raise _fail(
                where, "avail_actions", f"the action taken at {_where(index)} ({action}) is unavailable"
            )


def size_attributes(sizes: Mapping[str, int]) -> dict[str, int]:
    """The metadata attributes that are sizes of the arrays."""
    return {"n_agents": sizes["N"], "obs_dim": sizes["O"], "state_dim": sizes["S"], "n_episodes": sizes["E"]}
