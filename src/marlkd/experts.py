"""Experts (PPO-trained team policies) and the datasets of each quality tier they make.

- :func:`train_expert` trains an environment's expert with its recipe (:func:`expert_config`: centralized
  PPO for the native environments and Highway, MAPPO for SMAX), keeps checkpoints along the way, and
  measures the references of the normalized score: the expert's mean per-agent episode return and the
  uniform random policy's. ``expert.json`` in the directory is written last and marks it complete.
- :func:`make_dataset` collects a dataset of one quality: ``good`` (the expert), ``normal`` and ``poor``
  (the expert mixed with uniform random actions: each agent, at each step, acts uniformly at random among
  its available actions with probability epsilon; epsilon is found by bisection so that the normalized
  score is about 1/2 for normal and 1/4 for poor), and ``random`` (uniform random available actions).
  The file records how it was made (``behavior_policy``: mechanism, epsilon and its search, expert
  checkpoint path and SHA-256, seeds), its quality and its measured normalized score
  ``(return - random) / (expert - random)``. The same call remakes it bit for bit.
- :func:`ensure_expert` and :func:`ensure_dataset` make what is missing under a data root and reuse what is
  there; a file lock per target keeps concurrent processes from training or writing the same thing twice.

Layout under a root: ``experts/<env>/`` (expert directories) and ``<env>-<quality>.h5`` (datasets; see
:func:`dataset_path` for non-default sizes and seeds). An expert trained with a smaller budget than its
recipe's (fewer PPO steps, fewer reference episodes: a quick sweep's) lives in its own directory,
``experts/<env>-s<steps>-r<reference episodes>``, and the datasets made from it (and from a non-default
number of calibration episodes) have their own files too (:func:`default_expert_dir`, :func:`dataset_path`),
so a quick expert or dataset never stands in for a full one, nor the reverse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marlkd import atomic, filelock
from marlkd.data.collect import collect_episodes, random_act_fn
from marlkd.data.format import load_dataset, write_dataset
from marlkd.envs import env_spec
from marlkd.errors import ConfigError, DatasetError, MarlkdError
from marlkd.names import QUALITIES
from marlkd.ppo import PPOConfig, PPOPolicy, load_ppo_policy, train_ppo
from marlkd.threads import apply_threads
from marlkd.tiers import CALIBRATED_TIERS, CHECKPOINT_TIERS, checkpoint_tier

# Normalized score each tier aims at; good is the expert itself (about 1), random is the zero point.
TIER_TARGETS = {"normal": 0.5, "poor": 0.25}
EXPERT_INFO_FILE = "expert.json"
# Episodes and seed of the reference returns measured after training (fixed so that references agree).
REFERENCE_EPISODES = 1000
REFERENCE_SEED = 1_000_003
# Epsilon search: episodes per measurement, bisection steps, seed offset from the dataset's seed.
CALIBRATION_EPISODES = 512
CALIBRATION_STEPS = 10
CALIBRATION_SEED_OFFSET = 7_919
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
    "highway": {"total_steps": 50_000, "num_envs": 16, "lr": 5e-4, "ent_coef": 0.005},
    "highway-slow": {"total_steps": 50_000, "num_envs": 16, "lr": 5e-4, "ent_coef": 0.005},
}
_SMAX_RECIPE: dict[str, Any] = {"mode": "mappo", "total_steps": 2_000_000, "num_envs": 128, "lr": 5e-4}
DEFAULT_EPISODES = {"highway": 500, "highway-slow": 500}  # every other environment: 1,000


def scaled_expert_steps(env_id: str, scale: float) -> int:
    """``scale`` times the PPO budget of ``env_id``'s recipe (rounded, at least 1): a smaller expert budget
    stated as a fraction (a sweep spec's ``steps_scale``)."""
    if not 0 < scale <= 1:
        raise ConfigError(f"config field steps_scale: must be in (0, 1], got {scale}")
    return max(1, round(expert_config(env_id).total_steps * scale))


def default_episodes(env_id: str) -> int:
    """The default dataset size of ``env_id`` (1,000 episodes; 500 for the slow Highway simulation)."""
    return DEFAULT_EPISODES.get(env_id, 1000)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _full_kwargs(env_id: str, env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
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
    kwargs = _full_kwargs(env_id, env_kwargs)
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
        checkpoint_sha256=_sha256(result.checkpoint),
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
    if _sha256(checkpoint) != info.checkpoint_sha256:
        raise MarlkdError(f"{checkpoint}: SHA-256 differs from {EXPERT_INFO_FILE}'s; retrain the expert")
    return load_ppo_policy(checkpoint, deterministic=info.deterministic, seed=seed)


@contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock tied to ``target`` (a ``.lock`` file beside it) for the ``with`` block."""
    with filelock.locked(target.with_name(target.name + ".lock"), what=str(target)):
        yield


def _kwargs_tag(env_id: str, env_kwargs: Mapping[str, Any] | None) -> str:
    """'' for the default constructor arguments, else ``-`` and 8 hex digits of their hash."""
    if not env_kwargs or _full_kwargs(env_id, env_kwargs) == _full_kwargs(env_id, None):
        return ""
    text = json.dumps(_full_kwargs(env_id, env_kwargs), sort_keys=True)
    return "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _expert_tag(env_id: str, steps: int | None, reference_episodes: int | None) -> str:
    """'' for the recipe's budget (its PPO steps, :data:`REFERENCE_EPISODES`), else
    ``-s<steps>-r<reference episodes>``."""
    recipe_steps = expert_config(env_id).total_steps
    steps = recipe_steps if steps is None else steps
    episodes = REFERENCE_EPISODES if reference_episodes is None else reference_episodes
    if steps == recipe_steps and episodes == REFERENCE_EPISODES:
        return ""
    return f"-s{steps}-r{episodes}"


def default_expert_dir(
    env_id: str,
    root: str | Path,
    env_kwargs: Mapping[str, Any] | None = None,
    steps: int | None = None,
    reference_episodes: int | None = None,
) -> Path:
    """Where :func:`ensure_expert` keeps ``env_id``'s expert: ``<root>/experts/<env>[-<kwargs hash>]``,
    with ``-s<steps>-r<reference episodes>`` appended for a budget other than the recipe's (``steps``
    other than its ``total_steps``, or ``reference_episodes`` other than :data:`REFERENCE_EPISODES`;
    None: the default)."""
    tag = _kwargs_tag(env_id, env_kwargs) + _expert_tag(env_id, steps, reference_episodes)
    return Path(root) / "experts" / f"{env_id}{tag}"


def ensure_expert(
    env_id: str,
    root: str | Path,
    steps: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    mode: str | None = None,
    progress: bool = True,
    reference_episodes: int | None = None,
) -> Path:
    """``env_id``'s expert directory (:func:`default_expert_dir`), trained first if it is missing.

    ``steps`` and ``reference_episodes`` (None: the recipe's and :data:`REFERENCE_EPISODES`) pick the
    directory: a smaller budget gets its own. An existing expert is reused whatever ``seed``/``mode`` it was
    trained with. Concurrent callers wait for one another; an interrupted training (no ``expert.json``) is
    redone.
    """
    apply_threads()
    directory = default_expert_dir(env_id, root, env_kwargs, steps, reference_episodes)
    with _file_lock(directory):
        if not (directory / EXPERT_INFO_FILE).is_file():
            train_expert(
                env_id,
                directory,
                steps=steps,
                seed=seed,
                env_kwargs=env_kwargs,
                mode=mode,
                progress=progress,
                reference_episodes=reference_episodes,
            )
    return directory


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
    if quality not in QUALITIES:
        raise ConfigError(f"config field quality: must be one of {QUALITIES}, got {quality!r}")
    if episodes < 1:
        raise ConfigError(f"config field episodes: must be >= 1, got {episodes}")
    calibration = CALIBRATION_EPISODES if calibration_episodes is None else calibration_episodes
    if calibration < 1:
        raise ConfigError(f"config field calibration_episodes: must be >= 1, got {calibration}")
    kwargs = _full_kwargs(env_id, env_kwargs)
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
        info = ExpertInfo.load(expert_dir)
        if info.env_id != env_id or info.env_kwargs != kwargs:
            raise MarlkdError(
                f"expert {expert_dir} was trained on {info.env_id} {info.env_kwargs}, not {env_id} {kwargs}"
            )
        policy = load_expert(expert_dir)
        recipe["expert"] = {
            "checkpoint": str((Path(expert_dir) / info.checkpoint).resolve()),
            "checkpoint_sha256": info.checkpoint_sha256,
            "deterministic": info.deterministic,
            "expert_return": info.expert_return,
            "random_return": info.random_return,
            "reference_episodes": info.reference_episodes,
            "ppo_total_steps": info.ppo.get("total_steps"),
        }
    elif quality != "random":
        raise ConfigError(f"config field expert_dir: quality {quality!r} needs a trained expert")

    calibration_seed = seed + CALIBRATION_SEED_OFFSET
    if quality == "random":
        recipe.update(mechanism="uniform_random", description="uniformly random available actions")
        act_fn = random_act_fn
    elif quality == "good":
        recipe.update(mechanism="expert", description="the expert")
        act_fn = policy.act_fn
    elif quality in CHECKPOINT_TIERS:

        def score(fn: Any) -> float:
            return info.normalized(mean_return(env_id, kwargs, fn, calibration, calibration_seed)[0])

        act_fn, details = checkpoint_tier(
            quality, expert_dir, policy.act_fn, env_spec(env_id, **kwargs).n_agents, episodes, score, _sha256
        )
        recipe.update(details)
        if quality in CALIBRATED_TIERS:
            recipe["calibration"] = {"episodes": calibration, "seed": calibration_seed}
    else:
        epsilon, trace = calibrate_epsilon(
            env_id, kwargs, policy, info, TIER_TARGETS[quality], calibration_seed, episodes=calibration
        )
        recipe.update(
            mechanism="epsilon_mix",
            description="each agent takes a uniform random available action with probability epsilon, "
            "else the expert's",
            epsilon=epsilon,
            target_normalized_score=TIER_TARGETS[quality],
            calibration={"episodes": calibration, "seed": calibration_seed, "search": trace},
        )
        act_fn = epsilon_mix_act_fn(policy, epsilon)
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


def _calibrated(quality: str) -> bool:
    """Whether making ``quality`` measures scores over calibration episodes (the epsilon search of normal
    and poor, the checkpoint scores of medium, early and mixed)."""
    return quality in TIER_TARGETS or quality in CALIBRATED_TIERS


def _budget_tag(
    env_id: str,
    quality: str,
    steps: int | None,
    reference_episodes: int | None,
    calibration_episodes: int | None,
) -> str:
    """What of a non-default expert budget a dataset of ``quality`` depends on: the expert's
    (:func:`default_expert_dir`'s tag) for good, normal and poor; ``-c<episodes>`` for the epsilon search of
    normal and poor when not :data:`CALIBRATION_EPISODES`; nothing for random (made without an expert)."""
    if quality == "random":
        return ""
    tag = _expert_tag(env_id, steps, reference_episodes)
    if _calibrated(quality) and calibration_episodes not in (None, CALIBRATION_EPISODES):
        tag += f"-c{calibration_episodes}"
    return tag


def dataset_path(
    root: str | Path,
    env_id: str,
    quality: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    steps: int | None = None,
    reference_episodes: int | None = None,
    calibration_episodes: int | None = None,
) -> Path:
    """Where :func:`ensure_dataset` keeps a dataset: ``<root>/<env>-<quality>.h5`` for the default size,
    seed 0, default environment arguments and the default expert budget, else with
    ``-<episodes>ep-seed<seed>[-<kwargs hash>]`` and, for a smaller expert budget (``steps``,
    ``reference_episodes``, ``calibration_episodes``; None: the defaults), what of it the tier depends on
    (``-s<steps>-r<reference episodes>`` for the expert, ``-c<calibration episodes>`` for normal and poor)."""
    suffix = "" if episodes == default_episodes(env_id) and seed == 0 else f"-{episodes}ep-seed{seed}"
    budget = _budget_tag(env_id, quality, steps, reference_episodes, calibration_episodes)
    return Path(root) / f"{env_id}-{quality}{suffix}{_kwargs_tag(env_id, env_kwargs)}{budget}.h5"


def ensure_dataset(
    env_id: str,
    quality: str,
    episodes: int,
    root: str | Path,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    steps: int | None = None,
    reference_episodes: int | None = None,
    calibration_episodes: int | None = None,
) -> Path:
    """The dataset of ``quality`` under ``root`` (:func:`dataset_path`), made first if it is missing.

    The expert (:func:`ensure_expert`, under ``root/experts``, with ``steps`` and ``reference_episodes``) is
    trained if needed, except for the random tier, which is made without one (its normalized score is then
    NaN). ``calibration_episodes`` goes to :func:`make_dataset`. None: the defaults (the recipe's steps,
    :data:`REFERENCE_EPISODES`, :data:`CALIBRATION_EPISODES`). An existing file is checked against the
    request and reused; concurrent callers wait for one another.
    """
    apply_threads()
    path = dataset_path(
        root, env_id, quality, episodes, seed, env_kwargs, steps, reference_episodes, calibration_episodes
    )
    with _file_lock(path):
        if path.exists():
            metadata = load_dataset(path).metadata
            expected: dict[str, Any] = {
                "env_id": env_id,
                "quality": quality,
                "n_episodes": episodes,
                "seed": seed,
                "env_kwargs": _full_kwargs(env_id, env_kwargs),
            }
            found = {key: getattr(metadata, key) for key in expected}
            # How the expert was measured and epsilon searched (files from before these were recorded
            # lack the first: not checked then).
            recorded = dict(metadata.behavior_policy)
            if quality != "random" and "reference_episodes" in recorded.get("expert", {}):
                found["reference_episodes"] = recorded["expert"]["reference_episodes"]
                expected["reference_episodes"] = (
                    REFERENCE_EPISODES if reference_episodes is None else reference_episodes
                )
            if _calibrated(quality) and "calibration" in recorded:
                found["calibration_episodes"] = recorded["calibration"]["episodes"]
                expected["calibration_episodes"] = (
                    CALIBRATION_EPISODES if calibration_episodes is None else calibration_episodes
                )
            if found != expected:
                raise DatasetError(f"{path}: holds {found}, expected {expected}; move it away to remake it")
            return path
        experts = (
            None
            if quality == "random"
            else ensure_expert(
                env_id,
                root,
                steps=steps,
                env_kwargs=env_kwargs,
                progress=progress,
                reference_episodes=reference_episodes,
            )
        )
        make_dataset(
            env_id,
            quality,
            episodes,
            path,
            expert_dir=experts,
            seed=seed,
            env_kwargs=env_kwargs,
            progress=progress,
            calibration_episodes=calibration_episodes,
        )
    return path
