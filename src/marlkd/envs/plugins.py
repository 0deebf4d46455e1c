"""Environments from outside marlkd: modules named with ``--import`` and installed packages' entry points.

Two ways to make a user's environment (or evaluator) visible to the command line, sweeps and their worker
processes:

- an installed package declares an entry point in the group ``marlkd.envs`` (pyproject.toml:
  ``[project.entry-points."marlkd.envs"] my_env = "my_package.envs"``); its value is a module (importing it
  registers) or ``module:function`` (called without arguments);
- ``marlkd --import MODULE ...``, a sweep spec's ``imports = ["MODULE"]``, or :func:`import_modules`:
  imports the module now and adds it to the environment variable ``MARLKD_IMPORT``, which processes
  started from here (sweep workers) inherit and import when they first look an environment up.

The registry loads both the first time it is asked for an id it does not know, or for the list of ids.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterable
from importlib import metadata

from marlkd.errors import MarlkdError

ENTRY_POINT_GROUP = "marlkd.envs"
IMPORT_ENV = "MARLKD_IMPORT"  # comma-separated module names

_loaded = False


def _imported_from_environment() -> list[str]:
    return [name.strip() for name in os.environ.get(IMPORT_ENV, "").split(",") if name.strip()]


def import_modules(modules: Iterable[str]) -> None:
    """Import ``modules`` (each registers its environments) and pass them on to child processes.

    The current directory is searched too (as ``python -m`` does), so ``--import my_envs`` finds
    ``./my_envs.py``. Raises :class:`MarlkdError` naming a module that cannot be imported.
    """
    modules = [name for name in modules if name]
    if not modules:
        return
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MarlkdError(f"--import {name}: cannot import module {name!r} ({exc})") from exc
    known = _imported_from_environment()
    os.environ[IMPORT_ENV] = ",".join(dict.fromkeys([*known, *modules]))


def load_plugins() -> None:
    """Once per process: load the ``marlkd.envs`` entry points and the modules named in ``MARLKD_IMPORT``.

    A broken entry point is reported as a warning (one installed package must not stop marlkd); a module
    named in ``MARLKD_IMPORT`` that cannot be imported is an error.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # a third-party package's bug: say which, and go on
            warnings.warn(
                f"marlkd: entry point {entry.name!r} ({entry.value}) of group {ENTRY_POINT_GROUP!r} failed: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=2,
            )
    import_modules(_imported_from_environment())


def pop_import_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--import MODULE`` / ``--import=MODULE`` (anywhere in ``argv``) from the other arguments."""
    rest: list[str] = []
    modules: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--":
            rest.append(item)
            rest.extend(items)
            break
        if item == "--import":
            module = next(items, None)
            if module is None:
                raise MarlkdError("--import: expected a module name")
            modules.append(module)
        elif item.startswith("--import="):
            modules.append(item.partition("=")[2])
        else:
            rest.append(item)
    return rest, modules
