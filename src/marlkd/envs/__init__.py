"""Environments: PettingZoo ``ParallelEnv`` forms and batched NumPy forms, behind one registry."""

from marlkd.envs.base import BatchedEnv, EnvSpec
from marlkd.envs.registry import (
    EnvEntry,
    UnknownEnvironmentError,
    describe,
    env_spec,
    list_envs,
    make,
    make_batched,
    register,
)

__all__ = [
    "BatchedEnv",
    "EnvEntry",
    "EnvSpec",
    "UnknownEnvironmentError",
    "describe",
    "env_spec",
    "list_envs",
    "make",
    "make_batched",
    "register",
]
