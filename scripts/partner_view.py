"""Does an expert use what its partners see? The centralized expert's return as trained, and with each agent
acting on its partners' observations taken from another episode (copy ``b + 1`` of the batch), so that its
action can use only its own view; beside it, experts whose actors see only their own agent (MAPPO).

    python scripts/partner_view.py --expert runs/data/experts/grid-world-coop \
        --decentralized runs/diag/coop-mappo --episodes 1000

A centralized expert that loses little when its partners' views are scrambled, or that a decentralized
expert matches, acts on information a decentralized agent has: its data leave a centralized model little
to know that a decentralized one does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from marlkd.experts import ExpertInfo, load_expert
from marlkd.experts.training import REFERENCE_SEED, mean_return
from marlkd.threads import apply_threads


def partner_blind(act_fn):
    """``act_fn`` with agent i's action computed on partners' observations from the next copy of the batch."""

    def act(obs: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        n = obs.shape[1]
        actions = np.empty(obs.shape[:2], dtype=np.int64)
        others = np.roll(obs, 1, axis=0)  # (B, N, O): another episode's observations
        for i in range(n):
            view = others.copy()
            view[:, i] = obs[:, i]
            actions[:, i] = act_fn(view, mask, rng)[:, i]
        return actions

    return act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expert", required=True, type=Path, help="a centralized expert's directory")
    parser.add_argument(
        "--decentralized", nargs="*", type=Path, default=[], help="MAPPO experts' directories (same env)"
    )
    parser.add_argument("--episodes", type=int, default=1000)
    args = parser.parse_args()
    apply_threads()
    info = ExpertInfo.load(args.expert)
    policy = load_expert(args.expert)
    blind_fn = partner_blind(policy.act_fn)
    blind, _ = mean_return(info.env_id, info.env_kwargs, blind_fn, args.episodes, REFERENCE_SEED)
    print(f"{info.env_id} {info.env_kwargs}")
    print("| policy | return |\n| --- | ---: |")
    print(f"| random | {info.random_return:.2f} |")
    print(f"| centralized expert ({info.ppo['mode']}) | {info.expert_return:.2f} |")
    print(f"| centralized expert, partners' views from another episode | {blind:.2f} |")
    for directory in args.decentralized:
        other = ExpertInfo.load(directory)
        if (other.env_id, other.env_kwargs) != (info.env_id, info.env_kwargs):
            raise SystemExit(f"{directory} was trained on {other.env_id} {other.env_kwargs}")
        print(f"| decentralized expert ({other.ppo['mode']}, {directory.name}) | {other.expert_return:.2f} |")


if __name__ == "__main__":
    main()
