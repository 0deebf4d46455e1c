"""The centralized teacher: one decision transformer over the concatenated (R^{1:n}, o^{1:n}, a^{1:n})
of all agents, predicting every agent's action through n per-agent MLP heads. The hidden layer of head i
is the teacher's feature f^i for agent i. Its policy needs every agent's data (centralized execution);
``ours`` distills it into decentralized students. ``algo.teacher = factored`` swaps the network for the
factored (time x agent) teacher of ``marlkd.algos.teacher_models``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from marlkd.algos import AlgoEntry, register
from marlkd.algos._dt import DTLearner
from marlkd.algos.teacher_models import TeacherModelConfig, build_teacher
from marlkd.data.windows import WindowSampler


@dataclass(frozen=True)
class Config(TeacherModelConfig):
    """The teacher uses the decision-transformer defaults, with MLP heads of width ``head_hidden``."""


def build(ctx) -> DTLearner:
    return build_teacher(ctx, ctx.config)


@torch.no_grad()
def teacher_outputs(
    learner: DTLearner, sampler: WindowSampler, chunk: int = 1024
) -> tuple[torch.Tensor, ...]:
    """The frozen teacher's features and logits at every valid dataset step, each from the teacher's own
    K-step context ending at that step: features ``(E, T, N, F)`` and logits ``(E, T, N, A)`` (zeros on
    padding). Computed once per dataset, then looked up by the students' batches."""
    learner.model.eval()
    E, T = sampler.mask.shape
    N, A = learner.n_agents, learner.n_actions
    F_dim = learner.model.cfg.head_hidden
    features = torch.zeros(E, T, N, F_dim, device=sampler.device)
    logits = torch.zeros(E, T, N, A, device=sampler.device)
    episode, step = sampler.all_positions()
    for start in range(0, episode.numel(), chunk):
        e, t = episode[start : start + chunk], step[start : start + chunk]
        window = sampler.gather(e, t)
        window_logits, window_features = learner.forward(window)  # (B, K, N, A), (1, B, K, N, F)
        features[e, t] = window_features[0, :, -1].float()
        logits[e, t] = window_logits[:, -1]
    return features, logits


register(AlgoEntry("teacher", Config, build, "centralized decision transformer (the teacher alone)"))
