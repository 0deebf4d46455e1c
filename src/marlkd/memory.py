"""How the C allocator treats the large buffers of a training step (glibc only).

A training step allocates its activations and gradients afresh and frees them again. glibc serves a block
above its mmap threshold (128 KiB, raised as such blocks are freed, to at most 32 MiB) with a fresh
``mmap`` and returns it to the system when it is freed, and it gives the top of its heap back to the
system once more than its trim threshold (twice that) lies free there. Either way the next step's buffers
are new pages, and the kernel faults in and zeroes every 4 KiB of them. A student ensemble's buffers are
M times one student's (M members, ``marlkd.models.layers``), so they cross those limits where a single
model's stay under them: at M = 2 (the default model, bf16) the ensemble's step took 12,500 page faults
and 7 % of its CPU time in the kernel, where a loop over two separate models took none, and the batched
ensemble ran slower than the loop (docs/performance.md, "Students as one ensemble").

:func:`retain_freed_memory` makes glibc keep freed memory for reuse: every block from the heap (no
``mmap`` per block) and up to :data:`TRIM_THRESHOLD` bytes free at the heap's top before any goes back.
The process's resident memory then stays near its peak (plus at most that much), the usual trade of a
caching allocator. Every entry point applies it through :func:`marlkd.threads.apply_threads`;
``MARLKD_MALLOC=glibc`` leaves glibc's own policy. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MALLOC_ENV = "MARLKD_MALLOC"
TRIM_THRESHOLD = 1 << 30  # bytes that may lie free at the top of the heap before glibc returns them

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); True when it is in force.

    Idempotent. Does nothing (False) under ``MARLKD_MALLOC=glibc``, off Linux, or without glibc."""
    global _applied
    if _applied:
        return True
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "glibc" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # both return 1 on success; setting either also fixes glibc's otherwise adaptive thresholds
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
