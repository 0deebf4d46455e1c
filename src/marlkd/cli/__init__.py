"""The ``marlkd`` command line: a thin layer over the Python API.

Each command group lives in its own module here and exposes ``register(subparsers)``; a command's handler
takes the parsed ``argparse.Namespace`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from marlkd.errors import MarlkdError

# Command modules, in the order their commands are listed in ``marlkd --help``.
_COMMAND_MODULES = (
    "marlkd.cli.demo",
    "marlkd.cli.envs",
    "marlkd.cli.dataset",
    "marlkd.cli.expert",
    "marlkd.cli.train",
    "marlkd.cli.finetune",
    "marlkd.cli.experiment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marlkd",
        description="Offline multi-agent RL by sequence modelling and knowledge distillation.",
    )
    parser.add_argument(  # taken out of the arguments by main() before parsing; here for --help
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import MODULE first (it registers your environments or evaluators; also in sweep workers); "
        "repeatable, accepted anywhere on the line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command group not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from marlkd.envs.plugins import import_modules, pop_import_options

    try:
        argv, modules = pop_import_options(list(sys.argv[1:] if argv is None else argv))
        import_modules(modules)
    except MarlkdError as exc:
        print(f"marlkd: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MarlkdError as exc:
        print(f"marlkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("marlkd: interrupted; finished work and the last checkpoint are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
