"""``marlkd expert train`` (train an environment's PPO expert) and ``marlkd collect`` (make a dataset)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from marlkd.cli import add_quiet
from marlkd.errors import MarlkdError
from marlkd.names import QUALITIES

# Measured PPO training speed of the native environments' experts (environment steps per second on one
# CPU core; docs/experts.md: 500k steps in about 80 s for fill-in, 31 s equal-space, 52 s grid-world).
_MEASURED_STEPS_PER_S = {"fill-in": 6_000, "equal-space": 16_000, "grid-world": 9_500}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("expert", help="train PPO experts that make the datasets")
    commands = parser.add_subparsers(dest="expert_command", metavar="SUBCOMMAND", required=True)
    train = commands.add_parser(
        "train",
        help="train an environment's expert (centralized PPO; MAPPO for smax-*)",
        description="Train ENV's expert into DIR with PPO, keeping checkpoints along the way, then measure "
        "its return and the uniform random policy's (the references of the normalized score).",
        fill=_fill_train,
    )
    train.set_defaults(func=_train)

    collect = subparsers.add_parser(
        "collect",
        help="collect a dataset of one quality (good, normal, poor, medium, early, replay, mixed, random)",
        description="Collect EPISODES episodes on ENV with the behaviour of --quality into FILE. Without "
        "--expert, the expert is trained first (or reused) in experts/ENV next to FILE; the command says "
        "so, with the training budget, before it starts.",
    )
    collect.add_argument("env", metavar="ENV", help="environment id (see `marlkd envs`)")
    collect.add_argument(
        "--quality",
        required=True,
        choices=QUALITIES,
        help="good: the expert; normal/poor: the expert mixed with random actions (normalized score ~1/2, "
        "~1/4); medium/early: the expert's training checkpoint closest to 1/2, 1/4; replay: every kept "
        "checkpoint in equal shares; mixed: each agent of an episode from expert, medium, early or random",
    )
    collect.add_argument("--episodes", type=int, required=True, metavar="N", help="episodes to collect")
    collect.add_argument("--out", required=True, metavar="FILE", help="dataset file to write (.h5)")
    collect.add_argument("--expert", default=None, metavar="DIR", help="a trained expert directory")
    collect.add_argument("--seed", type=int, default=0, help="collection seed (default: 0)")
    collect.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    collect.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    add_quiet(collect)
    collect.set_defaults(func=_collect)


def _fill_train(train: argparse.ArgumentParser) -> None:
    from marlkd.ppo import MODES  # late: imports PyTorch

    train.add_argument("env", metavar="ENV", help="environment id (see `marlkd envs`)")
    train.add_argument("--out", required=True, metavar="DIR", help="expert directory to write")
    train.add_argument("--steps", type=int, default=None, help="environment steps (default: the recipe's)")
    train.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    train.add_argument("--mode", choices=MODES, default=None, help="override the recipe's PPO mode")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    add_quiet(train)


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _check_env(env_id: str) -> None:
    """Fail on an unknown environment (or one whose extra is missing) before anything is written."""
    from marlkd.envs import env_spec

    try:
        env_spec(env_id)
    except ImportError as exc:
        from marlkd.errors import ConfigError

        raise ConfigError(
            f"environment {env_id!r} needs a package that is not installed ({exc}); see `marlkd envs`"
        ) from exc


def expert_budget_text(env_id: str, steps: int) -> str:
    """'N environment steps of PPO' plus, where measured, roughly how long that takes on one CPU core."""
    rate = _MEASURED_STEPS_PER_S.get(env_id)
    text = f"{steps:,} environment steps of PPO"
    if rate is None:
        return text
    seconds = steps / rate
    duration = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{text}, roughly {duration} on one CPU core"


def _train(args: argparse.Namespace) -> int:
    _check_env(args.env)
    _set_threads(args.threads)
    from marlkd import experts

    info = experts.train_expert(
        args.env, args.out, steps=args.steps, seed=args.seed, mode=args.mode, progress=not args.quiet
    )
    acting = "greedy" if info.deterministic else "sampled"
    print(f"expert written to {args.out} ({info.env_steps} environment steps, {info.wall_time_s:.0f} s)")
    print(
        f"mean per-agent episode return over {info.reference_episodes} episodes: "
        f"expert {info.expert_return:.4g} ({acting}; sampled {info.expert_return_sampled:.4g}, "
        f"greedy {info.expert_return_greedy:.4g}), random {info.random_return:.4g}"
    )
    return 0


def _collect(args: argparse.Namespace) -> int:
    _check_env(args.env)
    _set_threads(args.threads)
    from marlkd import experts
    from marlkd.data.format import load_dataset

    out = Path(args.out)
    if not str(args.out).strip():
        raise MarlkdError("--out: an empty path; name the dataset file to write")
    if out.is_dir():
        raise MarlkdError(f"--out {out}: is a directory; name the dataset file to write")
    if out.exists() and not args.overwrite:
        raise MarlkdError(f"--out {out}: exists; pass --overwrite to replace it")
    if args.episodes < 1:
        raise MarlkdError(f"--episodes: must be >= 1, got {args.episodes}")
    expert_dir = args.expert
    if expert_dir is None and args.quality != "random":
        default = experts.default_expert_dir(args.env, out.parent)
        if (default / experts.EXPERT_INFO_FILE).is_file():
            print(f"using the expert in {default}")
        else:
            budget = expert_budget_text(args.env, experts.expert_config(args.env).total_steps)
            print(
                f"no --expert given: training {args.env}'s expert into {default} first ({budget}); "
                f"it is reused by later collections",
                flush=True,
            )
        expert_dir = experts.ensure_expert(args.env, out.parent, progress=not args.quiet)
    experts.make_dataset(
        args.env,
        args.quality,
        args.episodes,
        out,
        expert_dir=expert_dir,
        seed=args.seed,
        progress=not args.quiet,
    )
    metadata = load_dataset(out).metadata
    score = "n/a" if math.isnan(metadata.normalized_score) else f"{metadata.normalized_score:.3f}"
    print(
        f"wrote {out}: {metadata.n_episodes} episodes of quality {metadata.quality}, mean per-agent return "
        f"{metadata.mean_return:.4g}, normalized score {score}"
    )
    return 0
