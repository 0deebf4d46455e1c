"""The ``marlkd`` command line: a thin layer over the Python API.

Each command group lives in its own module here and exposes ``register(subparsers)``; a command's handler
takes the parsed ``argparse.Namespace`` and returns an exit code.

Command modules import only the standard library and :mod:`marlkd.config` at import time. A command whose
options need heavy imports (the method list needs PyTorch) passes ``fill=`` to ``add_parser``: its options
are added only when that command is the one being run (or asked for ``--help``), so ``marlkd --help`` and
light commands start without loading PyTorch or JAX.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

from marlkd.errors import MarlkdError
from marlkd.threads import apply_threads

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


class _LazySubParsersAction(argparse._SubParsersAction):
    """Subcommands whose options may be added on first use: ``add_parser(name, fill=callback)``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fillers: dict[str, Callable[[argparse.ArgumentParser], None]] = {}

    def add_parser(
        self, name: str, *, fill: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any
    ) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        if fill is not None:
            self._fillers[name] = fill
        return parser

    def fill(self, name: str) -> argparse.ArgumentParser:
        """Add the options of subcommand ``name`` now (once) and return its parser."""
        parser = self._name_parser_map[name]
        callback = self._fillers.pop(name, None)
        if callback is not None:
            callback(parser)
        return parser

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values and values[0] in self._name_parser_map:
            self.fill(values[0])
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose subcommands can be filled lazily (see :class:`_LazySubParsersAction`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _LazySubParsersAction)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """The one ``--quiet`` option (alias ``--no-progress``): no progress bars. Bars are drawn only when
    standard error is a terminal anyway."""
    parser.add_argument(
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        help="no progress bars (they are shown only on a terminal in any case)",
    )


def add_wandb(parser: argparse.ArgumentParser) -> None:
    """``--wandb``: also log to Weights & Biases (needs marlkd[wandb]; WANDB_MODE etc. apply)."""
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log metrics and results to Weights & Biases (pip install 'marlkd[wandb]'; WANDB_MODE, "
        "WANDB_PROJECT apply; MARLKD_WANDB=1 does the same)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="marlkd",
        description="Offline multi-agent RL by sequence modelling and knowledge distillation.",
        epilog="Run `marlkd COMMAND --help` for a command's options.",
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
    """Run the command line; every error ends in one line on stderr and a non-zero exit status.

    A user's mistake (a :class:`MarlkdError`, a file system error, running out of memory) prints one
    line and exits 2. An unexpected internal error prints one line and the file its full traceback was
    written to, and exits 1 (``MARLKD_TRACEBACK=1`` prints the traceback instead)."""
    from marlkd.envs.plugins import import_modules, pop_import_options

    try:
        argv, modules = pop_import_options(list(sys.argv[1:] if argv is None else argv))
        import_modules(modules)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        # before the command computes anything: its --threads where it has one, else the automatic count
        apply_threads(getattr(args, "threads", None))
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is met inside this handler
        return code
    except MarlkdError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("marlkd: interrupted; finished work and the last checkpoint are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (``marlkd ... | head``): stop quietly
        _silence_stdout()
        return 141
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    except MemoryError:
        return _fail("out of memory; lower the batch size, context or number of episodes")
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
            return _fail(f"out of memory ({str(exc).splitlines()[0]}); lower the batch size or context")
        return _internal_error(exc)


def _fail(message: str) -> int:
    print(f"marlkd: error: {message}", file=sys.stderr)
    return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _internal_error(exc: BaseException) -> int:
    text = traceback.format_exc()
    if os.environ.get("MARLKD_TRACEBACK"):
        print(text, file=sys.stderr, end="")
        return 1
    try:
        fd, path = tempfile.mkstemp(prefix="marlkd-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"marlkd {' '.join(sys.argv[1:])}\n{text}")
        where = f"full traceback in {path}"
    except OSError:
        where = "set MARLKD_TRACEBACK=1 to see the traceback"
    first = (str(exc).splitlines() or [""])[0]
    print(f"marlkd: internal error: {type(exc).__name__}: {first} ({where})", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
