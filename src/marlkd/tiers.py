"""Dataset tiers made the way OG-MARL makes its datasets: from the policies an expert's PPO training passed
through, rather than by mixing the final expert with random actions (the paper's ``normal`` and ``poor``).

- ``medium`` / ``early``: the kept training checkpoint whose measured normalized score is closest to 1/2 /
  1/4 (OG-MARL's Medium and Poor), acting by sampling from its action distribution, as during training;
- ``replay``: episodes from every kept checkpoint in equal shares, in training order: the behaviour the
  training went through (its rollouts are not kept; the policies that made them are);
- ``mixed``: in each episode each agent acts, for the whole episode, from a policy drawn uniformly and
  independently from {expert, medium, early, uniform random}: a team of mixed skill, in which a model that
  sees every agent can tell the good agents' behaviour from the bad.

Every draw comes from the collector's generator, so the same call remakes a file bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.data.collect import ActFn, random_act_fn
from marlkd.errors import MarlkdError
from marlkd.ppo import load_ppo_policy

# Normalized score the single-checkpoint tiers aim at (the closest kept checkpoint is taken).
CHECKPOINT_TARGETS = {"medium": 0.5, "early": 0.25}
CHECKPOINT_TIERS = ("medium", "early", "replay", "mixed")
# Tiers whose making measures the checkpoints' scores (``calibration_episodes`` matters to them).
CALIBRATED_TIERS = ("medium", "early", "mixed")


def kept_checkpoints(expert_dir: str | Path) -> list[Path]:
    """The checkpoints an expert's training kept (``checkpoints/step_*.pt``), in training order."""
    found = sorted((Path(expert_dir) / "checkpoints").glob("step_*.pt"))
    if len(found) < 2:
        raise MarlkdError(
            f"{expert_dir}: {len(found)} kept training checkpoint(s) under checkpoints/; checkpoint tiers "
            f"need at least 2 (train the expert with checkpoints >= 2)"
        )
    return found


class EpisodePolicies:
    """A collection ``act_fn`` in which each (episode, agent) acts from one policy of a pool for the whole
    episode. ``assign(start, num_envs, rng) -> (B, N)`` pool indices is called when a chunk of episodes
    starts (``start``: the index of its first episode); :meth:`on_reset` is the collector's hook for it."""

    def __init__(
        self,
        pool: Sequence[ActFn],
        assign: Callable[[int, int, int, np.random.Generator], np.ndarray],
        n_agents: int,
    ):
        self.pool = list(pool)
        self.assign = assign
        self.n_agents = n_agents
        self.assignment: np.ndarray | None = None  # (B, N) pool indices of the running episodes

    def on_reset(self, start: int, num_envs: int, rng: np.random.Generator) -> None:
        self.assignment = self.assign(start, num_envs, self.n_agents, rng)

    def __call__(self, obs: np.ndarray, action_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.assignment is None or self.assignment.shape[0] != obs.shape[0]:
            raise RuntimeError("EpisodePolicies: on_reset must be called before each chunk of episodes")
        actions = np.zeros(self.assignment.shape, dtype=np.int64)  # (B, N)
        for index in np.unique(self.assignment):
            uses = self.assignment == index  # (B, N)
            rows = uses.any(axis=1)  # copies in which some agent acts from this policy
            chosen = np.asarray(self.pool[index](obs[rows], action_mask[rows], rng))
            actions[rows] = np.where(uses[rows], chosen, actions[rows])
        return actions


def _closest(scores: list[float], target: float) -> int:
    return int(np.argmin([abs(score - target) for score in scores]))


def checkpoint_tier(
    quality: str,
    expert_dir: str | Path,
    expert_act_fn: ActFn,
    n_agents: int,
    episodes: int,
    score: Callable[[ActFn], float],
    sha256: Callable[[Path], str],
) -> tuple[EpisodePolicies, dict[str, Any]]:
    """The ``act_fn`` of a checkpoint tier and what the dataset's ``behavior_policy`` records of it.

    Args:
        quality: one of :data:`CHECKPOINT_TIERS`.
        expert_dir: the expert's directory (its ``checkpoints/`` are the pool).
        expert_act_fn: the final expert, acting as its ``expert.json`` says (``mixed``'s best member).
        n_agents: N of the environment.
        episodes: episodes the dataset will hold (``replay`` splits them in equal shares).
        score: measures an ``act_fn``'s normalized score (the calibration episodes and seed are its own).
        sha256: a file's SHA-256, recorded for every checkpoint used.
    """
    if quality not in CHECKPOINT_TIERS:
        raise ValueError(f"not a checkpoint tier: {quality!r}")
    paths = kept_checkpoints(expert_dir)
    record: dict[str, Any] = {"checkpoints": [{"path": str(p.resolve()), "sha256": sha256(p)} for p in paths]}
    policies = [load_ppo_policy(path, deterministic=False).act_fn for path in paths]

    if quality == "replay":

        def in_training_order(
            start: int, num_envs: int, n_agents: int, rng: np.random.Generator
        ) -> np.ndarray:
            episode = np.arange(start, start + num_envs)  # (B,)
            share = np.minimum(episode * len(paths) // episodes, len(paths) - 1)
            return np.repeat(share[:, None], n_agents, axis=1)

        record.update(
            mechanism="checkpoint_replay",
            description="equal shares of episodes from every kept training checkpoint, in training order, "
            "each sampling from its action distribution",
        )
        return EpisodePolicies(policies, in_training_order, n_agents), record

    scores = [score(policy) for policy in policies]
    for entry, value in zip(record["checkpoints"], scores, strict=True):
        entry["normalized_score"] = value
    picked = {name: _closest(scores, target) for name, target in CHECKPOINT_TARGETS.items()}
    if quality in CHECKPOINT_TARGETS:
        index = picked[quality]

        def one_policy(start: int, num_envs: int, n_agents: int, rng: np.random.Generator) -> np.ndarray:
            return np.zeros((num_envs, n_agents), dtype=np.int64)

        record.update(
            mechanism="checkpoint",
            description="the kept training checkpoint whose normalized score is closest to the target, "
            "sampling from its action distribution",
            target_normalized_score=CHECKPOINT_TARGETS[quality],
            checkpoint=record["checkpoints"][index],
        )
        return EpisodePolicies([policies[index]], one_policy, n_agents), record

    pool = [expert_act_fn, policies[picked["medium"]], policies[picked["early"]], random_act_fn]

    def per_agent_draw(start: int, num_envs: int, n_agents: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(pool), size=(num_envs, n_agents))

    record.update(
        mechanism="mixed_skill",
        description="in each episode each agent acts from a policy drawn uniformly and independently from "
        "(expert, medium checkpoint, early checkpoint, uniform random)",
        pool=[
            "expert",
            record["checkpoints"][picked["medium"]],
            record["checkpoints"][picked["early"]],
            "random",
        ],
    )
    return EpisodePolicies(pool, per_agent_draw, n_agents), record
