"""MA-AIRL: adversarial inverse reinforcement learning (Fu et al., 2018; multi-agent form of Yu et al., 2019).

Per agent, the discriminator has the AIRL form D^i = exp(f^i) / (exp(f^i) + pi^i(a^i | o^i)), i.e. the
logit ``f^i - log pi^i(a^i | o^i)``, with the shaped reward estimator

    f^i(o, a, o') = g^i(o, a) + gamma * (1 - done) * h^i(o') - h^i(o),

g^i the reward approximator and h^i the shaping potential (separate per-agent ensembles); ``done`` marks
terminations only by default (``truncation``): a time limit is not an end, as in the value-based methods.
The policy's reward is log D^i - log(1 - D^i) = f^i - log pi^i(a^i | o^i), with log pi of the policy
that acted. The loop, budget and interaction are :mod:`marlkd.algos.adversarial`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos import AlgoEntry, register
from marlkd.algos.adversarial import AdversarialConfig, AdversarialImitation, Batch
from marlkd.config import check
from marlkd.data.transitions import TRUNCATION_RULES
from marlkd.models.agent_nets import AgentMLP
from marlkd.names import METHOD_NAMES


@dataclass(frozen=True)
class Config(AdversarialConfig):
    """AIRL's settings: the shared adversarial-imitation ones (``gamma`` is also the shaping discount).

    Attributes:
        truncation: what ``done`` in the shaping term means at a time limit
            (``marlkd.data.transitions.TRUNCATION_RULES``): ``bootstrap`` (a time limit is not an end:
            ``h(o')`` stays), ``final`` (every episode end zeroes ``h(o')``) or ``drop``.
    """

    truncation: str = "bootstrap"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.truncation in TRUNCATION_RULES,
            "algo.truncation",
            f"must be one of {TRUNCATION_RULES}, got {self.truncation!r}",
        )


class AIRLDiscriminator(nn.Module):
    """f^i = g^i(o, a) + gamma (1 - done) h^i(o') - h^i(o) per agent; logit f - log pi; reward the same."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int, gamma: float) -> None:
        super().__init__()
        self.n_actions, self.gamma = n_actions, gamma
        self.g = AgentMLP(n_agents, obs_dim + n_actions, hidden, 1)
        self.h = AgentMLP(n_agents, obs_dim, hidden, 1)

    def f(self, batch: Batch) -> torch.Tensor:
        """The shaped reward estimator ``(B, N)``."""
        x = torch.cat((batch.obs, F.one_hot(batch.actions, self.n_actions).float()), dim=-1)  # (B, N, O+A)
        g = self.g(x)[..., 0]
        h, h_next = self.h(batch.obs)[..., 0], self.h(batch.next_obs)[..., 0]
        return g + self.gamma * (1.0 - batch.done) * h_next - h

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.f(batch) - batch.log_pi

    def reward(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch)


def build(ctx) -> AdversarialImitation:
    dataset, cfg = ctx.dataset, ctx.config
    disc = AIRLDiscriminator(dataset.n_agents, dataset.obs_dim, dataset.n_actions, cfg.disc_hidden, cfg.gamma)
    return AdversarialImitation(ctx, disc, cfg.truncation)


register(
    AlgoEntry(
        "airl",
        Config,
        build,
        "adversarial IRL: per-agent shaped rewards, MAPPO",
        interacts=True,
        display_name=METHOD_NAMES["airl"],
    )
)
