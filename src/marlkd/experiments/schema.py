"""The schema of a sweep specification: an experiment as data (a TOML file) and the runs it expands to.

A :class:`SweepSpec` names a grid (environments x methods x seeds x settings), fixed overrides of the
training, evaluation and algorithm configs, a smaller ``quick`` variant and the report's layout; a
:class:`RunSpec` is one run of it. Reading a spec is :mod:`marlkd.experiments.parsing`, expanding it into
runs :mod:`marlkd.experiments.grid`; the file format is described in ``docs/experiments.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
PLOT_AXES = ("num_trajectories", "train_steps", "wall_time_s", "env_steps", "diagnostics")
# An expert budget ([expert] tables): what the datasets' experts and tiers are made with, when not the
# defaults of marlkd.experts (the recipe's PPO steps, 1,000 reference and 512 calibration episodes).
EXPERT_KEYS = ("steps_scale", "reference_episodes", "calibration_episodes")


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
            metric against the setting), a learning-curve axis (``train_steps``, ``wall_time_s``,
            ``env_steps``), or ``diagnostics`` (``ours``'s distillation diagnostics against updates, one
            figure per task).
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
