"""MA-GAIL: generative adversarial imitation (Ho & Ermon, 2016; multi-agent form of Song et al., 2018).

A discriminator per agent, D^i(o^i, a^i) = sigmoid(d^i(o^i, onehot(a^i))) (one ensemble, no shared
weights), is trained to tell the dataset's transitions (1) from the policy's (0); the decentralized MAPPO
actor maximizes each agent's reward r^i = -log(1 - D^i(o^i, a^i)) = softplus(d^i). The loop, budget and
interaction are :mod:`marlkd.algos.adversarial`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos import AlgoEntry, register
from marlkd.algos.adversarial import AdversarialConfig, AdversarialImitation, Batch
from marlkd.models.agent_nets import AgentMLP


@dataclass(frozen=True)
class Config(AdversarialConfig):
    """GAIL uses the shared adversarial-imitation settings."""


class GAILDiscriminator(nn.Module):
    """D^i(o^i, a^i) for every agent: logits ``(B, N)``; reward ``-log(1 - D) = softplus(logit)``."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.net = AgentMLP(n_agents, obs_dim + n_actions, hidden, 1)

    def logits(self, batch: Batch) -> torch.Tensor:
        x = torch.cat((batch.obs, F.one_hot(batch.actions, self.n_actions).float()), dim=-1)  # (B, N, O+A)
        return self.net(x)[..., 0]

    def reward(self, batch: Batch) -> torch.Tensor:
        return F.softplus(self.logits(batch))


def build(ctx) -> AdversarialImitation:
    dataset = ctx.dataset
    disc = GAILDiscriminator(dataset.n_agents, dataset.obs_dim, dataset.n_actions, ctx.config.disc_hidden)
    return AdversarialImitation(ctx, disc)


register(
    AlgoEntry("gail", Config, build, "adversarial imitation: per-agent discriminators, MAPPO", interacts=True)
)
