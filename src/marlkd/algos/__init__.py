"""The algorithm registry: ``ALGOS[name]`` -> :class:`AlgoEntry`. One file per algorithm.

A new algorithm is one module that defines a config dataclass and a ``build(ctx)`` function and calls
:func:`register`; the parametrized tests in ``tests/test_algos_registry.py`` then cover it.
"""

from __future__ import annotations

import importlib

from marlkd.algos.base import AlgoEntry, Algorithm, BuildContext, Policy

ALGOS: dict[str, AlgoEntry] = {}


def register(entry: AlgoEntry) -> AlgoEntry:
    if entry.name in ALGOS:
        raise ValueError(f"algorithm {entry.name!r} is already registered")
    ALGOS[entry.name] = entry
    return entry


# Built-in methods, in the order of the paper's tables.
_BUILTIN = ("bc", "idt", "madt", "cql", "icq", "bcq", "gail", "airl", "teacher", "ours")
for _name in _BUILTIN:
    try:
        importlib.import_module(f"marlkd.algos.{_name}")
    except ModuleNotFoundError as _exc:  # a method not part of this build
        if _exc.name != f"marlkd.algos.{_name}":
            raise

__all__ = ["ALGOS", "AlgoEntry", "Algorithm", "BuildContext", "Policy", "register"]
