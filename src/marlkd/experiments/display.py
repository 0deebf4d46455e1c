"""Display names of methods, ablations and environments in reports, and the keys ``[report.paper]``
uses for a run's values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from marlkd.names import SCRATCH

if TYPE_CHECKING:
    from marlkd.experiments.schema import RunSpec

METHOD_NAMES = {
    "bc": "BC",
    "idt": "IDT",
    "madt": "MADT",
    "cql": "MA-CQL",
    "icq": "MA-ICQ",
    "bcq": "MA-BCQ",
    "gail": "MA-GAIL",
    "airl": "MA-AIRL",
    "teacher": "Teacher (centralized DT)",
    "ours": "Ours",
    SCRATCH: "From scratch",
}
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
    "highway": "Highway",
    "highway-slow": "Highway (full simulation)",
    "smax-2s3z": "2s3z",
    "smax-3s5z": "3s5z",
    "smax-8m-vs-9m": "8m9m",
    "smax-3s5z-vs-3s6z": "3s5z vs 3s6z",
}


def variant_name(method: str, ablation: str) -> str:
    """Display name of a method, or of ``ours`` under an ablation."""
    if ablation:
        return ABLATION_NAMES.get(ablation, f"{METHOD_NAMES.get(method, method)} ({ablation})")
    return METHOD_NAMES.get(method, method)


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
