"""``marlkd demo``: the main job on the embedded default (see :mod:`marlkd.demo`)."""

from __future__ import annotations

import argparse

from marlkd.config import add_dataclass_arguments, dataclass_from_arguments
from marlkd.demo import DemoConfig, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end run: dataset, teacher, students, baselines, table",
        description="Make a Grid-World dataset, train BC, IDT, MADT and ours on it, "
        "evaluate them decentralized and print a results table.",
    )
    add_dataclass_arguments(p, DemoConfig)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    run_demo(dataclass_from_arguments(DemoConfig, args), progress=not args.quiet)
    return 0
