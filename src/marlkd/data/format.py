"""The marlkd offline dataset file: one HDF5 file per dataset, an atomic writer and a reader that validates
all.

Layout (see docs/datasets.md): arrays padded to ``(E, T, ...)`` with a ``mask (E, T)`` of valid steps, and
the metadata as HDF5 attributes of the root group. Shapes: E episodes, T timesteps, N agents, O observation
size, S state size, A actions. The arrays and metadata every dataset has, and the checks on them, are
:mod:`marlkd.data.schema`'s; the loaded dataset is :mod:`marlkd.data.dataset`'s (both importable from here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from marlkd.data.dataset import EpisodeData, OfflineDataset
from marlkd.data.schema import (
    ARRAY_FIELDS,
    FORMAT_VERSION,
    OPTIONAL_ARRAYS,
    REQUIRED_ARRAYS,
    DatasetMetadata,
    all_fields,
    array_statistics,
    check_arrays,
    compute_checksum,
    size_attributes,
)
from marlkd.errors import DatasetError

__all__ = [
    "ARRAY_FIELDS",
    "FORMAT_VERSION",
    "OPTIONAL_ARRAYS",
    "REQUIRED_ARRAYS",
    "DatasetMetadata",
    "EpisodeData",
    "OfflineDataset",
    "check_environment",
    "compute_checksum",
    "load_dataset",
    "stored_checksum",
    "write_dataset",
]

# Metadata attributes the caller of write_dataset may give, and their defaults (None: required).
_USER_METADATA: dict[str, Any] = {
    "env_id": None,
    "env_kwargs": {},
    "n_actions": None,
    "behavior_policy": {},
    "quality": "unknown",
    "seed": None,
    "normalized_score": math.nan,
}
# Attributes the writer derives from the arrays; a caller's value must agree with the arrays.
_SIZE_METADATA = ("n_agents", "obs_dim", "state_dim", "n_episodes")
# Attributes the writer always computes itself; a caller's value (e.g. from another file) is replaced.
_COMPUTED_METADATA = (
    "format_version",
    "mean_return",
    "min_return",
    "max_return",
    "checksum",
    "marlkd_version",
)
_UNKNOWN_SEED = -1  # HDF5 attributes cannot hold None
_RETURN_TOLERANCE = 1e-5


def _marlkd_version() -> str:
    try:
        return importlib_metadata.version("marlkd")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _to_dtype(name: str, value: Any, where: str) -> np.ndarray:
    """Convert a caller's array to the field's dtype, refusing conversions that would change values."""
    dtype = ARRAY_FIELDS[name][0]
    array = np.asarray(value)
    if array.dtype == dtype:
        return array
    kind = array.dtype.kind
    if dtype == np.bool_ and kind in "iu" and np.isin(array, (0, 1)).all():
        return array.astype(np.bool_)
    if dtype == np.int64 and kind in "iub":
        return array.astype(np.int64)
    if dtype == np.float32 and kind in "fiub":
        return array.astype(np.float32)
    raise DatasetError(f"{where}: field {name!r}: cannot store dtype {array.dtype} as {dtype}")


def _prepare_metadata(
    given: Mapping[str, Any], sizes: Mapping[str, int], arrays: Mapping[str, np.ndarray], where: str
) -> DatasetMetadata:
    values = {key: given.get(key, default) for key, default in _USER_METADATA.items()}
    for key, size in size_attributes(sizes).items():
        if key in given and int(given[key]) != size:
            raise DatasetError(f"{where}: attribute {key!r}: given {given[key]} but the arrays have {size}")
    if not isinstance(values["env_id"], str) or not values["env_id"]:
        raise DatasetError(f"{where}: attribute 'env_id': a non-empty string is required")
    if not isinstance(values["quality"], str):
        raise DatasetError(f"{where}: attribute 'quality': must be a string")
    for key in ("env_kwargs", "behavior_policy"):
        if not isinstance(values[key], Mapping):
            raise DatasetError(f"{where}: attribute {key!r}: must be a dict")
        try:
            values[key] = json.loads(json.dumps(dict(values[key])))
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: attribute {key!r}: not JSON-serializable ({exc})") from exc
    seed = values["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise DatasetError(f"{where}: attribute 'seed': must be a non-negative int or None, got {seed!r}")
    return DatasetMetadata(
        format_version=FORMAT_VERSION,
        env_id=values["env_id"],
        env_kwargs=values["env_kwargs"],
        n_agents=sizes["N"],
        obs_dim=sizes["O"],
        n_actions=sizes["A"],
        state_dim=sizes["S"],
        behavior_policy=values["behavior_policy"],
        quality=values["quality"],
        seed=None if seed is None else int(seed),
        n_episodes=sizes["E"],
        normalized_score=float(values["normalized_score"]),
        marlkd_version=_marlkd_version(),
        **array_statistics(arrays),
    )


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole episodes per chunk, about 256 KiB each, so reading episodes decompresses only what it needs."""
    episode_bytes = max(1, math.prod(shape[1:]) * itemsize)
    return (max(1, min(shape[0], (256 * 1024) // episode_bytes)), *shape[1:])


def write_dataset(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any],
    *,
    compression: str | None = "gzip",
) -> Path:
    """Validate ``arrays`` and write them with ``metadata`` to the HDF5 file ``path``, atomically.

    Args:
        path: target file; missing parent directories are created. An existing file is replaced only once
            the new one is complete (temporary file in the same directory, fsync, ``os.replace``).
        arrays: ``obs (E,T,N,O)``, ``actions (E,T,N)``, ``rewards (E,T,N)``, ``mask (E,T)``,
            ``terminals (E,T,N)``, ``truncations (E,T,N)``, optional ``state (E,T,S)`` and
            ``avail_actions (E,T,N,A)``. Converted to the stored dtypes when that keeps every value.
        metadata: ``env_id`` (required), ``n_actions`` (required unless ``avail_actions`` is given),
            ``env_kwargs``, ``behavior_policy``, ``quality``, ``seed``, ``normalized_score``. Sizes
            (``n_agents``, ``obs_dim``, ``state_dim``, ``n_episodes``) are taken from the arrays and, if
            given, must agree; return statistics, checksum and versions are always computed here.
        compression: ``"gzip"`` (portable, the default), ``"lzf"`` (faster, h5py only) or None.

    Returns:
        The path written. Raises :class:`DatasetError` naming the field for any invalid input.
    """
    target = Path(path)
    where = str(target)
    unknown = set(metadata) - set(_USER_METADATA) - set(_SIZE_METADATA) - set(_COMPUTED_METADATA)
    if unknown:
        raise DatasetError(f"{where}: unknown metadata attribute(s): {', '.join(sorted(unknown))}")
    extra = set(arrays) - set(ARRAY_FIELDS)
    if extra:
        raise DatasetError(f"{where}: unknown field(s): {', '.join(sorted(extra))}")
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    prepared = {name: _to_dtype(name, arrays[name], where) for name in ARRAY_FIELDS if name in arrays}
    n_actions = metadata.get("n_actions")
    if n_actions is None:
        if "avail_actions" not in prepared:
            raise DatasetError(f"{where}: attribute 'n_actions': required when there is no 'avail_actions'")
        n_actions = prepared["avail_actions"].shape[-1]
    sizes = check_arrays(prepared, int(n_actions), where)
    info = _prepare_metadata(metadata, sizes, prepared, where)

    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name in the target's directory (same file system, so the rename is atomic); h5py creates it
    # with the user's umask, unlike mkstemp's owner-only mode.
    temporary = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        with h5py.File(temporary, "w-") as file:
            for name, array in prepared.items():
                options: dict[str, Any] = {}
                if compression is not None:
                    options = {
                        "compression": compression,
                        "shuffle": True,
                        "chunks": _chunk_shape(array.shape, array.itemsize),
                    }
                    if compression == "gzip":
                        options["compression_opts"] = 4
                file.create_dataset(name, data=array, track_times=False, **options)
            for key, value in _attributes(info).items():
                file.attrs[key] = value
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); not possible on every platform, where it is skipped."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _attributes(info: DatasetMetadata) -> dict[str, Any]:
    values = info.to_dict()
    values["env_kwargs"] = json.dumps(info.env_kwargs, sort_keys=True)
    values["behavior_policy"] = json.dumps(info.behavior_policy, sort_keys=True)
    values["seed"] = _UNKNOWN_SEED if info.seed is None else info.seed
    return values


# Annotations are strings here (postponed evaluation): "int", "int | None", "float", "str", "dict[...]".
_ATTRIBUTE_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(DatasetMetadata)}


