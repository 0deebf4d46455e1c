"""Checkpoint files that cannot run code: written as tensors and plain containers, read with
``torch.load(weights_only=True)``.

A checkpoint holds only what PyTorch's restricted unpickler accepts: tensors, numbers, strings, ``None``
and dicts/lists/tuples of them. NumPy arrays and scalars in the saved object are stored as tensors (tagged,
so they come back as NumPy) and dataclasses as plain dicts; anything else is refused when saving. Loading
never imports or calls anything named in the file: a crafted file is rejected, not run, and a truncated
or garbage one is one clear :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from marlkd import atomic
from marlkd.errors import MarlkdError

_NDARRAY = "__ndarray__"


class CheckpointError(MarlkdError):
    """A checkpoint file that is missing, damaged, or not made of tensors and plain containers."""


def to_plain(obj: Any) -> Any:
    """``obj`` with NumPy arrays as tagged tensors, NumPy scalars as Python numbers, dataclasses as dicts."""
    import torch

    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError("a checkpoint may not hold an object array")
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj)).clone(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(value) for value in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return obj
    raise CheckpointError(f"a checkpoint may hold tensors and plain values only, not {type(obj).__name__}")


def from_plain(obj: Any) -> Any:
    """Undo :func:`to_plain`'s tagging of NumPy arrays."""
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY, "dtype"}:
            return obj[_NDARRAY].numpy().astype(obj["dtype"], copy=False)
        return {key: from_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [from_plain(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(value) for value in obj)
    return obj


def save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (see :func:`to_plain`) to ``path`` atomically."""
    import torch

    plain = to_plain(obj)
    with atomic.replacing(path) as tmp:
        torch.save(plain, tmp)


def load(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """Read a checkpoint with ``weights_only=True``; every way a file can be bad is a :class:`CheckpointError`
    naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no {what} there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if "global" in line.lower()), "")
        if not reason:  # not a refused object: bytes that are no pickle at all
            raise CheckpointError(f"{path}: not a readable {what} (truncated or damaged)") from exc
        raise CheckpointError(
            f"{path}: refused to load this {what}: it holds more than tensors and plain values "
            f"({reason or 'a pickled object'}); marlkd never runs code from a file"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable {what} (truncated or damaged: {first})") from exc
    return from_plain(state)


def clean_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files an interrupted atomic write left in ``directory`` (``.<name>.tmp<pid>*``
    of a process that is gone); returns what was removed."""
    import os

    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.glob(".*.tmp*"):
        pid_text = path.name.split(".tmp", 1)[1].split(".", 1)[0].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and _alive(pid):
            continue  # another live process is writing it
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
