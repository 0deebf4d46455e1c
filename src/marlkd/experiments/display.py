"""Display names of methods, ablations and environments in reports, and the keys ``[report.paper]``
uses for a run's values.

A method's display name is its registry entry's (``AlgoEntry.display_name``): the built-in methods' are in
:data:`marlkd.names.METHOD_NAMES`, read here without importing the methods (or torch); a method
registered by the user's code is looked up in the registry when that code has loaded it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from marlkd.names import METHOD_NAMES

if TYPE_CHECKING:
    from marlkd.experiments.schema import RunSpec

ABLATION_NAMES = {
    "full": "Ours (full method)",
    "no-momentum": "Ours - Momentum Update",
    "no-mapping": "Ours - Mapping Network",
    "no-kl": "Ours - KL Distillation",
    "no-kl-no-mapping": "Ours - KL Distillation - Mapping Network",
    "kl-only": "Ours (conventional distillation)",
    "shared-mapping": "Ours (M = N)",
    "ema-mapping": "Ours + EMA teacher map",
    "frozen-mapping": "Ours + frozen teacher map",
    "raw-teacher": "Ours + raw teacher angles",
    "spread": "Ours + spread term",
    "eval-target": "Ours + eval-return teacher",
}
ENV_NAMES = {
    "fill-in": "Fill-In",
    "equal-space": "Equal Space",
    "grid-world": "Grid-World",
    "grid-world-coop": "Grid-World (coop)",
    "highway": "Highway",
    "highway-slow": "Highway (full simulation)",
    "smax-2s3z": "2s3z",
    "smax-3s5z": "3s5z",
    "smax-8m-vs-9m": "8m9m",
    "smax-3s5z-vs-3s6z": "3s5z vs 3s6z",
}


def method_name(method: str) -> str:
    """Display name of a method: its registry entry's, else its id."""
    if method in METHOD_NAMES:
        return METHOD_NAMES[method]
    registry = sys.modules.get("marlkd.algos")  # loaded already when a user's method is registered
    entry = getattr(registry, "ALGOS", {}).get(method)
    return entry.display_name if entry is not None else method


def variant_name(method: str, ablation: str) -> str:
    """Display name of a method, or of ``ours`` under an ablation."""
    if ablation:
        return ABLATION_NAMES.get(ablation, f"{method_name(method)} ({ablation})")
    return method_name(method)


def variant_id(method: str, ablation: str) -> str:
    """Short id of a variant (the ``variant`` report rows in ``[report.paper]``): the method, or
    ``<method>-<ablation>`` (``ours-kl-only``), as in run ids."""
    return f"{method}-{ablation}" if ablation else method


def paper_key(column: str, run: RunSpec) -> str:
    """How ``[report.paper]`` names the run's value of a report group column: ``variant``: its
    :func:`variant_id`; other columns: the value as text (``grid-world``, ``good``, ``100``)."""
    if column == "variant":
        return variant_id(run.method, run.ablation)
    return str(getattr(run, column))


def env_name(env: str) -> str:
    """Display name of an environment id (the paper's)."""
    return ENV_NAMES.get(env, env)
