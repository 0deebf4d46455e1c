"""BC: behaviour cloning, one MLP policy per agent on the agent's own observation (or observation window).

pi^i(a | o^i) is trained by cross-entropy to the dataset's actions (unavailable actions masked out of the
softmax). By default the N policies share no weights: they are one
:class:`marlkd.models.agent_nets.AgentMLP` ensemble, the same as N separate networks, trained in one
batched step (``share_weights``, ``agent_id`` and ``history`` change that, see ``MLPConfig``).
Execution is decentralized and greedy (the most probable available action).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from marlkd.algos import AlgoEntry, register
from marlkd.algos.base import BaseAlgorithm, GreedyPolicy
from marlkd.data.transitions import Transitions, TransitionSampler
from marlkd.models.agent_nets import AgentMLP, MLPConfig
from marlkd.models.layouts import masked_logits
from marlkd.names import METHOD_NAMES
from marlkd.optim import autocast, make_optimizer, optimizer_step


@dataclass(frozen=True)
class Config(MLPConfig):
    """BC's network size and inputs (``MLPConfig``); learning rate, batch size and clipping are
    ``train.*`` (the clip bounds each agent's own gradient norm unless the weights are shared)."""


def bc_loss(logits: torch.Tensor, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy): cross-entropy of per-agent logits ``(B, N, A)`` to the dataset actions, averaged
    over the agents' valid steps and summed over agents (agent i's net gets its own mean loss), and the
    fraction of valid steps whose greedy action is the dataset's."""
    logits = masked_logits(logits.float(), batch.avail)
    ce = F.cross_entropy(logits.flatten(0, 1), batch.actions.flatten(), reduction="none")
    ce = ce.view(batch.actions.shape)  # (B, N)
    weight = batch.alive.float()
    per_agent = (ce * weight).sum(0) / weight.sum(0).clamp(min=1.0)  # (N,)
    correct = (logits.argmax(-1) == batch.actions).float()
    accuracy = (correct * weight).sum() / weight.sum().clamp(min=1.0)
    return per_agent.sum(), accuracy


class BC(BaseAlgorithm):
    """Per-agent behaviour cloning (see the module docstring)."""

    def __init__(self, ctx) -> None:
        cfg: Config = ctx.config
        super().__init__(ctx)
        dataset = ctx.dataset
        self.cfg = cfg
        self.sampler = TransitionSampler(dataset, ctx.device, cfg.history)
        self.net = cfg.agent_mlp(dataset.n_agents, cfg.history * dataset.obs_dim, dataset.n_actions)
        self.net.to(ctx.device)
        self.optimizer, self.scheduler = make_optimizer(self.net.parameters(), ctx.train)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def update(self, step: int) -> dict[str, float]:
        self.net.train()
        batch = self.sampler.sample(self.ctx.train.batch_size, self.generator)
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            logits = self.net(batch.obs)  # (B, N, A)
        loss, accuracy = bc_loss(logits, batch)
        grad_norm = optimizer_step(
            loss, self.optimizer, self.scheduler, self.ctx.train.grad_clip, self.net.members
        )
        return {
            "loss/action": float(loss.detach()) / self.sampler.n_agents,
            "accuracy": float(accuracy),
            "grad_norm": grad_norm,
        }

    def policy_network(self) -> AgentMLP:
        """The policy network, obs ``(M, N, O)`` -> logits ``(M, N, A)`` (what finetuning trains further)."""
        return self.net

    def policy(self) -> GreedyPolicy:
        return GreedyPolicy(lambda obs, mask: self.net(obs), [self.net], self.ctx.device, self.cfg.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])


register(
    AlgoEntry(
        "bc",
        Config,
        BC,
        "behaviour cloning: an independent MLP policy per agent",
        display_name=METHOD_NAMES["bc"],
    )
)