def _show(value: Any) -> str:
    """A stored attribute for a message: NumPy scalars shown as the plain Python values they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _read_metadata(attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    def fail(key: str, problem: str) -> DatasetError:
        return DatasetError(f"{where}: attribute {key!r}: {problem}")

    if "format_version" not in attrs:
        raise fail("format_version", "missing: not a marlkd dataset")
    version = attrs["format_version"]
    if not isinstance(version, np.integer | int) or int(version) != FORMAT_VERSION:
        newer = isinstance(version, np.integer | int) and int(version) > FORMAT_VERSION
        hint = "written by a newer marlkd; upgrade marlkd" if newer else "unsupported"
        raise fail(
            "format_version", f"version {_show(version)} is {hint} (this marlkd reads {FORMAT_VERSION})"
        )
    values: dict[str, Any] = {}
    for key, kind in _ATTRIBUTE_TYPES.items():
        if key not in attrs:
            raise fail(key, "missing (required)")
        value = attrs[key]
        if kind in ("int", "int | None"):
            if not isinstance(value, np.integer | int) or isinstance(value, bool | np.bool_):
                raise fail(key, f"must be an integer, got {_show(value)}")
            values[key] = int(value)
        elif kind == "float":
            if not isinstance(value, np.floating | float):
                raise fail(key, f"must be a float, got {_show(value)}")
            values[key] = float(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise fail(key, f"must be a string, got {_show(value)}")
            values[key] = value
        else:  # JSON dicts
            try:
                values[key] = json.loads(value)
            except (TypeError, ValueError) as exc:
                raise fail(key, f"not valid JSON ({exc})") from exc
            if not isinstance(values[key], dict):
                raise fail(key, "must be a JSON object")
    if values["seed"] == _UNKNOWN_SEED:
        values["seed"] = None
    return values


# The metadata attribute that states each axis's size (T, the padded length, is stated by none).
_AXIS_ATTRIBUTES = {"E": "n_episodes", "N": "n_agents", "O": "obs_dim", "S": "state_dim", "A": "n_actions"}


def _check_declared(nodes: Mapping[str, Any], values: Mapping[str, Any], where: str) -> None:
    """Check the arrays' declared dtypes and shapes against the metadata before any array is read, and
    that reading them fits in memory: a file cannot make the reader allocate what its attributes do not
    announce. The array that disagrees is named (for T, the one that differs from the others)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, node in nodes.items():
        dtype, axes = ARRAY_FIELDS[name]
        if node.dtype != dtype:
            raise DatasetError(f"{where}: field {name!r}: dtype {node.dtype} where {dtype} is required")
        shape = tuple(int(n) for n in node.shape or ())
        if len(shape) != len(axes):
            raise DatasetError(
                f"{where}: field {name!r}: shape {shape} has {len(shape)} dimensions, "
                f"expected ({', '.join(axes)})"
            )
        for axis, size in zip(axes, shape, strict=True):
            attribute = _AXIS_ATTRIBUTES.get(axis)
            if attribute is not None and size != values[attribute]:
                raise DatasetError(
                    f"{where}: field {name!r}: shape {shape} has {axis} = {size}, but attribute "
                    f"{attribute!r} says {values[attribute]}"
                )
        shapes[name] = shape
    lengths = [shape[1] for shape in shapes.values()]
    common = max(set(lengths), key=lengths.count)
    for name, shape in shapes.items():
        if shape[1] != common:
            raise DatasetError(
                f"{where}: field {name!r}: shape {shape} has T = {shape[1]}, "
                f"but the other fields have T = {common}"
            )
    need = sum(math.prod(shape) * ARRAY_FIELDS[name][0].itemsize for name, shape in shapes.items())
    have = _available_memory()
    if have and need > have:
        raise DatasetError(
            f"{where}: its arrays need {need / 2**30:.1f} GiB of memory, more than the "
            f"{have / 2**30:.1f} GiB available; the file is damaged, or too large for this machine"
        )


