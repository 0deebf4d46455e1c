"""Experiments as data: sweep specs, resumable runners (a local process pool or Ray), a tidy results
table and reports drawn from it. See ``docs/experiments.md``."""

from __future__ import annotations

from typing import Any

from marlkd.experiments.results import RESULT_COLUMNS, load_results
from marlkd.experiments.runner import FailedRun, RunStatus, SweepSummary, run_sweep, sweep_status, train_run
from marlkd.experiments.spec import (
    DatasetKey,
    RunSpec,
    SweepSpec,
    builtin_spec_names,
    expand,
    load_spec,
    parse_spec,
)


def __getattr__(name: str) -> Any:
    # The report pulls in matplotlib; load it only when asked for.
    if name == "write_report":
        from marlkd.experiments.report import write_report

        return write_report
    raise AttributeError(f"module 'marlkd.experiments' has no attribute {name!r}")


__all__ = [
    "RESULT_COLUMNS",
    "DatasetKey",
    "FailedRun",
    "RunSpec",
    "RunStatus",
    "SweepSpec",
    "SweepSummary",
    "builtin_spec_names",
    "expand",
    "load_results",
    "load_spec",
    "parse_spec",
    "run_sweep",
    "sweep_status",
    "train_run",
    "write_report",
]
