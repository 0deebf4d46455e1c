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

The package: :mod:`~marlkd.experts.training` (recipes, training, loading),
:mod:`~marlkd.experts.datasets` (the quality tiers) and :mod:`~marlkd.experts.store` (what is kept under a
root); every name is importable from ``marlkd.experts``.
"""

from marlkd.experts.datasets import (
    CALIBRATION_EPISODES,
    CALIBRATION_SEED_OFFSET,
    CALIBRATION_STEPS,
    TIER_TARGETS,
    calibrate_epsilon,
    epsilon_mix_act_fn,
    make_dataset,
)
from marlkd.experts.store import (
    DEFAULT_EPISODES,
    dataset_path,
    default_episodes,
    default_expert_dir,
    ensure_dataset,
    ensure_expert,
)
from marlkd.experts.training import (
    CHECKPOINT_GROWTH,
    COLLECT_NUM_ENVS,
    EXPERT_INFO_FILE,
    EXPERT_RECIPES,
    REFERENCE_EPISODES,
    REFERENCE_SEED,
    ExpertInfo,
    expert_config,
    load_expert,
    mean_return,
    scaled_expert_steps,
    train_expert,
)
from marlkd.names import QUALITIES
from marlkd.tiers import CALIBRATED_TIERS, CHECKPOINT_TIERS

__all__ = [
    "CALIBRATED_TIERS",
    "CALIBRATION_EPISODES",
    "CALIBRATION_SEED_OFFSET",
    "CALIBRATION_STEPS",
    "CHECKPOINT_GROWTH",
    "CHECKPOINT_TIERS",
    "COLLECT_NUM_ENVS",
    "DEFAULT_EPISODES",
    "EXPERT_INFO_FILE",
    "EXPERT_RECIPES",
    "QUALITIES",
    "REFERENCE_EPISODES",
    "REFERENCE_SEED",
    "TIER_TARGETS",
    "ExpertInfo",
    "calibrate_epsilon",
    "dataset_path",
    "default_episodes",
    "default_expert_dir",
    "ensure_dataset",
    "ensure_expert",
    "epsilon_mix_act_fn",
    "expert_config",
    "load_expert",
    "make_dataset",
    "mean_return",
    "scaled_expert_steps",
    "train_expert",
]