def _available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; else physical memory; 0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_environment(metadata: DatasetMetadata, where: str, needed: bool = True) -> None:
    """Check that the dataset's environment is registered and that its sizes (agents, observation size,
    actions, state size) are the environment's; raises :class:`DatasetError` naming the file.

    With ``needed`` False (nothing will run the environment: training without evaluation), an unknown
    environment passes; sizes are still checked when it is known."""
    from marlkd.envs import env_spec
    from marlkd.envs.registry import UnknownEnvironmentError

    try:
        spec = env_spec(metadata.env_id, **metadata.env_kwargs)
    except UnknownEnvironmentError as exc:
        if not needed:
            return
        raise DatasetError(
            f"{where}: attribute 'env_id': {exc}; evaluation needs it (train with --eval-episodes 0 to "
            "train without evaluation)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{where}: attribute 'env_kwargs': {metadata.env_id} cannot be made with "
            f"{json.dumps(metadata.env_kwargs, sort_keys=True)} ({exc})"
        ) from exc
    for attribute in ("n_agents", "obs_dim", "n_actions", "state_dim"):
        mine, theirs = getattr(metadata, attribute), getattr(spec, attribute)
        if attribute == "state_dim" and mine == 0:
            continue  # no stored state: the environment's is not needed
        if mine != theirs:
            raise DatasetError(
                f"{where}: attribute {attribute!r}: the dataset has {mine}, but environment "
                f"{metadata.env_id} has {theirs}; the data was not made in this environment"
            )


