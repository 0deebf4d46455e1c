"""Advisory file locks across processes: the one lock used by runs, sweeps, results tables and experts.

A lock is an exclusive ``flock`` on a lock file (``msvcrt`` on Windows). The system releases it when its
holder exits, however it exits (``kill -9`` included), so a lock is never left behind by a dead process:
the next process to ask simply gets it. While held, the lock file names its holder (``pid``, host, command
and start time, one JSON line) so that a process that cannot take it can say who has it.

:func:`locked` waits for the lock (for as long as it takes, or up to ``timeout`` seconds);
:func:`try_lock` takes it only if it is free. Both are also usable as a :class:`FileLock` object held
across calls (released with :meth:`FileLock.release`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from marlkd.errors import MarlkdError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_POLL_S = 0.1


class LockHeld(MarlkdError):
    """The lock is held by another process (its description in :attr:`holder`)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None, what: str = "") -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{what or path} is in use by {describe(holder)} (lock {path})")


def describe(holder: dict[str, Any] | None) -> str:
    """``process 1234 on host (marlkd train ..., since ...)``, or ``another process`` when unknown."""
    if not holder:
        return "another process"
    text = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
    details = [str(holder[k]) for k in ("command", "since") if holder.get(k)]
    return f"{text} ({', since '.join(details)})" if details else text


def _lock_fd(fd: int, blocking: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    os.lseek(fd, 0, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock_fd(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    import msvcrt  # pragma: no cover - Windows

    os.lseek(fd, 0, os.SEEK_SET)
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def read_holder(path: str | Path) -> dict[str, Any] | None:
    """What the lock file at ``path`` says about its holder (None when empty or unreadable).

    A stale description (its process gone) may remain in a lock that nobody holds; only a failed attempt
    to take the lock shows that it is held."""
    try:
        text = Path(path).read_text().strip()
        holder = json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None
    return holder if isinstance(holder, dict) else None


class FileLock:
    """A held lock on ``path``; :meth:`release` (or the end of a ``with`` block) lets it go."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path, self._handle = path, handle

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            self._handle.truncate(0)
            self._handle.flush()
        with contextlib.suppress(OSError):
            _unlock_fd(self._handle.fileno())
        self._handle.close()
        self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+b")  # noqa: SIM115 - kept open while the lock is held


def _claim(path: Path, handle: IO[bytes], what: str) -> FileLock:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else "",
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "what": what,
    }
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write((json.dumps(holder) + "\n").encode())
        handle.flush()
    return FileLock(path, handle)


def try_lock(path: str | Path, what: str = "") -> FileLock | None:
    """Take the lock at ``path`` if it is free: the held :class:`FileLock`, or None if another process
    holds it."""
    path = Path(path)
    handle = _open(path)
    if not _lock_fd(handle.fileno(), blocking=False):
        handle.close()
        return None
    return _claim(path, handle, what)


def acquire(path: str | Path, timeout: float | None = None, what: str = "") -> FileLock:
    """Take the lock at ``path``, waiting for it (forever when ``timeout`` is None); raises
    :class:`LockHeld` naming the holder when ``timeout`` seconds pass first (0: do not wait)."""
    path = Path(path)
    if timeout is None:
        handle = _open(path)
        _lock_fd(handle.fileno(), blocking=True)
        return _claim(path, handle, what)
    deadline = time.monotonic() + timeout
    while True:
        lock = try_lock(path, what)
        if lock is not None:
            return lock
        if time.monotonic() >= deadline:
            raise LockHeld(path, read_holder(path), what)
        time.sleep(_POLL_S)


@contextlib.contextmanager
def locked(path: str | Path, timeout: float | None = None, what: str = "") -> Iterator[FileLock]:
    """Hold the lock at ``path`` for the ``with`` block (see :func:`acquire`)."""
    lock = acquire(path, timeout, what)
    try:
        yield lock
    finally:
        lock.release()
