"""Sweep specifications: an experiment as data (a TOML file), expanded into independent, identified runs.

A :class:`SweepSpec` names a grid (environments x methods x seeds x settings), fixed overrides of the
training, evaluation and algorithm configs, a smaller ``quick`` variant and the report's layout.
:func:`expand` turns it into :class:`RunSpec` objects, each with a stable id: a readable prefix and a short
hash of the run's canonical JSON, so the same run always lands in the same directory and a finished run
is recognised on the next launch. The file format is described in ``docs/experiments.md``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from marlkd.config import PRECISIONS
from marlkd.errors import ConfigError, MarlkdError
from marlkd.names import ABLATIONS, QUALITIES, SCRATCH

KINDS = ("offline", "finetune")
ABLATION_METHOD = "ours"
DEFAULT_RUN_FN = "marlkd.experiments.runner:train_run"
# With ``share_teacher``, ours's runs keep their teachers in this folder of the sweep's directory.
TEACHERS_DIR = "teachers"
# Results-table columns a report may group by (``variant``: the method, or the ablation of ``ours``).
GROUP_COLUMNS = (
    "variant",
    "method",
    "ablation",
    "precision",
    "env",
    "quality",
    "num_trajectories",
    "steps",
    "eval_episodes",
    "dataset_episodes",
)
PLOT_AXES = ("num_trajectories", "train_steps", "wall_time_s", "env_steps")
# An expert budget ([expert] tables): what the datasets' experts and tiers are made with, when not the
# defaults of marlkd.experts (the recipe's PPO steps, 1,000 reference and 512 calibration episodes).
EXPERT_KEYS = ("steps_scale", "reference_episodes", "calibration_episodes")

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


@dataclass(frozen=True)
class Settings:
    """The setting axes of a grid; every combination of their values is a run (per env, method, seed).

    Attributes:
        quality: dataset quality tiers (``good``, ``normal``, ``poor``, ``random``).
        num_trajectories: training episodes taken from the dataset (0: all of them).
        ablation: values of ``ours``'s ``ablation`` switch; empty: not swept (the method's default).
            Other methods ignore this axis.
        precision: values of ``train.precision`` (``auto``, ``fp32``, ``bf16``); empty: not swept (the
            spec's ``[train]`` value, or the default). A finetuning sweep's ``scratch`` ignores it.
        steps: training updates per run (``train.steps``).
        eval_episodes: evaluation episodes per run (``eval.episodes``).
        dataset_episodes: episodes in the dataset that is made for the run.
    """

    quality: tuple[str, ...] = ("good",)
    num_trajectories: tuple[int, ...] = (0,)
    ablation: tuple[str, ...] = ()
    precision: tuple[str, ...] = ()
    steps: tuple[int, ...] = (2000,)
    eval_episodes: tuple[int, ...] = (32,)
    dataset_episodes: tuple[int, ...] = (1000,)


SETTING_KEYS = tuple(f.name for f in fields(Settings))


@dataclass(frozen=True)
class MethodOverrides:
    """Fixed config values for one method: ``train`` (TrainConfig), ``eval`` (EvalConfig) and ``algo``
    (the method's own config) fields."""

    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    algo: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuickSpec:
    """The ``quick`` variant: replacements for seeds, setting axes and config values (None: unchanged), for
    the expert budget (``expert``), and per environment (``per_env``: ``{env: {"expert": budget}}``)."""

    seeds: tuple[int, ...] | None = None
    settings: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    expert: dict[str, Any] = field(default_factory=dict)
    per_env: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, MethodOverrides] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperCell:
    """One cell of a paper's table: the report's row and column values it belongs to (as the spec names
    them, see :func:`paper_key`) and the paper's mean and standard deviation."""

    row: str
    columns: tuple[str, ...]
    mean: float
    std: float


@dataclass(frozen=True)
class PaperValues:
    """A paper's numbers for the report's cells (``[report.paper]``), shown beside ours.

    Attributes:
        source: where the numbers are from (e.g. ``Tseng et al., Table 1``).
        cells: the paper's cells, in the spec's order.
    """

    source: str
    cells: tuple[PaperCell, ...] = ()


@dataclass(frozen=True)
class ReportSpec:
    """How ``marlkd experiment report`` lays out the results table.

    Attributes:
        metric: the metric of the main tables (a ``metric`` value of the results table).
        rows: the column whose values are table rows (one of :data:`GROUP_COLUMNS`).
        columns: the columns whose value combinations are table columns.
        extra_metrics: further metrics tabulated in the same layout (e.g. ``train_time_s``).
        plots: x-axes to plot the metric against, from :data:`PLOT_AXES`: ``num_trajectories`` (final
            metric against the setting) or a learning-curve axis (``train_steps``, ``wall_time_s``,
            ``env_steps``).
        curve_metric: the learning-curve metric (``curve:<metrics.csv column>``); empty: the first
            curve metric whose name holds ``return``.
        aggregate_metric: a metric comparable across environments (e.g. a normalized score); when the
            table has it, the report adds the IQM over all tasks with a stratified bootstrap interval.
        paper: the paper's mean and std of ``metric`` per cell, for the report's "Beside the paper"
            section (None: no such section). Not part of the run ids.
    """

    metric: str = "return_mean"
    rows: str = "variant"
    columns: tuple[str, ...] = ("env",)
    extra_metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    curve_metric: str = ""
    aggregate_metric: str = "normalized_score"
    paper: PaperValues | None = None


@dataclass(frozen=True)
class SweepSpec:
    """An experiment: a grid of independent runs, their fixed configuration, and how to report them.

    Attributes:
        name: the sweep's name; its directory is ``<root>/<name>`` (``<name>-quick`` for the quick variant).
        description: one or two sentences for listings and the report.
        kind: ``offline`` (one :func:`marlkd.train.train` run per grid point) or ``finetune`` (online
            MAPPO finetuning; methods are the pretraining method or ``scratch``).
        envs, methods, seeds: the grid's first three axes.
        settings: the setting axes (see :class:`Settings`).
        per_env: per-environment replacements of setting axes, ``env_kwargs`` (constructor arguments) and
            ``expert`` (replacements of the expert budget's values).
        train, eval: TrainConfig / EvalConfig fields for every run.
        overrides: per-method :class:`MethodOverrides`.
        finetune: finetuning settings passed to the run function of a ``finetune`` sweep.
        expert: the expert budget of the datasets (keys of :data:`EXPERT_KEYS`: ``steps_scale``, the
            fraction of the expert recipe's PPO steps; ``reference_episodes``; ``calibration_episodes``);
            empty: ``marlkd.experts``'s defaults.
        quick: the quick variant.
        dataset_seed: seed of the datasets (one dataset per environment, quality and size, shared by seeds).
        share_teacher: the runner points ``algo.teacher_cache`` of every ``ours`` run (offline, or the
            pretraining of a finetuning run) at ``<root>/<sweep>/teachers``, so runs that differ only in
            what the teacher does not depend on (the ablation, the distillation weights) train one teacher
            and share it. Not part of the run ids (it does not change what a run computes).
        run_fn: ``module:function`` that executes one run (see ``marlkd.experiments.runner.RunFn``).
        imports: modules to import before the spec is checked, in the driver and in every worker (they
            register the user's environments; see ``marlkd.envs.plugins``).
        report: the report layout.
        source: where the spec was read from.
    """

    name: str
    description: str = ""
    kind: str = "offline"
    envs: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    settings: Settings = field(default_factory=Settings)
    per_env: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, MethodOverrides] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    expert: dict[str, Any] = field(default_factory=dict)
    quick: QuickSpec = field(default_factory=QuickSpec)
    dataset_seed: int = 0
    share_teacher: bool = False
    run_fn: str = DEFAULT_RUN_FN
    imports: tuple[str, ...] = ()
    report: ReportSpec = field(default_factory=ReportSpec)
    source: str = ""

    def sweep_name(self, quick: bool = False) -> str:
        """The directory name of the sweep's (full or quick) runs and results."""
        return f"{self.name}-quick" if quick else self.name


