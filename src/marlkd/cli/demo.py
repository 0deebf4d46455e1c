"""``marlkd demo``: the main job on the embedded default (see :mod:`marlkd.demo`)."""

from __future__ import annotations

import argparse

from marlkd.cli import add_quiet
from marlkd.config import add_dataclass_arguments, dataclass_from_arguments


def _fill(p: argparse.ArgumentParser) -> None:
    from marlkd.demo import DemoConfig  # late: imports the methods (PyTorch)

    add_dataclass_arguments(p, DemoConfig, title="demo")
    add_quiet(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end run: dataset, teacher, students, baselines, table",
        description="Make a Grid-World dataset, train BC, IDT, MADT and ours on it, "
        "evaluate them decentralized and print a results table.",
        fill=_fill,
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from marlkd.demo import DemoConfig, run_demo

    run_demo(dataclass_from_arguments(DemoConfig, args), progress=not args.quiet)
    return 0
