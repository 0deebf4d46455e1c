"""The centralized teacher: one decision transformer over the concatenated (R^{1:n}, o^{1:n}, a^{1:n})
of all agents, predicting every agent's action through n per-agent MLP heads. The hidden layer of head i
is the teacher's feature f^i for agent i. Its policy needs every agent's data (centralized execution);
``ours`` distills it into decentralized students. ``algo.teacher = factored`` swaps the network for the
factored (time x agent) teacher of ``marlkd.algos.teacher_models``.

Besides the ``teacher`` method this module holds what ``ours`` does with its teacher (built by
``marlkd.algos.teacher_models.build_teacher`` as ``algo.teacher`` says): name it in a shared cache
(:func:`teacher_key`), load a finished ``teacher`` run (:func:`load_teacher_run`) and compute its frozen
outputs at every dataset step (:func:`teacher_outputs`), conditioned either on each step's own
return-to-go or on the evaluation's target return (:func:`eval_target_returns`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from marlkd import checkpoint
from marlkd.algos import AlgoEntry, register
from marlkd.algos._dt import DTLearner
from marlkd.algos.teacher_models import TeacherModelConfig, build_teacher
from marlkd.data.windows import WindowSampler
from marlkd.errors import ConfigError
from marlkd.models.layouts import Layout
from marlkd.names import METHOD_NAMES

# What the teacher's cached outputs are conditioned on (``ours``'s ``teacher_target``).
TeacherTarget = Literal["own-return", "eval-return"]
TEACHER_TARGETS: tuple[str, ...] = get_args(TeacherTarget)


@dataclass(frozen=True)
class Config(TeacherModelConfig):
    """The teacher uses the decision-transformer defaults, with MLP heads of width ``head_hidden``."""


def build(ctx) -> DTLearner:
    return build_teacher(ctx, ctx.config)


def teacher_key(ctx, cfg: TeacherModelConfig, teacher_steps: int, sources=()) -> str:
    """File name of a teacher in a shared ``teacher_cache``: a hash of everything that determines it (the
    dataset, the model config, the training config, the seed and the number of updates). ``sources``: the
    datasets of a pooled teacher (``TeamPool.sources``), which replace the run's dataset in the key, so
    runs on any one of them (``--data a --teacher-data b`` and ``--data b --teacher-data a``) share it."""
    train, data = ctx.train, ctx.dataset
    key = {
        "dataset": data.metadata.checksum,
        "episodes": data.n_episodes,
        "model": {
            f: getattr(cfg, f)
            for f in ("context", "width", "layers", "heads", "dropout", "return_scale", "head_hidden")
        },
        "train": {
            f: getattr(train, f)
            for f in ("batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "precision", "seed")
        },
        "teacher_steps": teacher_steps,
    }
    if cfg.teacher != "concat":  # concatenation teachers keep their earlier file names
        key["teacher"] = {"teacher": cfg.teacher, "agent_ids": cfg.agent_ids}
    if sources:
        del key["dataset"], key["episodes"]
        key["datasets"] = sorted([source.checksum, source.episodes] for source in sources)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"teacher-{digest}.pt"


def load_teacher_run(learner: DTLearner, run_dir: Path, device: torch.device) -> None:
    """Load a finished ``teacher`` run's weights into ``learner`` (``ours``'s ``teacher_run``)."""
    config_path, checkpoint_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not config_path.exists() or not checkpoint_path.exists():
        raise ConfigError(
            f"config field algo.teacher_run: {run_dir} is not a finished teacher run "
            "(config.json and checkpoint.pt expected)"
        )
    method = json.loads(config_path.read_text()).get("method")
    if method != "teacher":
        raise ConfigError(f"config field algo.teacher_run: {run_dir} is a {method!r} run, not 'teacher'")
    state = checkpoint.load(checkpoint_path, map_location=device, what="teacher checkpoint")
    saved, mine = state["algo"].get("train_sources", []), learner.train_sources()
    if sorted(c for _, c in saved) != sorted(c for _, c in mine):

        def names(sources: list[list[str]]) -> str:
            return ", ".join(name for name, _ in sources) or "its own dataset alone"

        raise ConfigError(
            f"config field algo.teacher_run: {run_dir} trained its teacher on {names(saved)}, this run's "
            f"teacher would train on {names(mine)}; give the same algo.teacher_data (and dataset) as it"
        )
    try:
        learner.model.load_state_dict(state["algo"]["model"])
    except RuntimeError as exc:
        raise ConfigError(
            f"config field algo.teacher_run: {run_dir} does not match this dataset/model: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def eval_target_returns(dataset, target: np.ndarray, return_scale: float) -> torch.Tensor:
    """Returns-to-go ``(E, T, N)`` as the evaluation feeds them along the dataset's trajectories: agent
    i's target return (``target`` (N,), the evaluation's default is the dataset's best per-agent episode
    return) minus the rewards it received before step t, divided by ``return_scale`` (the students')."""
    rewards = dataset.rewards * dataset.mask[..., None]  # (E, T, N)
    received_before = np.cumsum(rewards, axis=1) - rewards
    rtg = (np.asarray(target, np.float32)[None, None, :] - received_before) / float(return_scale)
    return torch.as_tensor(rtg * dataset.mask[..., None], dtype=torch.float32)


def teacher_view(learner: DTLearner, sampler: WindowSampler, dataset) -> WindowSampler:
    """The windows of ``sampler`` (on ``dataset``, the students') as the teacher ``learner`` reads them: its
    return scale (a pooled teacher's comes from all its datasets) and, for the factored teacher, which
    agents act. ``sampler`` itself where these are the same."""
    factored = learner.layout == Layout.FACTORED
    if not factored and learner.return_scale == sampler.return_scale:
        return sampler
    return sampler.for_model(dataset, learner.return_scale, presence=factored)


@torch.no_grad()
def teacher_outputs(
    learner: DTLearner, sampler: WindowSampler, returns: torch.Tensor | None = None, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher's features and logits at every valid dataset step, each from the teacher's own
    K-step context ending at that step, computed in eval mode (dropout off): features ``(E, T, N, F)``
    and logits ``(E, T, N, A)`` (zeros on padding). ``returns`` ``(E, T, N)`` replaces the windows'
    returns-to-go (already divided by the return scale; default: each step's own return-to-go). Computed
    once per dataset, then looked up by the students' batches. ``sampler`` gives the dataset and the
    teacher's view of it (its return scale, which agents act: :func:`teacher_view`)."""
    learner.model.eval()
    if returns is not None:
        sampler = copy.copy(sampler)  # the same data, conditioned on other returns
        sampler.rtg = returns.to(sampler.device)
    E, T = sampler.mask.shape
    N, A = sampler.n_agents, learner.n_actions
    features = torch.zeros(E, T, N, learner.model.cfg.head_hidden, device=sampler.device)
    logits = torch.zeros(E, T, N, A, device=sampler.device)
    episode, step = sampler.all_positions()
    for start in range(0, episode.numel(), chunk):
        e, t = episode[start : start + chunk], step[start : start + chunk]
        window = sampler.gather(e, t)
        window_logits, window_features = learner.forward(window)  # (B, K, N, A), (1, B, K, N, F)
        features[e, t] = window_features[0, :, -1].float()
        logits[e, t] = window_logits[:, -1]
    return features, logits


register(
    AlgoEntry(
        "teacher",
        Config,
        build,
        "centralized decision transformer (the teacher alone)",
        display_name=METHOD_NAMES["teacher"],
    )
)