@dataclass(frozen=True)
class DatasetKey:
    """What identifies a dataset: runs with equal keys share one dataset, made once.

    ``expert`` is the expert budget the dataset is made with (the spec's ``[expert]`` values for the
    environment and variant; empty: the defaults).
    """

    env: str
    quality: str
    episodes: int
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    expert: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The key as a dict, without ``expert`` when it is empty (the default budget), so keys and run ids
        of specs that set no expert budget are what they were before the field existed."""
        data = asdict(self)
        if not data["expert"]:
            del data["expert"]
        return data

    def key(self) -> str:
        """Canonical JSON of the key (hashable, for deduplication)."""
        return canonical_json(self.to_dict())


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything needed to execute it, and its stable id.

    ``config`` is what the run function receives: for an ``offline`` sweep, a ``RunConfig`` as a dict
    without ``data`` and ``out`` (the runner fills them in); for a ``finetune`` sweep, ``init`` (the
    pretraining method or ``scratch``), ``pretrain`` (such a RunConfig dict, or None for ``scratch``),
    ``finetune`` (the sweep's finetuning settings), ``env``, ``env_kwargs`` and ``seed``.
    ``precision`` is the swept ``train.precision`` (empty when the grid does not sweep it).
    """

    sweep: str
    run_id: str
    kind: str
    env: str
    method: str
    seed: int
    quality: str
    num_trajectories: int
    ablation: str
    steps: int
    eval_episodes: int
    dataset_episodes: int
    dataset: DatasetKey
    config: dict[str, Any]
    run_fn: str = DEFAULT_RUN_FN
    precision: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        """The run's setting values, one per results-table setting column."""
        return {key: getattr(self, key) for key in SETTING_KEYS}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dataset"] = self.dataset.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        values = dict(data)
        values["dataset"] = DatasetKey(**values["dataset"])
        return cls(**values)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


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


