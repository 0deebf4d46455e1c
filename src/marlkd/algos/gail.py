"""MA-GAIL: generative adversarial imitation (Ho & Ermon, 2016; multi-agent form of Song et al., 2018).

A discriminator per agent, D^i(o^i, a^i) = sigmoid(d^i(o^i, onehot(a^i))) (one ensemble, no shared
weights), is trained to tell the dataset's transitions (1) from the policy's (0); the decentralized MAPPO
actor maximizes each agent's reward, by default r^i = log D^i(o^i, a^i) = -softplus(-d^i) (``reward``).
The loop, budget and interaction are :mod:`marlkd.algos.adversarial`'s.

The paper's form -log(1 - D) = softplus(d^i) is always positive, so it also pays for staying in the
episode: where the data's behaviour ends episodes early (Grid-World's expert collects every object), it
biases the policy against ending them (the survival bias discussed by Kostrikov et al., 2019). Measured on
Grid-World (docs/baselines.md) it scores below random play while log D does not, so log D is the default;
``positive`` and the sign-neutral logit log D - log(1 - D) remain options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos import AlgoEntry, register
from marlkd.algos.adversarial import AdversarialConfig, AdversarialImitation, Batch
from marlkd.config import check
from marlkd.models.agent_nets import AgentMLP
from marlkd.names import METHOD_NAMES

Reward = Literal["positive", "logit", "negative"]
REWARDS: tuple[str, ...] = get_args(Reward)


@dataclass(frozen=True)
class Config(AdversarialConfig):
    """GAIL's settings: the shared adversarial-imitation ones, and the reward's form.

    Attributes:
        reward: ``negative`` (log D, the default: the measured best), ``positive`` (-log(1 - D), the
            paper's) or ``logit`` (log D - log(1 - D)).
    """

    reward: Reward = "negative"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reward in REWARDS, "algo.reward", f"must be one of {REWARDS}, got {self.reward!r}")


class GAILDiscriminator(nn.Module):
    """D^i(o^i, a^i) for every agent: logits ``(B, N)``; reward ``log D = -softplus(-logit)`` (or
    ``-log(1 - D) = softplus(logit)``, or the ``logit`` itself)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int, reward: str = "negative"):
        super().__init__()
        self.n_actions, self.reward_form = n_actions, reward
        self.net = AgentMLP(n_agents, obs_dim + n_actions, hidden, 1)

    def logits(self, batch: Batch) -> torch.Tensor:
        x = torch.cat((batch.obs, F.one_hot(batch.actions, self.n_actions).float()), dim=-1)  # (B, N, O+A)
        return self.net(x)[..., 0]

    def reward(self, batch: Batch) -> torch.Tensor:
        logits = self.logits(batch)
        if self.reward_form == "logit":
            return logits
        if self.reward_form == "negative":
            return -F.softplus(-logits)
        return F.softplus(logits)


def build(ctx) -> AdversarialImitation:
    dataset = ctx.dataset
    cfg = ctx.config
    disc = GAILDiscriminator(
        dataset.n_agents, dataset.obs_dim, dataset.n_actions, cfg.disc_hidden, cfg.reward
    )
    return AdversarialImitation(ctx, disc)


register(
    AlgoEntry(
        "gail",
        Config,
        build,
        "adversarial imitation: per-agent discriminators, MAPPO",
        interacts=True,
        display_name=METHOD_NAMES["gail"],
    )
)
