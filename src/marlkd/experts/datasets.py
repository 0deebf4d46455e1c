"""The datasets an expert makes, one quality tier each (:func:`make_dataset`): ``good`` (the expert),
``normal`` and ``poor`` (the expert mixed with uniform random actions, epsilon found by bisection so that
the normalized score is about 1/2 and 1/4: :func:`calibrate_epsilon`), the checkpoint tiers of
:mod:`marlkd.tiers`, and ``random``. The file records how it was made (``behavior_policy``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.data.collect import collect_episodes, random_act_fn
from marlkd.data.format import write_dataset
from marlkd.envs import env_spec
from marlkd.errors import ConfigError, MarlkdError
from marlkd.experts.training import (
    COLLECT_NUM_ENVS,
    ExpertInfo,
    file_sha256,
    full_kwargs,
    load_expert,
    mean_return,
)
from marlkd.names import QUALITIES
from marlkd.ppo import PPOPolicy
from marlkd.threads import apply_threads
from marlkd.tiers import CALIBRATED_TIERS, CHECKPOINT_TIERS, checkpoint_tier

# Normalized score each tier aims at; good is the expert itself (about 1), random is the zero point.
TIER_TARGETS = {"normal": 0.5, "poor": 0.25}
# Epsilon search: episodes per measurement, bisection steps, seed offset from the dataset's seed.
CALIBRATION_EPISODES = 512
CALIBRATION_STEPS = 10
CALIBRATION_SEED_OFFSET = 7_919


def epsilon_mix_act_fn(policy: PPOPolicy, epsilon: float) -> Any:
    """``act_fn`` where each agent takes a uniform random available action with probability ``epsilon``,
    else the policy's action. All randomness comes from the ``rng`` the collector passes."""

    def act_fn(obs: np.ndarray, action_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        expert = policy.act_fn(obs, action_mask, rng)  # (B, N)
        uniform = random_act_fn(obs, action_mask, rng)  # (B, N)
        explore = rng.random(expert.shape) < epsilon  # (B, N)
        return np.where(explore, uniform, expert)

    return act_fn


def calibrate_epsilon(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    policy: PPOPolicy,
    info: ExpertInfo,
    target: float,
    seed: int,
    episodes: int = CALIBRATION_EPISODES,
    steps: int = CALIBRATION_STEPS,
) -> tuple[float, list[tuple[float, float]]]:
    """Epsilon whose normalized score is about ``target``, by bisection on measured scores.

    Every measurement uses the same ``episodes`` episodes (seed ``seed``), so the score is a smooth,
    nearly monotone function of epsilon. Returns epsilon (linear interpolation inside the final bracket)
    and the search trace ``[(epsilon, normalized score), ...]``.
    """
    low, high = (0.0, 1.0), (1.0, 0.0)  # (epsilon, score): score falls from ~1 to ~0 as epsilon grows
    trace: list[tuple[float, float]] = []
    for _ in range(steps):
        epsilon = (low[0] + high[0]) / 2
        measured, _ = mean_return(env_id, env_kwargs, epsilon_mix_act_fn(policy, epsilon), episodes, seed)
        score = info.normalized(measured)
        trace.append((epsilon, score))
        if score >= target:
            low = (epsilon, score)
        else:
            high = (epsilon, score)
    span = low[1] - high[1]
    fraction = (low[1] - target) / span if span > 0 else 0.5
    return low[0] + min(max(fraction, 0.0), 1.0) * (high[0] - low[0]), trace


def make_dataset(
    env_id: str,
    quality: str,
    episodes: int,
    out: str | Path,
    expert_dir: str | Path | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    calibration_episodes: int | None = None,
) -> Path:
    """Collect ``episodes`` episodes of ``quality`` on ``env_id`` and write them to the HDF5 file ``out``.

    Args:
        quality: ``good``, ``normal``, ``poor``, the checkpoint tiers ``medium``, ``early``, ``replay``,
            ``mixed`` (:mod:`marlkd.tiers`; all need ``expert_dir``) or ``random`` (uses the expert only to
            compute the normalized score, which is NaN without one).
        expert_dir: a directory written by :func:`train_expert` for the same environment arguments.
        seed: collection seed (environment resets and every random draw); the epsilon search of normal
            and poor uses its own episodes derived from it.
        env_kwargs: environment constructor arguments.
        progress: show a progress bar while collecting.
        calibration_episodes: episodes per measurement of normal's and poor's epsilon search and of the
            checkpoint scores of medium, early and mixed (None: :data:`CALIBRATION_EPISODES`).

    Returns:
        The path written. The same arguments (and the same expert checkpoint) give the same file.
    """
    apply_threads()
    calibration = _checked_request(quality, episodes, calibration_episodes)
    kwargs = full_kwargs(env_id, env_kwargs)
    recipe: dict[str, Any] = {
        "name": quality,
        "function": "marlkd.experts.make_dataset",
        "arguments": {
            "env_id": env_id,
            "quality": quality,
            "episodes": episodes,
            "seed": seed,
            "env_kwargs": kwargs,
            "num_envs": COLLECT_NUM_ENVS,
        },
    }
    info = policy = None
    if expert_dir is not None:
        info, policy = _expert(expert_dir, env_id, kwargs)
        recipe["expert"] = _expert_record(expert_dir, info)
    elif quality != "random":
        raise ConfigError(f"config field expert_dir: quality {quality!r} needs a trained expert")
    behavior = _Behavior(
        env_id, kwargs, expert_dir, info, policy, calibration, seed + CALIBRATION_SEED_OFFSET
    )
    act_fn, how = behavior.of(quality, episodes)
    recipe.update(how)
    arrays = collect_episodes(
        env_id,
        kwargs,
        act_fn,
        episodes,
        seed,
        num_envs=COLLECT_NUM_ENVS,
        progress=progress,
        on_reset=act_fn.on_reset if quality in CHECKPOINT_TIERS else None,
    )
    measured = float(arrays["rewards"].sum(axis=1).mean())
    metadata = {
        "env_id": env_id,
        "env_kwargs": kwargs,
        "n_actions": env_spec(env_id, **kwargs).n_actions,
        "behavior_policy": recipe,
        "quality": quality,
        "seed": seed,
        "normalized_score": info.normalized(measured) if info is not None else float("nan"),
    }
    return write_dataset(out, arrays, metadata)


def _checked_request(quality: str, episodes: int, calibration_episodes: int | None) -> int:
    """Check what :func:`make_dataset` is asked for; the calibration episodes to use."""
    if quality not in QUALITIES:
        raise ConfigError(f"config field quality: must be one of {QUALITIES}, got {quality!r}")
    if episodes < 1:
        raise ConfigError(f"config field episodes: must be >= 1, got {episodes}")
    calibration = CALIBRATION_EPISODES if calibration_episodes is None else calibration_episodes
    if calibration < 1:
        raise ConfigError(f"config field calibration_episodes: must be >= 1, got {calibration}")
    return calibration


def _expert(expert_dir: str | Path, env_id: str, kwargs: Mapping[str, Any]) -> tuple[ExpertInfo, PPOPolicy]:
    """The expert of ``expert_dir`` (its record and its policy), refused if made for another environment."""
    info = ExpertInfo.load(expert_dir)
    if info.env_id != env_id or info.env_kwargs != kwargs:
        raise MarlkdError(
            f"expert {expert_dir} was trained on {info.env_id} {info.env_kwargs}, not {env_id} {kwargs}"
        )
    return info, load_expert(expert_dir)


def _expert_record(expert_dir: str | Path, info: ExpertInfo) -> dict[str, Any]:
    """What a dataset's ``behavior_policy`` says of the expert it was made with."""
    return {
        "checkpoint": str((Path(expert_dir) / info.checkpoint).resolve()),
        "checkpoint_sha256": info.checkpoint_sha256,
        "deterministic": info.deterministic,
        "expert_return": info.expert_return,
        "random_return": info.random_return,
        "reference_episodes": info.reference_episodes,
        "ppo_total_steps": info.ppo.get("total_steps"),
    }


class _Behavior:
    """The behaviour policy of each quality, and what the dataset's ``behavior_policy`` records of it."""

    def __init__(
        self,
        env_id: str,
        kwargs: dict[str, Any],
        expert_dir: str | Path | None,
        info: ExpertInfo | None,
        policy: PPOPolicy | None,
        calibration: int,
        calibration_seed: int,
    ) -> None:
        self.env_id, self.kwargs, self.expert_dir = env_id, kwargs, expert_dir
        self.info, self.policy = info, policy
        self.calibration, self.calibration_seed = calibration, calibration_seed

    def of(self, quality: str, episodes: int) -> tuple[Any, dict[str, Any]]:
        """(the act_fn that collects ``quality``, the recipe's entries that say how it acts)."""
        if quality == "random":
            return random_act_fn, {
                "mechanism": "uniform_random",
                "description": "uniformly random available actions",
            }
        assert self.policy is not None
        if quality == "good":
            return self.policy.act_fn, {"mechanism": "expert", "description": "the expert"}
        if quality in CHECKPOINT_TIERS:
            return self._checkpoint_tier(quality, episodes)
        return self._epsilon_mix(quality)

    def _checkpoint_tier(self, quality: str, episodes: int) -> tuple[Any, dict[str, Any]]:
        assert self.info is not None and self.policy is not None and self.expert_dir is not None
        info = self.info

        def score(fn: Any) -> float:
            measured, _ = mean_return(self.env_id, self.kwargs, fn, self.calibration, self.calibration_seed)
            return info.normalized(measured)

        n_agents = env_spec(self.env_id, **self.kwargs).n_agents
        act_fn, details = checkpoint_tier(
            quality, self.expert_dir, self.policy.act_fn, n_agents, episodes, score, file_sha256
        )
        how = dict(details)
        if quality in CALIBRATED_TIERS:
            how["calibration"] = {"episodes": self.calibration, "seed": self.calibration_seed}
        return act_fn, how

    def _epsilon_mix(self, quality: str) -> tuple[Any, dict[str, Any]]:
        assert self.info is not None and self.policy is not None
        target = TIER_TARGETS[quality]
        epsilon, trace = calibrate_epsilon(
            self.env_id,
            self.kwargs,
            self.policy,
            self.info,
            target,
            self.calibration_seed,
            episodes=self.calibration,
        )
        how = {
            "mechanism": "epsilon_mix",
            "description": "each agent takes a uniform random available action with probability epsilon, "
            "else the expert's",
            "epsilon": epsilon,
            "target_normalized_score": target,
            "calibration": {"episodes": self.calibration, "seed": self.calibration_seed, "search": trace},
        }
        return epsilon_mix_act_fn(self.policy, epsilon), how


def calibrated(quality: str) -> bool:
    """Whether making ``quality`` measures scores over calibration episodes (the epsilon search of normal
    and poor, the checkpoint scores of medium, early and mixed)."""
    return quality in TIER_TARGETS or quality in CALIBRATED_TIERS
