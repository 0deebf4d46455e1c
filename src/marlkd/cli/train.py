"""``marlkd train METHOD`` and ``marlkd eval RUN_DIR``: options generated from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from marlkd.algos import ALGOS
from marlkd.config import (
    EvalConfig,
    TrainConfig,
    add_dataclass_arguments,
    dataclass_from_arguments,
)
from marlkd.errors import MarlkdError
from marlkd.run_config import RunConfig

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _algo_prefix(config_cls: type) -> str:
    # algorithm options go without a prefix unless a name collides with a training option
    names = {f.name for f in dataclasses.fields(config_cls)}
    return "algo" if names & _TRAIN_FIELDS else ""


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a method on an offline dataset",
        description="Train METHOD on an HDF5 dataset; resumes RUN_DIR if it was killed.",
    )
    methods = train.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, entry in ALGOS.items():
        p = methods.add_parser(name, help=entry.description, description=entry.description)
        p.add_argument("--data", required=True, help="HDF5 dataset file")
        p.add_argument("--out", required=True, help="run directory (created; resumed when it exists)")
        p.add_argument("--config", help="a config.json to start from (options given here override it)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        add_dataclass_arguments(p, TrainConfig)
        add_dataclass_arguments(p, EvalConfig, prefix="eval")
        add_dataclass_arguments(p, entry.config_cls, prefix=_algo_prefix(entry.config_cls))
        p.set_defaults(func=_train)

    ev = subparsers.add_parser(
        "eval",
        help="evaluate a trained run directory",
        description="Decentralized evaluation of a trained run.",
    )
    ev.add_argument("run_dir")
    add_dataclass_arguments(ev, EvalConfig)
    ev.set_defaults(func=_eval)


def config_from_arguments(args: argparse.Namespace) -> RunConfig:
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
