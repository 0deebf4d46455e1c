"""``marlkd train METHOD`` and ``marlkd eval RUN_DIR``: options generated from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marlkd.cli import add_quiet, add_wandb
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
        add_wandb(p)
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
    ev.add_argument("--json", action="store_true", help="print the evaluation summary as JSON")
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


def data_returns(path: str | Path) -> dict[str, Any] | None:
    """The dataset's returns for context beside a policy's: mean and best per-agent episode return, its
    quality and size, and the expert's and random policy's returns where recorded; None if unreadable."""
    from marlkd.cli.dataset import reference_returns
    from marlkd.data.format import load_dataset

    try:
        meta = load_dataset(path).metadata
    except MarlkdError:
        return None
    return {
        "mean": meta.mean_return,
        "best": meta.max_return,
        "quality": meta.quality,
        "episodes": meta.n_episodes,
        "env_id": meta.env_id,
        **reference_returns(meta.behavior_policy),
    }


def format_results(results: dict[str, Any], data: dict[str, Any] | None) -> str:
    """A training or evaluation summary: the policy's return beside the data's (and the expert's)."""
    lines = []
    env_id = results.get("env_id") or (data or {}).get("env_id", "?")
    head = f"{results.get('method', '?')} on {env_id}"
    facts = []
    if "train_steps" in results:
        facts.append(f"{results['train_steps']} updates")
    if "train_time_s" in results:
        facts.append(f"{results['train_time_s']:.0f} s training")
    if results.get("env_steps"):
        facts.append(f"{results['env_steps']:,} environment steps")
    if "precision" in results:
        facts.append(str(results["precision"]))
    lines.append(head + (f" ({', '.join(facts)})" if facts else ""))
    rows: list[tuple[str, str]] = []
    if "return_mean" in results:
        text = f"{results['return_mean']:.4g}"
        if "return_std" in results:
            text += f" ± {results['return_std']:.3g}"
        if "episodes" in results:
            text += f" over {results['episodes']} episodes"
        if data and "expert" in data and "random" in data and data["expert"] != data["random"]:
            score = (results["return_mean"] - data["random"]) / (data["expert"] - data["random"])
            text += f"  (normalized {score:.2f})"
        rows.append(("policy return", text))
    for key, value in results.items():
        if key.endswith("/return_mean") and isinstance(value, float):
            rows.append((f"{key.split('/')[0]} return", f"{value:.4g}"))
    if data:
        rows.append(
            (
                "data return",
                f"mean {data['mean']:.4g}, best {data['best']:.4g} "
                f"({data['quality']}, {data['episodes']} episodes)",
            )
        )
        references = [f"{name} {data[name]:.4g}" for name in ("expert", "random") if name in data]
        if references:
            rows.append(("references", ", ".join(references)))
    lines += [f"  {label:<15} {text}" for label, text in rows]
    lines.append("  (returns: mean per-agent episode return)")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from marlkd.training import train

    config = config_from_arguments(args)
    results = train(config, progress=not args.quiet, wandb=args.wandb or None)
    print(format_results(results, data_returns(config.data)))
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
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        shown = {"method": saved.method, **summary}
        print(format_results(shown, data_returns(saved.data)))
    print(f"written to {run_dir / 'eval.json'}")
    if gif is not None:
        print(f"episode GIF: {gif}")
    return 0
