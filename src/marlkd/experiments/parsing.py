"""Reading a sweep specification: TOML text (a built-in spec or a user's file) into a validated
:class:`~marlkd.experiments.schema.SweepSpec`; every error names the source and the offending key."""

from __future__ import annotations

import importlib.resources
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from marlkd.config import PRECISIONS
from marlkd.errors import ConfigError
from marlkd.experiments.display import paper_key
from marlkd.experiments.grid import expand
from marlkd.experiments.schema import (
    ABLATION_METHOD,
    DEFAULT_RUN_FN,
    EXPERT_KEYS,
    GROUP_COLUMNS,
    KINDS,
    PLOT_AXES,
    SETTING_KEYS,
    MethodOverrides,
    PaperCell,
    PaperValues,
    QuickSpec,
    ReportSpec,
    RunSpec,
    Settings,
    SweepSpec,
)
from marlkd.names import ABLATIONS, QUALITIES, SCRATCH


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
    name, kind, run_fn = _identity(top)
    envs, methods, seeds, settings = _grid(top, kind)
    per_env = _per_env(top, envs)
    overrides = _method_overrides(top, "overrides", methods)
    quick = _quick(top, envs, methods)
    finetune = dict(top.table_of("finetune"))
    if kind != "finetune" and (finetune or quick.finetune):
        top.fail("finetune", "is only for sweeps of kind 'finetune'")
    report, paper_reader = _report(top)
    train = _config_table(top, "train", "train")
    _check_precision_axis(top, settings, per_env, quick, train, overrides)
    share_teacher = _share_teacher(top, methods, overrides)
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


def _identity(top: _Reader) -> tuple[str, str, str]:
    """The spec's ``name``, ``kind`` and ``run_fn``."""
    name = top.text("name")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        top.fail("name", f"must be a non-empty name without spaces or slashes, got {name!r}")
    kind = top.text("kind", "offline")
    if kind not in KINDS:
        top.fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    run_fn = top.text("run_fn", DEFAULT_RUN_FN)
    if run_fn.count(":") != 1 or not all(run_fn.split(":")):
        top.fail("run_fn", f"must be 'module:function', got {run_fn!r}")
    return name, kind, run_fn


def _grid(top: _Reader, kind: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], Settings]:
    """``[grid]``: environments, methods, seeds and the setting axes."""
    if "grid" not in top.table:
        top.fail("grid", "is required")
    grid = _Reader(top.source, top.table["grid"], "grid", _GRID_KEYS)
    for key in ("envs", "methods", "seeds"):
        if key not in grid.table:
            grid.fail(key, "is required")
    envs = grid.values("envs", str)
    methods = grid.values("methods", str)
    seeds = grid.values("seeds", int, allow_count=True, minimum=0)
    if SCRATCH in methods and kind != "finetune":
        grid.fail("methods", f"{SCRATCH!r} is a method of finetune sweeps only")
    return envs, methods, seeds, replace(Settings(), **_settings_in(grid))


def _per_env(top: _Reader, envs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``[per_env.<env>]``: per-environment setting axes, ``env_kwargs`` and expert budget."""
    per_env: dict[str, dict[str, Any]] = {}
    for env, table in top.table_of("per_env").items():
        reader = _Reader(top.source, table, f"per_env.{env}", _PER_ENV_KEYS)
        if env not in envs:
            reader.fail("", f"{env!r} is not one of grid.envs")
        entry: dict[str, Any] = dict(_settings_in(reader))
        if "env_kwargs" in reader.table:
            entry["env_kwargs"] = dict(reader.table_of("env_kwargs"))
        if "expert" in reader.table:
            entry["expert"] = _expert_budget(reader)
        per_env[env] = entry
    return per_env


def _method_overrides(reader_of: _Reader, where: str, methods: Sequence[str]) -> dict[str, MethodOverrides]:
    """``[<where>.<method>]`` tables of fixed ``train``, ``eval`` and ``algo`` values."""
    found: dict[str, MethodOverrides] = {}
    for method, table in reader_of.table_of("overrides").items():
        reader = _Reader(reader_of.source, table, f"{where}.{method}", _OVERRIDE_KEYS)
        if method not in methods:
            reader.fail("", f"{method!r} is not one of grid.methods")
        found[method] = MethodOverrides(
            **{section: _config_table(reader, section, section) for section in _OVERRIDE_KEYS}
        )
    return found


def _quick(top: _Reader, envs: Sequence[str], methods: Sequence[str]) -> QuickSpec:
    """``[quick]``: the quick variant's replacements."""
    quick_reader = _Reader(top.source, top.table_of("quick"), "quick", _QUICK_KEYS)
    quick_per_env: dict[str, dict[str, Any]] = {}
    for env, table in quick_reader.table_of("per_env").items():
        reader = _Reader(top.source, table, f"quick.per_env.{env}", _QUICK_PER_ENV_KEYS)
        if env not in envs:
            reader.fail("", f"{env!r} is not one of grid.envs")
        quick_per_env[env] = {"expert": _expert_budget(reader)}
    return QuickSpec(
        seeds=quick_reader.values("seeds", int, allow_count=True, minimum=0)
        if "seeds" in quick_reader.table
        else None,
        settings=_settings_in(quick_reader),
        train=_config_table(quick_reader, "train", "train"),
        eval=_config_table(quick_reader, "eval", "eval"),
        finetune=dict(quick_reader.table_of("finetune")),
        expert=_expert_budget(quick_reader),
        per_env=quick_per_env,
        overrides=_method_overrides(quick_reader, "quick.overrides", methods),
    )


def _report(top: _Reader) -> tuple[ReportSpec, _Reader | None]:
    """``[report]``: the layout, and a reader of ``[report.paper]`` when there is one (read once the runs
    are known)."""
    report_reader = _Reader(top.source, top.table_of("report"), "report", _REPORT_KEYS)
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
        _Reader(top.source, report_reader.table_of("paper"), "report.paper", _PAPER_KEYS)
        if "paper" in report_reader.table
        else None
    )
    return report, paper_reader


def _share_teacher(top: _Reader, methods: Sequence[str], overrides: Mapping[str, MethodOverrides]) -> bool:
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
    return share_teacher


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
