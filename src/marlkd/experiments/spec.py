"""Sweep specifications: an experiment as data (a TOML file), expanded into independent, identified runs.

The jobs live in their own modules; this module gathers their public names:

- :mod:`marlkd.experiments.schema`: :class:`SweepSpec`, :class:`RunSpec`, :class:`DatasetKey` and the
  other dataclasses of a spec;
- :mod:`marlkd.experiments.parsing`: :func:`load_spec` / :func:`parse_spec` (TOML in, validated spec out);
- :mod:`marlkd.experiments.grid`: :func:`expand` (the runs, each with a stable id: a readable prefix and a
  short hash of its canonical JSON), teacher sharing, run selection, the registry check;
- :mod:`marlkd.experiments.display`: display names of methods, ablations and environments.

The file format is described in ``docs/experiments.md``.
"""

from __future__ import annotations

from marlkd.experiments.display import (
    ABLATION_NAMES,
    ENV_NAMES,
    METHOD_NAMES,
    env_name,
    paper_key,
    variant_id,
    variant_name,
)
from marlkd.experiments.grid import (
    check_against_registry,
    expand,
    expert_budget,
    offline_config,
    run_id_for,
    select_runs,
    teacher_group,
    with_teacher_cache,
)
from marlkd.experiments.parsing import (
    builtin_spec_names,
    load_spec,
    parse_spec,
    spec_from_dict,
)
from marlkd.experiments.schema import (
    ABLATION_METHOD,
    DEFAULT_RUN_FN,
    EXPERT_KEYS,
    GROUP_COLUMNS,
    KINDS,
    PLOT_AXES,
    SETTING_KEYS,
    TEACHERS_DIR,
    DatasetKey,
    MethodOverrides,
    PaperCell,
    PaperValues,
    QuickSpec,
    ReportSpec,
    RunSpec,
    Settings,
    SweepSpec,
    canonical_json,
)
from marlkd.names import ABLATIONS, QUALITIES, SCRATCH

__all__ = [
    "ABLATIONS",
    "ABLATION_METHOD",
    "ABLATION_NAMES",
    "DEFAULT_RUN_FN",
    "DatasetKey",
    "ENV_NAMES",
    "EXPERT_KEYS",
    "GROUP_COLUMNS",
    "KINDS",
    "METHOD_NAMES",
    "MethodOverrides",
    "PLOT_AXES",
    "PaperCell",
    "PaperValues",
    "QUALITIES",
    "QuickSpec",
    "ReportSpec",
    "RunSpec",
    "SCRATCH",
    "SETTING_KEYS",
    "Settings",
    "SweepSpec",
    "TEACHERS_DIR",
    "builtin_spec_names",
    "canonical_json",
    "check_against_registry",
    "env_name",
    "expand",
    "expert_budget",
    "load_spec",
    "offline_config",
    "paper_key",
    "parse_spec",
    "run_id_for",
    "select_runs",
    "spec_from_dict",
    "teacher_group",
    "variant_id",
    "variant_name",
    "with_teacher_cache",
]