def stored_checksum(path: str | os.PathLike[str]) -> str | None:
    """The checksum a dataset file declares (its ``checksum`` attribute, which :func:`load_dataset` checks
    against the arrays, and which a run pins and records as ``dataset_checksum``), read without loading
    the arrays; None when ``path`` is not a readable marlkd dataset."""
    try:
        with h5py.File(Path(path), "r") as file:
            if "format_version" not in file.attrs:
                return None
            value = file.attrs.get("checksum")
    except (OSError, ValueError):
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return value if isinstance(value, str) and value else None


def load_dataset(path: str | os.PathLike[str]) -> OfflineDataset:
    """Read and validate the dataset file ``path``.

    Checks the file, the format version, every required field and attribute, dtypes, shapes (across arrays
    and against the metadata), that ``mask`` is a prefix per episode, that padding is zero, that actions
    are in ``[0, n_actions)`` and available, that values are finite, the return statistics and the
    checksum. Raises :class:`DatasetError` naming the file and the field on any problem.
    """
    source = Path(path)
    where = str(source)
    if not source.exists():
        raise DatasetError(f"{where}: file not found")
    if source.is_dir():
        raise DatasetError(f"{where}: is a directory, not a dataset file")
    try:
        is_hdf5 = h5py.is_hdf5(source)
    except OSError as exc:
        raise DatasetError(f"{where}: cannot be read ({exc})") from exc
    if not is_hdf5:
        raise DatasetError(f"{where}: not an HDF5 file")
    try:
        file = h5py.File(source, "r")
    except OSError as exc:
        raise DatasetError(f"{where}: not a readable HDF5 file, truncated or corrupt ({exc})") from exc
    with file:
        values = _read_metadata(file.attrs, where)
        nodes: dict[str, h5py.Dataset] = {}
        for name in ARRAY_FIELDS:
            if name not in file:
                if name in REQUIRED_ARRAYS:
                    raise DatasetError(f"{where}: field {name!r}: missing (required)")
                continue
            node = file[name]
            if not isinstance(node, h5py.Dataset):
                raise DatasetError(f"{where}: field {name!r}: not an array")
            nodes[name] = node
        _check_declared(nodes, values, where)
        arrays: dict[str, np.ndarray] = {}
        for name, node in nodes.items():
            try:
                arrays[name] = node[()]
            except (OSError, ValueError, TypeError) as exc:
                raise DatasetError(f"{where}: field {name!r}: cannot be read, file corrupt ({exc})") from exc
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise DatasetError(f"{where}: field {name!r}: a scalar where an array is required")

    sizes = check_arrays(arrays, values["n_actions"], where)
    for key, size in size_attributes(sizes).items():
        if values[key] != size:
            raise DatasetError(f"{where}: attribute {key!r}: says {values[key]} but the arrays have {size}")
    actual = array_statistics(arrays)
    if actual["checksum"] != values["checksum"]:
        raise DatasetError(
            f"{where}: field 'checksum': the arrays do not match the stored checksum "
            "(file modified or corrupt)"
        )
    for key in ("mean_return", "min_return", "max_return"):
        if not math.isclose(values[key], actual[key], rel_tol=_RETURN_TOLERANCE, abs_tol=_RETURN_TOLERANCE):
            raise DatasetError(
                f"{where}: attribute {key!r}: says {values[key]} but the rewards give {actual[key]}"
            )
    return OfflineDataset(**all_fields(arrays), metadata=DatasetMetadata(**values), path=source)
