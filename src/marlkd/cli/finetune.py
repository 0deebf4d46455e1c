"""``marlkd finetune RUN_DIR``: MAPPO from a trained method's policy against MAPPO from scratch."""

from __future__ import annotations

import argparse
from dataclasses import replace

from marlkd.cli import add_quiet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="finetune a trained policy online with MAPPO, against MAPPO from scratch",
        description="Train MAPPO for --steps environment steps starting from the decentralized policy of "
        "the training run RUN_DIR (ours, idt, madt, bc, icq, gail, airl), and MAPPO from scratch with the "
        "same budget; write both learning curves (CSV and one PNG) and results.json into --out.",
        fill=_fill,
    )
    parser.set_defaults(func=_finetune)


def _fill(parser: argparse.ArgumentParser) -> None:
    from marlkd.finetune import FinetuneConfig  # late: imports PyTorch

    defaults = FinetuneConfig()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished `marlkd train` run directory")
    parser.add_argument(
        "--steps",
        type=int,
        default=defaults.env_steps,
        help=f"environment steps per run ({defaults.env_steps})",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"PPO seed ({defaults.seed})")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (RUN_DIR/finetune)")
    parser.add_argument(
        "--num-envs", type=int, default=defaults.num_envs, help=f"environment copies ({defaults.num_envs})"
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=defaults.eval_episodes,
        help=f"greedy evaluation episodes of each final policy ({defaults.eval_episodes})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    add_quiet(parser)


def _finetune(args: argparse.Namespace) -> int:
    import torch

    from marlkd.finetune import FinetuneConfig, finetune

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = replace(
        FinetuneConfig(),
        env_steps=args.steps,
        seed=args.seed,
        num_envs=args.num_envs,
        eval_episodes=args.eval_episodes,
    )
    results = finetune(args.run_dir, config, args.out, progress=not args.quiet)
    for init, run in results["runs"].items():
        evaluation = f", greedy evaluation {run['return_mean']:.4g}" if "return_mean" in run else ""
        print(
            f"{init}: {run['env_steps']} environment steps, final training return "
            f"{run['final_train_return']:.4g}{evaluation}"
        )
    return 0
