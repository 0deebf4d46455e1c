"""Atomic file writes: a file is either its old self or completely new, never half-written.

Each writer writes a temporary file beside the target (same directory, so the same file system), flushes it
to disk and renames it over the target (``os.replace``, atomic on POSIX). An exception on the way removes
the temporary file and leaves the target as it was. Checkpoints, results, run markers, expert information
and plots all go through here.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block succeeds.

    The temporary name keeps ``path``'s suffix (some writers, such as matplotlib's, choose the format by it).
    """
    path = Path(path)
    # the writer's pid (so that a stale one can be recognised) and a random part (threads of one process)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = float) -> None:
    """``obj`` as indented JSON with sorted keys; values JSON cannot hold go through ``default``."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with replacing(path) as tmp:
        torch.save(obj, tmp)
