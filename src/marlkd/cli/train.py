"""``marlkd train METHOD`` and ``marlkd eval RUN_DIR``: options generated from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from marlkd.cli import add_quiet
from marlkd.config import (
    EvalConfig,
    TrainConfig,
    add_dataclass_arguments,
    dataclass_from_arguments,
    summary_line,
)
from marlkd.errors import MarlkdError

if TYPE_CHECKING:
    from marlkd.run_config import RunConfig

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# Evaluation options that only make sense while training (not for `marlkd eval`).
_TRAINING_ONLY_EVAL_FIELDS = ("every",)


def _algo_prefix(config_cls: type) -> str:
    # algorithm options go without a prefix unless a name collides with a training option
    names = {f.name for f in dataclasses.fields(config_cls)}
    return "algo" if names & _TRAIN_FIELDS else ""


def _fill_methods(train: argparse.ArgumentParser) -> None:
    from marlkd.algos import ALGOS  # late: the method modules import PyTorch

    methods = train.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, entry in ALGOS.items():
        methods.add_parser(
            name, help=entry.description, description=entry.description, fill=_method_filler(name)
        )


def _method_filler(name: str):
    def fill(p: argparse.ArgumentParser) -> None:
        from marlkd.algos import ALGOS

        entry = ALGOS[name]
        p.add_argument("--data", required=True, metavar="FILE", help="HDF5 dataset file")
        p.add_argument(
            "--out", required=True, metavar="DIR", help="run directory (created; resumed when it exists)"
        )
        p.add_argument(
            "--config",
            metavar="FILE",
            help="a config.json to start from (options given here override it)",
        )
        add_quiet(p)
        add_dataclass_arguments(p, TrainConfig, title="training")
        add_dataclass_arguments(
            p, EvalConfig, prefix="eval", title="evaluation (after training; --eval-every: during it too)"
        )
        summary = summary_line(entry.config_cls)
        add_dataclass_arguments(
            p,
            entry.config_cls,
            prefix=_algo_prefix(entry.config_cls),
            title=f"{name} — {summary}" if summary else f"{name} options",
        )
        p.set_defaults(func=_train)

    return fill


def _fill_eval(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a `marlkd train` run directory")
    add_dataclass_arguments(ev, EvalConfig, title="evaluation", exclude=_TRAINING_ONLY_EVAL_FIELDS)
    add_quiet(ev)


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser(
        "train",
        help="train a method on an offline dataset",
        description="Train METHOD on an HDF5 dataset; resumes RUN_DIR if it was killed. "
        "`marlkd train METHOD --help` lists the method's options.",
        fill=_fill_methods,
    )
    ev = subparsers.add_parser(
        "eval",
        help="evaluate a trained run directory",
        description="Decentralized evaluation of a trained run (options not given: the run's own).",
        fill=_fill_eval,
    )
    ev.set_defaults(func=_eval)


def config_from_arguments(args: argparse.Namespace) -> RunConfig:
    from marlkd.algos import ALGOS
    from marlkd.run_config import RunConfig

    entry = ALGOS[args.method]
    base = RunConfig.load(args.config) if args.config else None
    if base is not None and base.method != args.method:
        raise MarlkdError(f"{args.config} is a {base.method!r} config, not {args.method!r}")
    return RunConfig(
        method=args.method,
        data=args.data,
        out=args.out,
        train=dataclass_from_arguments(TrainConfig, args, base=base.train if base else None),
        eval=dataclass_from_arguments(EvalConfig, args, prefix="eval", base=base.eval if base else None),
        algo=dataclass_from_arguments(
            entry.config_cls, args, prefix=_algo_prefix(entry.config_cls), base=base.algo if base else None
        ),
    )


def _print_results(results: dict) -> None:
    keys = (
        "method",
        "env_id",
        "return_mean",
        "return_std",
        "episodes",
        "train_steps",
        "train_time_s",
        "env_steps",
        "precision",
    )
    for key in keys:
        if key in results:
            value = results[key]
            print(f"{key:>14}: {value:.4g}" if isinstance(value, float) else f"{key:>14}: {value}")
    extra = {k: v for k, v in results.items() if k.endswith("/return_mean")}
    for key, value in extra.items():
        print(f"{key:>14}: {value:.4g}")


def _train(args: argparse.Namespace) -> int:
    from marlkd.training import train

    config = config_from_arguments(args)
    results = train(config, progress=not args.quiet)
    _print_results(results)
    print(f"run directory: {Path(config.out)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from marlkd.run_config import RunConfig
    from marlkd.training import evaluate_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").exists():
        raise MarlkdError(f"{run_dir}: not a run directory (no config.json)")
    saved = RunConfig.load(run_dir / "config.json")
    eval_cfg = dataclass_from_arguments(EvalConfig, args, base=saved.eval)
    gif = run_dir / "eval.gif" if eval_cfg.gif else None
    summary = evaluate_run(run_dir, eval_cfg, gif=gif)
    print(json.dumps(summary, indent=2))
    print(f"written to {run_dir / 'eval.json'}")
    if gif is not None:
        print(f"episode GIF: {gif}")
    return 0