# ----------------------------------------------------------------------------------------------------
# Parsing and validation


def builtin_spec_names() -> list[str]:
    """Names of the specs shipped with marlkd (``src/marlkd/experiments/specs/*.toml``)."""
    folder = importlib.resources.files("marlkd.experiments").joinpath("specs")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_spec(name_or_path: str | Path) -> SweepSpec:
    """A built-in spec by name (``table1``) or a user's spec from a TOML file path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"spec file {path} does not exist")
        return parse_spec(path.read_text(), source=str(path))
    names = builtin_spec_names()
    if text_name not in names:
        raise ConfigError(
            f"unknown spec {text_name!r}: built-in specs are {', '.join(names)}; "
            "or give the path of a .toml file"
        )
    resource = importlib.resources.files("marlkd.experiments").joinpath("specs").joinpath(f"{text_name}.toml")
    return parse_spec(resource.read_text(), source=f"built-in:{text_name}")


def parse_spec(text: str, source: str = "<string>") -> SweepSpec:
    """Parse and validate a spec from TOML text; errors name ``source`` and the offending key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"spec {source}: not valid TOML: {exc}") from exc
    return spec_from_dict(data, source=source)


_TOP_KEYS = (
    "name",
    "description",
    "kind",
    "dataset_seed",
    "share_teacher",
    "run_fn",
    "imports",
    "grid",
    "per_env",
    "train",
    "eval",
    "overrides",
    "finetune",
    "expert",
    "quick",
    "report",
)
_GRID_KEYS = ("envs", "methods", "seeds", *SETTING_KEYS)
_PER_ENV_KEYS = (*SETTING_KEYS, "env_kwargs", "expert")
_OVERRIDE_KEYS = ("train", "eval", "algo")
_QUICK_KEYS = ("seeds", *SETTING_KEYS, "train", "eval", "finetune", "expert", "per_env", "overrides")
_QUICK_PER_ENV_KEYS = ("expert",)
_REPORT_KEYS = tuple(f.name for f in fields(ReportSpec))
# Config fields that belong to the grid's axes, not to fixed overrides. (``train.precision`` is an axis
# too, but an optional one: a fixed value is refused only where the spec also sweeps it.)
_AXIS_FIELDS = {
    "train": {"steps": "steps", "seed": "seeds", "num_trajectories": "num_trajectories"},
    "eval": {"episodes": "eval_episodes"},
    "algo": {"ablation": "ablation"},
}


class _Reader:
    """Typed access to one TOML table, with errors that name the spec and the key's dotted path."""

    def __init__(self, source: str, table: Any, where: str, known: Sequence[str] | None) -> None:
        self.source, self.where = source, where
        if not isinstance(table, dict):
            self.fail("", f"must be a table, got {type(table).__name__}")
        self.table: dict[str, Any] = table
        if known is not None:
            unknown = sorted(set(table) - set(known))
            if unknown:
                self.fail(unknown[0], f"unknown key (known keys: {', '.join(known)})")

    def path(self, key: str) -> str:
        return ".".join(p for p in (self.where, key) if p)

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"spec {self.source}: {self.path(key) or 'top level'}: {message}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer, got {value!r}")
        return value

    def table_of(self, key: str) -> dict[str, Any]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, got {value!r}")
        return value

    def values(
        self,
        key: str,
        kind: type,
        *,
        allow_count: bool = False,
        allow_empty: bool = False,
        choices: Sequence[Any] | None = None,
        minimum: int | None = None,
    ) -> tuple[Any, ...]:
        """A list axis (a single value counts as a list of one; ``seeds = 3`` means ``[0, 1, 2]``)."""
        value = self.table[key]
        if allow_count and isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.fail(key, f"a seed count must be >= 1, got {value}")
            return tuple(range(value))
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, kind) or isinstance(item, bool):
                self.fail(key, f"must be a list of {kind.__name__}, got {value!r}")
            if choices is not None and item not in choices:
                self.fail(key, f"unknown value {item!r} (choose from {', '.join(map(str, choices))})")
            if minimum is not None and item < minimum:
                self.fail(key, f"values must be >= {minimum}, got {item}")
        if not items and not allow_empty:
            self.fail(key, "must not be empty")
        if len(set(items)) != len(items):
            self.fail(key, f"has repeated values: {value!r}")
        return tuple(items)


