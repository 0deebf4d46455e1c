"""Training and loading experts: each environment's PPO recipe (:func:`expert_config`), :func:`train_expert`
(which also measures the references of the normalized score: the expert's mean per-agent episode return
and the uniform random policy's) and :func:`load_expert`; ``expert.json`` (:class:`ExpertInfo`) in an
expert's directory is written last and marks it complete."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marlkd import atomic
from marlkd.data.collect import collect_episodes, random_act_fn
from marlkd.envs import env_spec
from marlkd.errors import ConfigError, MarlkdError
from marlkd.ppo import PPOConfig, PPOPolicy, load_ppo_policy, train_ppo
from marlkd.threads import apply_threads

EXPERT_INFO_FILE = "expert.json"
# Episodes and seed of the reference returns measured after training (fixed so that references agree).
REFERENCE_EPISODES = 1000
REFERENCE_SEED = 1_000_003
COLLECT_NUM_ENVS = 256
# Experts keep checkpoints at iterations 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, ...: the native experts pass a
# quarter and half of their final score within their first 8-54 PPO iterations.
CHECKPOINT_GROWTH = 1.2

# Per-environment PPO recipes: overrides of PPOConfig's defaults. Native ones are tuned and measured
# (docs/experts.md); Highway's and SMAX's follow the same hyperparameters with budgets sized to their cost.
_NATIVE_RECIPE: dict[str, Any] = {"total_steps": 500_000, "num_envs": 64, "lr": 1e-3, "ent_coef": 0.005}
EXPERT_RECIPES: dict[str, dict[str, Any]] = {
    "fill-in": _NATIVE_RECIPE,
    "equal-space": _NATIVE_RECIPE,
    "grid-world": _NATIVE_RECIPE,
    "grid-world-coop": _NATIVE_RECIPE,
    "highway": {"total_steps": 50_000, "num_envs": 16, "lr": 5e-4, "ent_coef": 0.005},
    "highway-slow": {"total_steps": 50_000, "num_envs": 16, "lr": 5e-4, "ent_coef": 0.005},
}
_SMAX_RECIPE: dict[str, Any] = {"mode": "mappo", "total_steps": 2_000_000, "num_envs": 128, "lr": 5e-4}


def scaled_expert_steps(env_id: str, scale: float) -> int:
    """``scale`` times the PPO budget of ``env_id``'s recipe (rounded, at least 1): a smaller expert budget
    stated as a fraction (a sweep spec's ``steps_scale``)."""
    if not 0 < scale <= 1:
        raise ConfigError(f"config field steps_scale: must be in (0, 1], got {scale}")
    return max(1, round(expert_config(env_id).total_steps * scale))


def expert_config(
    env_id: str,
    steps: int | None = None,
    seed: int = 0,
    mode: str | None = None,
    checkpoints: int = 10,
    checkpoint_growth: float = CHECKPOINT_GROWTH,
) -> PPOConfig:
    """The PPO configuration that trains ``env_id``'s expert.

    Args:
        env_id: environment id; ``smax-*`` gets MAPPO, everything else centralized PPO.
        steps: training budget in environment steps (None: the recipe's).
        seed: PPO seed.
        mode: ``centralized`` or ``mappo`` to override the recipe's mode.
        checkpoints: how many intermediate checkpoints to keep, evenly spaced over the budget.
        checkpoint_growth: also keep geometrically spaced early checkpoints (``PPOConfig``'s field of the
            same name; 0: none). The checkpoint tiers (:mod:`marlkd.tiers`) choose among all kept ones.
    """
    recipe = dict(_SMAX_RECIPE if env_id.startswith("smax-") else EXPERT_RECIPES.get(env_id, _NATIVE_RECIPE))
    if steps is not None:
        recipe["total_steps"] = steps
    if mode is not None:
        recipe["mode"] = mode
    if checkpoints < 0:
        raise ConfigError(f"config field checkpoints: must be >= 0, got {checkpoints}")
    recipe["checkpoint_every"] = recipe["total_steps"] // checkpoints if checkpoints else 0
    recipe["checkpoint_growth"] = checkpoint_growth
    return PPOConfig(seed=seed, **recipe)


@dataclass(frozen=True)
class ExpertInfo:
    """What ``expert.json`` says about a trained expert.

    Attributes:
        env_id, env_kwargs: the environment (every constructor argument) the expert was trained on.
        checkpoint: the final checkpoint's file name inside the expert directory.
        checkpoint_sha256: SHA-256 of that file.
        deterministic: whether the expert acts by its most probable action (else it samples); the better
            of the two by measured return.
        expert_return: mean per-agent episode return of the expert acting so.
        expert_return_sampled, expert_return_greedy: the two measurements the choice was made from.
        random_return: mean per-agent episode return of uniform random available actions.
        reference_episodes, reference_seed: how the returns were measured (``collect_episodes``).
        ppo: the PPO configuration (``PPOConfig`` fields).
        env_steps: environment steps used for training. wall_time_s: training time.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    checkpoint: str
    checkpoint_sha256: str
    deterministic: bool
    expert_return: float
    expert_return_sampled: float
    expert_return_greedy: float
    random_return: float
    reference_episodes: int
    reference_seed: int
    ppo: dict[str, Any]
    env_steps: int
    wall_time_s: float

    @classmethod
    def load(cls, expert_dir: str | Path) -> ExpertInfo:
        path = Path(expert_dir) / EXPERT_INFO_FILE
        if not path.is_file():
            raise MarlkdError(f"{expert_dir} is not a trained expert (no {EXPERT_INFO_FILE}; train it first)")
        data = json.loads(path.read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise MarlkdError(f"{path}: missing field(s) {', '.join(missing)}")
        return cls(**{k: data[k] for k in names})

    def normalized(self, mean_return: float) -> float:
        """``(mean_return - random) / (expert - random)``."""
        return (mean_return - self.random_return) / (self.expert_return - self.random_return)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def full_kwargs(env_id: str, env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every constructor argument of ``env_id`` (defaults filled in), so records survive default changes."""
    given = dict(env_kwargs or {})
    return {**env_spec(env_id, **given).kwargs, **given}


def mean_return(
    env_id: str, env_kwargs: Mapping[str, Any], act_fn: Any, episodes: int, seed: int
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean per-agent episode return of ``act_fn`` over ``episodes`` collected episodes, and the arrays."""
    arrays = collect_episodes(env_id, env_kwargs, act_fn, episodes, seed, num_envs=COLLECT_NUM_ENVS)
    return float(arrays["rewards"].sum(axis=1).mean()), arrays


def train_expert(
    env_id: str,
    out_dir: str | Path,
    steps: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    mode: str | None = None,
    progress: bool = True,
    checkpoints: int = 10,
    reference_episodes: int | None = None,
    checkpoint_growth: float = CHECKPOINT_GROWTH,
) -> ExpertInfo:
    """Train ``env_id``'s expert into ``out_dir`` and measure its return and the random policy's.

    ``out_dir`` receives what :func:`marlkd.ppo.train_ppo` writes (``checkpoint.pt``,
    ``checkpoints/step_*.pt``, the learning curve) and then ``expert.json`` (:class:`ExpertInfo`).
    Arguments as :func:`expert_config`; ``env_kwargs`` are the environment's constructor arguments;
    ``reference_episodes``: episodes of each reference measurement (None: :data:`REFERENCE_EPISODES`).
    """
    apply_threads()
    episodes = REFERENCE_EPISODES if reference_episodes is None else reference_episodes
    if episodes < 1:
        raise ConfigError(f"config field reference_episodes: must be >= 1, got {episodes}")
    kwargs = full_kwargs(env_id, env_kwargs)
    config = expert_config(
        env_id,
        steps=steps,
        seed=seed,
        mode=mode,
        checkpoints=checkpoints,
        checkpoint_growth=checkpoint_growth,
    )
    out = Path(out_dir)
    result = train_ppo(env_id, config, out, env_kwargs=kwargs, progress=progress)
    returns = {}
    for deterministic in (False, True):
        policy = load_ppo_policy(result.checkpoint, deterministic=deterministic)
        returns[deterministic], _ = mean_return(env_id, kwargs, policy.act_fn, episodes, REFERENCE_SEED)
    random_return, _ = mean_return(env_id, kwargs, random_act_fn, episodes, REFERENCE_SEED)
    deterministic = returns[True] > returns[False]
    info = ExpertInfo(
        env_id=env_id,
        env_kwargs=kwargs,
        checkpoint=result.checkpoint.name,
        checkpoint_sha256=file_sha256(result.checkpoint),
        deterministic=deterministic,
        expert_return=returns[deterministic],
        expert_return_sampled=returns[False],
        expert_return_greedy=returns[True],
        random_return=random_return,
        reference_episodes=episodes,
        reference_seed=REFERENCE_SEED,
        ppo=dataclasses.asdict(config),
        env_steps=result.env_steps,
        wall_time_s=result.wall_time_s,
    )
    atomic.write_text(out / EXPERT_INFO_FILE, json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    return info


def load_expert(expert_dir: str | Path, seed: int = 0) -> PPOPolicy:
    """The expert of ``expert_dir`` as a policy, acting as ``expert.json`` says (greedy or sampled).

    Raises :class:`MarlkdError` when the checkpoint is not the one the expert was measured with.
    """
    info = ExpertInfo.load(expert_dir)
    checkpoint = Path(expert_dir) / info.checkpoint
    if file_sha256(checkpoint) != info.checkpoint_sha256:
        raise MarlkdError(f"{checkpoint}: SHA-256 differs from {EXPERT_INFO_FILE}'s; retrain the expert")
    return load_ppo_policy(checkpoint, deterministic=info.deterministic, seed=seed)
