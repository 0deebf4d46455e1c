"""CPU thread settings shared by every entry point (CLI, Python API, sweep workers).

marlkd's networks are small: one training step is bound by per-op overhead and memory traffic, not by
arithmetic, so a second thread buys little while several processes with several threads each (a sweep,
an expert trained from a notebook next to other work) oversubscribe the cores and run several times
slower. Every entry point therefore calls :func:`apply_threads` before it computes anything. The count is,
in order: the number the caller gives (``--threads``, ``TrainConfig.threads``), else the environment
variable ``MARLKD_THREADS``, else ``OMP_NUM_THREADS``, else one thread. A count chosen explicitly stays in
force for the process: a later automatic call (a library function) keeps it.

It sets PyTorch's intra-op threads and the usual OpenMP/BLAS environment variables (read by numpy and SciPy
when their libraries load, and inherited by child processes); at one thread, before JAX starts, also
XLA's CPU flags for one thread (SMAX). It also makes the C allocator keep freed memory for reuse
(:func:`marlkd.memory.retain_freed_memory`): a training step's buffers then do not come back as fresh
pages the kernel has to fault in every step.
"""

from __future__ import annotations

import os
import sys

from marlkd.memory import retain_freed_memory

THREADS_ENV = "MARLKD_THREADS"
# Read by OpenMP, MKL, OpenBLAS, Accelerate and numexpr when their library loads.
BLAS_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_explicit: int | None = None  # the count an explicit call chose in this process


def _positive_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


def resolve_threads(threads: int | None = None) -> int:
    """The thread count :func:`apply_threads` would use for ``threads`` (None or 0: automatic)."""
    if threads is not None and threads < 0:
        from marlkd.errors import ConfigError

        raise ConfigError(f"threads: must be >= 0 (0: automatic), got {threads}")
    if threads:
        return int(threads)
    if _explicit is not None:
        return _explicit
    return _positive_env(THREADS_ENV) or _positive_env("OMP_NUM_THREADS") or 1


def apply_threads(threads: int | None = None) -> int:
    """Set this process's CPU threads (``threads`` > 0: exactly that; None or 0: automatic, see the module
    docstring) and return the count. Cheap and idempotent: every entry point calls it."""
    global _explicit
    count = resolve_threads(threads)
    if threads:
        _explicit = count
    os.environ[THREADS_ENV] = str(count)
    for name in BLAS_ENV_VARS:
        os.environ[name] = str(count)
    if count == 1 and "jax" not in sys.modules:  # XLA's CPU client reads this when JAX starts
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    retain_freed_memory()
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def _reset_for_tests() -> None:
    """Forget an explicit choice (tests only)."""
    global _explicit
    _explicit = None