def _setting_values(reader: _Reader, key: str) -> tuple[Any, ...]:
    if key == "quality":
        return reader.values(key, str, choices=QUALITIES)
    if key == "ablation":
        return reader.values(key, str, choices=ABLATIONS, allow_empty=True)
    if key == "precision":
        return reader.values(key, str, choices=PRECISIONS, allow_empty=True)
    if key == "num_trajectories":
        return reader.values(key, int, minimum=0)
    return reader.values(key, int, minimum=1)


def _settings_in(reader: _Reader) -> dict[str, tuple[Any, ...]]:
    return {key: _setting_values(reader, key) for key in SETTING_KEYS if key in reader.table}


def _expert_budget(reader: _Reader) -> dict[str, Any]:
    """The ``expert`` table of ``reader``'s table (absent: empty), validated: the budget values it sets."""
    table = _Reader(reader.source, reader.table_of("expert"), reader.path("expert"), EXPERT_KEYS)
    budget: dict[str, Any] = {}
    if "steps_scale" in table.table:
        value = table.table["steps_scale"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
            table.fail(
                "steps_scale",
                f"must be a number in (0, 1] (the fraction of the expert recipe's PPO steps), got {value!r}",
            )
        budget["steps_scale"] = float(value)
    for key in ("reference_episodes", "calibration_episodes"):
        if key in table.table:
            value = table.integer(key, 0)
            if value < 1:
                table.fail(key, f"must be >= 1, got {value}")
            budget[key] = value
    return budget


def _config_table(reader: _Reader, key: str, section: str) -> dict[str, Any]:
    """A fixed-override table (``train``, ``eval`` or ``algo``); fields owned by a grid axis are refused."""
    values = reader.table_of(key)
    for name in values:
        axis = _AXIS_FIELDS.get(section, {}).get(name)
        if axis is not None:
            reader.fail(f"{key}.{name}", f"is a grid axis: set {axis} in [grid] (or [quick]) instead")
    return dict(values)


def _check_precision_axis(
    top: _Reader,
    settings: Settings,
    per_env: Mapping[str, Mapping[str, Any]],
    quick: QuickSpec,
    train: Mapping[str, Any],
    overrides: Mapping[str, MethodOverrides],
) -> None:
    """Refuse a fixed ``train.precision`` in a spec that also sweeps the ``precision`` axis (it would be
    overridden by the axis without a word)."""
    axes = [
        ("grid", settings.precision),
        ("quick", quick.settings.get("precision")),
        *((f"per_env.{env}", entry.get("precision")) for env, entry in per_env.items()),
    ]
    swept = [where for where, values in axes if values]
    if not swept:
        return
    fixed = [
        where
        for where, table in (
            ("train", train),
            ("quick.train", quick.train),
            *((f"overrides.{method}.train", own.train) for method, own in overrides.items()),
        )
        if "precision" in table
    ]
    if fixed:
        top.fail(
            f"{fixed[0]}.precision",
            f"is a grid axis here ({swept[0]}.precision sweeps it): set the precision values there instead",
        )


def spec_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> SweepSpec:
    """Validate a parsed spec (the TOML's tables as dicts) and build the :class:`SweepSpec`."""
    top = _Reader(source, dict(data), "", _TOP_KEYS)
    name = top.text("name")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        top.fail("name", f"must be a non-empty name without spaces or slashes, got {name!r}")
    kind = top.text("kind", "offline")
    if kind not in KINDS:
        top.fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    run_fn = top.text("run_fn", DEFAULT_RUN_FN)
    if run_fn.count(":") != 1 or not all(run_fn.split(":")):
        top.fail("run_fn", f"must be 'module:function', got {run_fn!r}")

    if "grid" not in top.table:
        top.fail("grid", "is required")
    grid = _Reader(source, top.table["grid"], "grid", _GRID_KEYS)
    for key in ("envs", "methods", "seeds"):
        if key not in grid.table:
            grid.fail(key, "is required")
    envs = grid.values("envs", str)
    methods = grid.values("methods", str)
    seeds = grid.values("seeds", int, allow_count=True, minimum=0)
    if SCRATCH in methods and kind != "finetune":
        grid.fail("methods", f"{SCRATCH!r} is a method of finetune sweeps only")
    settings = replace(Settings(), **_settings_in(grid))

    per_env_table = top.table_of("per_env")
    per_env: dict[str, dict[str, Any]] = {}
    for env, table in per_env_table.items():
        reader = _Reader(source, table, f"per_env.{env}", _PER_ENV_KEYS)
        if env not in envs:
            reader.fail("", f"{env!r} is not one of grid.envs")
        entry: dict[str, Any] = dict(_settings_in(reader))
        if "env_kwargs" in reader.table:
            entry["env_kwargs"] = dict(reader.table_of("env_kwargs"))
        if "expert" in reader.table:
            entry["expert"] = _expert_budget(reader)
        per_env[env] = entry

    def method_overrides(reader_of: _Reader, where: str) -> dict[str, MethodOverrides]:
        found: dict[str, MethodOverrides] = {}
        for method, table in reader_of.table_of("overrides").items():
            reader = _Reader(source, table, f"{where}.{method}", _OVERRIDE_KEYS)
            if method not in methods:
                reader.fail("", f"{method!r} is not one of grid.methods")
            found[method] = MethodOverrides(
                **{section: _config_table(reader, section, section) for section in _OVERRIDE_KEYS}
            )
        return found

    overrides = method_overrides(top, "overrides")
    quick_reader = _Reader(source, top.table_of("quick"), "quick", _QUICK_KEYS)
    quick_per_env: dict[str, dict[str, Any]] = {}
    for env, table in quick_reader.table_of("per_env").items():
        reader = _Reader(source, table, f"quick.per_env.{env}", _QUICK_PER_ENV_KEYS)
        if env not in envs:
            reader.fail("", f"{env!r} is not one of grid.envs")
        quick_per_env[env] = {"expert": _expert_budget(reader)}
    quick = QuickSpec(
        seeds=quick_reader.values("seeds", int, allow_count=True, minimum=0)
        if "seeds" in quick_reader.table
        else None,
        settings=_settings_in(quick_reader),
        train=_config_table(quick_reader, "train", "train"),
        eval=_config_table(quick_reader, "eval", "eval"),
        finetune=dict(quick_reader.table_of("finetune")),
        expert=_expert_budget(quick_reader),
        per_env=quick_per_env,
        overrides=method_overrides(quick_reader, "quick.overrides"),
    )
    finetune = dict(top.table_of("finetune"))
    if kind != "finetune" and (finetune or quick.finetune):
        top.fail("finetune", "is only for sweeps of kind 'finetune'")

    report_reader = _Reader(source, top.table_of("report"), "report", _REPORT_KEYS)
    report_values: dict[str, Any] = {}
    for key in ("metric", "rows", "curve_metric", "aggregate_metric"):
        if key in report_reader.table:
            report_values[key] = report_reader.text(key)
    for key in ("columns", "extra_metrics", "plots"):
        if key in report_reader.table:
            report_values[key] = report_reader.values(key, str, allow_empty=key != "columns")
    report = ReportSpec(**report_values)
    if report.rows not in GROUP_COLUMNS:
        report_reader.fail("rows", f"must be one of {', '.join(GROUP_COLUMNS)}, got {report.rows!r}")
    for column in report.columns:
        if column not in GROUP_COLUMNS or column == report.rows:
            report_reader.fail(
                "columns", f"{column!r} must be one of {', '.join(GROUP_COLUMNS)} and differ from report.rows"
            )
    for axis in report.plots:
        if axis not in PLOT_AXES:
            report_reader.fail("plots", f"unknown plot axis {axis!r} (choose from {', '.join(PLOT_AXES)})")
    paper_reader = (
        _Reader(source, report_reader.table_of("paper"), "report.paper", _PAPER_KEYS)
        if "paper" in report_reader.table
        else None
    )

    train = _config_table(top, "train", "train")
    _check_precision_axis(top, settings, per_env, quick, train, overrides)
    share_teacher = top.boolean("share_teacher", False)
    if share_teacher:
        if ABLATION_METHOD not in methods:
            top.fail(
                "share_teacher", f"needs {ABLATION_METHOD!r} in grid.methods (only its runs train a teacher)"
            )
        own = overrides.get(ABLATION_METHOD, MethodOverrides()).algo
        if "teacher_cache" in own:
            top.fail(
                "share_teacher",
                f"the runner sets algo.teacher_cache: remove overrides.{ABLATION_METHOD}.algo.teacher_cache",
            )

    spec = SweepSpec(
        name=name,
        description=top.text("description", ""),
        kind=kind,
        envs=envs,
        methods=methods,
        seeds=seeds,
        settings=settings,
        per_env=per_env,
        train=train,
        eval=_config_table(top, "eval", "eval"),
        overrides=overrides,
        finetune=finetune,
        expert=_expert_budget(top),
        quick=quick,
        dataset_seed=top.integer("dataset_seed", 0),
        share_teacher=share_teacher,
        run_fn=run_fn,
        imports=top.values("imports", str, allow_empty=True) if "imports" in top.table else (),
        report=report,
        source=source,
    )
    # checks the combinations (e.g. trajectories within the dataset) of both variants
    runs = [*expand(spec), *expand(spec, quick=True)]
    if paper_reader is not None:
        spec = replace(spec, report=replace(report, paper=_paper_values(paper_reader, report, runs)))
    return spec


_PAPER_KEYS = ("source", "values")


def _paper_values(reader: _Reader, report: ReportSpec, runs: Sequence[RunSpec]) -> PaperValues:
    """``[report.paper]``: ``source`` and ``values``, a table of row values (as :func:`paper_key` names
    them), each nested by the report's columns in order, down to ``[mean, std]``. Every row and column
    value must be one the grid (full or quick) has."""
    source = reader.text("source")
    if not source.strip():
        reader.fail("source", "must not be empty")
    if "values" not in reader.table:
        reader.fail("values", "is required")
    axes = (report.rows, *report.columns)
    known = [list(dict.fromkeys(paper_key(axis, run) for run in runs)) for axis in axes]
    cells: list[PaperCell] = []

    def walk(table_reader: _Reader, depth: int, keys: tuple[str, ...]) -> None:
        if not table_reader.table:
            table_reader.fail("", "must not be empty")
        for key, value in table_reader.table.items():
            axis = axes[depth]
            if key not in known[depth]:
                table_reader.fail(
                    key, f"unknown {axis} value {key!r} (the grid's {axis} values: {', '.join(known[depth])})"
                )
            if depth + 1 < len(axes):
                walk(
                    _Reader(table_reader.source, value, table_reader.path(key), None), depth + 1, (*keys, key)
                )
                continue
            numbers = value if isinstance(value, list) else None
            if (
                numbers is None
                or len(numbers) != 2
                or any(not isinstance(x, int | float) or isinstance(x, bool) for x in numbers)
            ):
                table_reader.fail(key, f"must be [mean, std] (two numbers), got {value!r}")
            mean, std = float(numbers[0]), float(numbers[1])
            if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
                table_reader.fail(key, f"must be a finite mean and a std >= 0, got {value!r}")
            cells.append(PaperCell(keys[0], (*keys[1:], key), mean, std))

    values = _Reader(reader.source, reader.table["values"], reader.path("values"), None)
    walk(values, 0, ())
    return PaperValues(source=source, cells=tuple(cells))


# ----------------------------------------------------------------------------------------------------
# Expansion


def _merged(*tables: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for table in tables:
        merged.update(table)
    return merged


def _env_settings(spec: SweepSpec, env: str, quick: bool) -> tuple[Settings, dict[str, Any]]:
    entry = dict(spec.per_env.get(env, {}))
    env_kwargs = entry.pop("env_kwargs", {})
    entry.pop("expert", None)
    values = _merged(asdict(spec.settings), entry, spec.quick.settings if quick else {})
    return Settings(**values), env_kwargs


def expert_budget(spec: SweepSpec, env: str, quick: bool = False) -> dict[str, Any]:
    """The expert budget of ``env``'s datasets: ``[expert]``, then ``[per_env.<env>.expert]``, then (quick)
    ``[quick.expert]`` and ``[quick.per_env.<env>.expert]``, key by key, later winning (empty: defaults)."""
    layers = [spec.expert, spec.per_env.get(env, {}).get("expert", {})]
    if quick:
        layers += [spec.quick.expert, spec.quick.per_env.get(env, {}).get("expert", {})]
    return _merged(*layers)


def _run_prefix(
    env: str, method: str, ablation: str, quality: str, num_trajectories: int, precision: str, seed: int
) -> str:
    """``env/method[-ablation]/quality[/n<trajectories>][/<precision>]/s<seed>``: optional parts only when
    set (so the ids of specs that do not sweep them stay as they were)."""
    label = f"{method}-{ablation}" if ablation else method
    parts = [env, label, quality]
    if num_trajectories:
        parts.append(f"n{num_trajectories}")
    if precision:
        parts.append(precision)
    parts.append(f"s{seed}")
    return "/".join(parts)


def run_id_for(prefix: str, identity: Mapping[str, Any]) -> str:
    """``<prefix>-<8 hex digits>``: the digits are a SHA-256 of the identity's canonical JSON."""
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def expand(spec: SweepSpec, quick: bool = False) -> list[RunSpec]:
    """All runs of the sweep (or of its quick variant), in grid order: env, quality, dataset size,
    method, ablation, precision, trajectories, steps, evaluation episodes, seed.

    A run's id hashes what the spec states about it (environment, method, seed, dataset, config values),
    not the code's defaults: a finished run keeps its id when a default changes, and the same run in two
    sweeps gets the same id. The sweep's name and its run function are not part of it.
    """
    seeds = spec.quick.seeds if quick and spec.quick.seeds is not None else spec.seeds
    sweep = spec.sweep_name(quick)
    runs: list[RunSpec] = []
    for env in spec.envs:
        settings, env_kwargs = _env_settings(spec, env, quick)
        where = f"spec {spec.source}: environment {env}{' (quick)' if quick else ''}"
        for quality, dataset_episodes in itertools.product(settings.quality, settings.dataset_episodes):
            for nt in settings.num_trajectories:
                if nt > dataset_episodes:
                    raise ConfigError(
                        f"{where}: num_trajectories {nt} exceeds dataset_episodes {dataset_episodes}"
                    )
            dataset = DatasetKey(
                env,
                quality,
                dataset_episodes,
                spec.dataset_seed,
                dict(env_kwargs),
                expert_budget(spec, env, quick),
            )
            for method in spec.methods:
                pretrain = method if method != SCRATCH else None
                sweeps_ablation = pretrain == ABLATION_METHOD and settings.ablation
                ablations = settings.ablation if sweeps_ablation else ("",)
                precisions = settings.precision if pretrain is not None and settings.precision else ("",)
                combos = itertools.product(
                    ablations,
                    precisions,
                    settings.num_trajectories,
                    settings.steps,
                    settings.eval_episodes,
                    seeds,
                )
                for ablation, precision, nt, steps, eval_episodes, seed in combos:
                    config = _run_config(
                        spec,
                        quick,
                        method,
                        pretrain,
                        ablation,
                        precision,
                        nt,
                        steps,
                        eval_episodes,
                        seed,
                        env,
                        env_kwargs,
                    )
                    identity = {
                        "kind": spec.kind,
                        "env": env,
                        "method": method,
                        "seed": seed,
                        "dataset": dataset.to_dict(),
                        "config": config,
                    }
                    prefix = _run_prefix(env, method, ablation, quality, nt, precision, seed)
                    runs.append(
                        RunSpec(
                            sweep=sweep,
                            run_id=run_id_for(prefix, identity),
                            kind=spec.kind,
                            env=env,
                            method=method,
                            seed=seed,
                            quality=quality,
                            num_trajectories=nt,
                            ablation=ablation,
                            steps=steps,
                            eval_episodes=eval_episodes,
                            dataset_episodes=dataset_episodes,
                            dataset=dataset,
                            config=config,
                            run_fn=spec.run_fn,
                            precision=precision,
                        )
                    )
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"spec {spec.source}: the grid has repeated runs (equal ids); check per_env values")
    return runs


def _run_config(
    spec: SweepSpec,
    quick: bool,
    method: str,
    pretrain: str | None,
    ablation: str,
    precision: str,
    nt: int,
    steps: int,
    eval_episodes: int,
    seed: int,
    env: str,
    env_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The run function's config (see :class:`RunSpec`)."""
    offline: dict[str, Any] | None = None
    if pretrain is not None:
        own = spec.overrides.get(pretrain, MethodOverrides())
        own_quick = spec.quick.overrides.get(pretrain, MethodOverrides()) if quick else MethodOverrides()
        train = _merged(
            spec.train,
            own.train,
            spec.quick.train if quick else {},
            own_quick.train,
            {"steps": steps, "seed": seed, "num_trajectories": nt},
            {"precision": precision} if precision else {},
        )
        evaluation = _merged(
            spec.eval, own.eval, spec.quick.eval if quick else {}, own_quick.eval, {"episodes": eval_episodes}
        )
        algo = _merged(own.algo, own_quick.algo, {"ablation": ablation} if ablation else {})
        offline = {"method": pretrain, "train": train, "eval": evaluation, "algo": algo}
    if spec.kind == "offline":
        assert offline is not None  # scratch is refused for offline sweeps
        return offline
    overrides = spec.overrides.get(method, MethodOverrides())
    finetune = _merged(spec.finetune, spec.quick.finetune if quick else {})
    evaluation = _merged(
        spec.eval, overrides.eval, spec.quick.eval if quick else {}, {"episodes": eval_episodes}
    )
    return {
        "init": method,
        "pretrain": offline,
        "finetune": finetune,
        "env": env,
        "env_kwargs": dict(env_kwargs),
        "seed": seed,
        "eval": evaluation,
    }


def offline_config(run: RunSpec) -> dict[str, Any] | None:
    """The ``RunConfig`` dict (without ``data``/``out``) of the run's offline training: the run's config in
    an offline sweep, its ``pretrain`` in a finetuning sweep (None for ``scratch``)."""
    return run.config if run.kind == "offline" else run.config.get("pretrain")


def with_teacher_cache(run: RunSpec, directory: str | Path) -> RunSpec:
    """The run with ``algo.teacher_cache = directory`` if its offline training is ``ours`` (else unchanged).

    The run id stays: where a teacher is cached does not change what the run computes.
    """
    offline = offline_config(run)
    if offline is None or offline["method"] != ABLATION_METHOD:
        return run
    trained = {**offline, "algo": {**offline["algo"], "teacher_cache": str(directory)}}
    config = trained if run.kind == "offline" else {**run.config, "pretrain": trained}
    return replace(run, config=config)


def teacher_group(run: RunSpec) -> str:
    """Which teacher a run trains: ``ours`` runs with equal keys (same dataset, same config apart from the
    ablation, which changes the distillation, not the teacher) train the same one. Other runs get their
    own key (their id)."""
    offline = offline_config(run)
    if offline is None or offline["method"] != ABLATION_METHOD:
        return run.run_id
    algo = {k: v for k, v in offline["algo"].items() if k not in ("ablation", "teacher_cache")}
    return canonical_json({"dataset": run.dataset.to_dict(), "config": {**offline, "algo": algo}})


def select_runs(
    runs: Iterable[RunSpec],
    envs: Sequence[str] = (),
    methods: Sequence[str] = (),
    max_seeds: int | None = None,
) -> list[RunSpec]:
    """The runs whose environment is in ``envs`` and method in ``methods`` (empty: no filter), and, with
    ``max_seeds``, whose seed is among the first ``max_seeds`` distinct seeds of the grid."""
    runs = list(runs)
    seeds = set(list(dict.fromkeys(run.seed for run in runs))[:max_seeds]) if max_seeds else None
    return [
        run
        for run in runs
        if (not envs or run.env in envs)
        and (not methods or run.method in methods)
        and (seeds is None or run.seed in seeds)
    ]


def check_against_registry(spec: SweepSpec, runs: Sequence[RunSpec] | None = None) -> None:
    """Check the spec against what this installation has: environments, methods and config fields.

    Builds each distinct ``RunConfig`` once (with placeholder paths), so a bad override fails before any
    run starts, with the config field named. Imports torch (through the algorithm registry).
    """
    from marlkd.algos import ALGOS
    from marlkd.envs import list_envs
    from marlkd.envs.registry import describe
    from marlkd.run_config import RunConfig

    known_envs = set(list_envs())
    for env in spec.envs:
        if env not in known_envs:
            raise ConfigError(
                f"spec {spec.source}: grid.envs: unknown environment {env!r}; known: "
                f"{', '.join(sorted(known_envs))}"
            )
    for method in spec.methods:
        if method not in ALGOS and not (spec.kind == "finetune" and method == SCRATCH):
            raise ConfigError(
                f"spec {spec.source}: grid.methods: unknown method {method!r}; registered: "
                f"{', '.join(sorted(ALGOS))}"
            )
    runs = list(runs if runs is not None else expand(spec))
    missing: dict[str, str] = {}
    for env in dict.fromkeys(run.env for run in runs):
        try:
            describe(env)  # imports the environment's module: fails if its optional extra is missing
        except MarlkdError as exc:
            missing[env] = str(exc)
    if missing:
        kept = [env for env in dict.fromkeys(run.env for run in runs) if env not in missing]
        hint = f"; or leave them out: --only-env {' '.join(kept)}" if kept else ""
        reasons = "; ".join(dict.fromkeys(missing.values()))
        raise ConfigError(
            f"spec {spec.source}: cannot make environment(s) {', '.join(missing)}: {reasons}{hint}"
        )
    seen: set[str] = set()
    for run in runs:
        offline = offline_config(run)
        if offline is None:
            continue
        key = canonical_json(
            {k: v for k, v in offline.items() if k != "train"}
            | {"train": {k: v for k, v in offline["train"].items() if k != "seed"}}
        )
        if key in seen:
            continue
        seen.add(key)
        try:
            RunConfig.from_dict({**offline, "data": "<dataset>", "out": "<run>"})
        except ConfigError as exc:
            raise ConfigError(f"spec {spec.source}: method {offline['method']}: {exc}") from exc
