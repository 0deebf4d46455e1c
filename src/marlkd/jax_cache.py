"""JAX's persistent compilation cache for the SMAX environments: compiled XLA programs kept on disk, so a
new process (a sweep worker, a second ``marlkd train``) loads the jitted SMAX reset and step instead of
compiling them again.

:func:`enable_compilation_cache` runs when :mod:`marlkd.envs.smax` imports JAX. The directory is, in
order: ``MARLKD_JAX_CACHE`` (``off``, ``0`` or ``none`` disables the cache), else
``$XDG_CACHE_HOME/marlkd/jax``, else ``~/.cache/marlkd/jax``. A cache the user configured for JAX itself
(``JAX_COMPILATION_CACHE_DIR``, or ``jax.config.update("jax_compilation_cache_dir", ...)`` before the import)
is left as it is. Every compilation is cached (JAX's defaults skip those under one second); an entry is
keyed by the program, the JAX and XLA versions, the flags and the CPU, so a stale or foreign entry is never
used; a directory that cannot be written only means compiling as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CACHE_ENV = "MARLKD_JAX_CACHE"
_OFF = ("off", "0", "none", "false", "no")


def cache_dir() -> Path | None:
    """Where marlkd keeps JAX's compilations (None: disabled by ``MARLKD_JAX_CACHE``)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base).expanduser() / "marlkd" / "jax"


def enable_compilation_cache(jax: Any) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (unless the user set one for JAX) and
    cache every compilation; returns the directory in use (None: no cache)."""
    configured = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if configured:
        return Path(configured)
    directory = cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
