"""The environment registry: ``make(env_id)`` for the PettingZoo form, ``make_batched`` for the NumPy form.

An environment module registers itself with :func:`register`; users register their own the same way, or
a PettingZoo ``ParallelEnv`` with :func:`marlkd.envs.pettingzoo.register_parallel_env` (see
docs/adding_an_environment.md). Modules of the user's are found through ``marlkd.envs.plugins``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from marlkd.envs.base import BatchedEnv, EnvSpec
from marlkd.errors import MarlkdError


class UnknownEnvironmentError(MarlkdError, KeyError):
    """Raised for an environment id that nobody registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class EnvEntry:
    env_id: str
    make: Callable[..., Any]  # (**kwargs) -> pettingzoo.ParallelEnv
    make_batched: Callable[..., BatchedEnv]  # (num_envs, **kwargs) -> BatchedEnv
    spec: Callable[..., EnvSpec]  # (**kwargs) -> EnvSpec, cheap (no simulation)
    description: str = ""
    requires: str = ""  # optional extra needed, e.g. "smax"


_REGISTRY: dict[str, EnvEntry] = {}
# Modules that register built-in environments, imported lazily so that optional heavy
# dependencies (jax for SMAX, highway-env) load only when their environment is asked for.
_BUILTIN_MODULES = {
    "fill-in": "marlkd.envs.fill_in",
    "equal-space": "marlkd.envs.equal_space",
    "grid-world": "marlkd.envs.grid_world",
    "grid-world-coop": "marlkd.envs.grid_world",
    "highway": "marlkd.envs.highway",
    "highway-slow": "marlkd.envs.highway",
    "smax-2s3z": "marlkd.envs.smax",
    "smax-3s5z": "marlkd.envs.smax",
    "smax-8m-vs-9m": "marlkd.envs.smax",
    "smax-3s5z-vs-3s6z": "marlkd.envs.smax",
}


def register(entry: EnvEntry, *, overwrite: bool = False) -> None:
    """Add an environment to the registry under ``entry.env_id``."""
    if entry.env_id in _REGISTRY and not overwrite:
        raise ValueError(f"environment {entry.env_id!r} is already registered")
    _REGISTRY[entry.env_id] = entry


def register_variants(
    descriptions: dict[str, str],
    make: Callable[..., Any],
    make_batched: Callable[..., BatchedEnv],
    spec: Callable[..., EnvSpec],
    requires: str = "",
) -> None:
    """Register several ids that one module's factories build, each told the id: ``make(env_id, **kwargs)``,
    ``make_batched(num_envs, env_id=env_id, **kwargs)``, ``spec(env_id, **kwargs)``.

    ``descriptions`` maps each id to its description. An id registered before is replaced, so that
    reloading the module registers it again.
    """
    for env_id, description in descriptions.items():
        entry = EnvEntry(
            env_id=env_id,
            make=partial(make, env_id),
            make_batched=partial(make_batched, env_id=env_id),
            spec=partial(spec, env_id),
            description=description,
            requires=requires,
        )
        register(entry, overwrite=True)


def _entry(env_id: str) -> EnvEntry:
    if env_id not in _REGISTRY and env_id in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[env_id])
    if env_id not in _REGISTRY:  # perhaps a user's: entry points and --import modules (once)
        from marlkd.envs.plugins import load_plugins

        load_plugins()
    if env_id not in _REGISTRY:
        known = ", ".join(sorted(set(_REGISTRY) | set(_BUILTIN_MODULES)))
        raise UnknownEnvironmentError(f"unknown environment {env_id!r}; known environments: {known}")
    return _REGISTRY[env_id]


def make(env_id: str, **kwargs: Any):
    """Make the PettingZoo ``ParallelEnv`` form of ``env_id`` with constructor arguments ``kwargs``."""
    return _entry(env_id).make(**kwargs)


def make_batched(env_id: str, num_envs: int, **kwargs: Any) -> BatchedEnv:
    """Make ``num_envs`` copies of ``env_id`` stepped together (see :class:`BatchedEnv`)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return _entry(env_id).make_batched(num_envs, **kwargs)


def env_spec(env_id: str, **kwargs: Any) -> EnvSpec:
    """Sizes of ``env_id`` made with ``kwargs``, without building a simulation."""
    return _entry(env_id).spec(**kwargs)


def list_envs(include_optional: bool = True) -> list[str]:
    """Registered, built-in and user (entry point, ``--import``) environment ids."""
    from marlkd.envs.plugins import load_plugins

    load_plugins()
    ids = set(_REGISTRY)
    if include_optional:
        ids |= set(_BUILTIN_MODULES)
    return sorted(ids)


def describe(env_id: str) -> EnvEntry:
    """The registry entry (factories, description, optional extra) of ``env_id``."""
    return _entry(env_id)
