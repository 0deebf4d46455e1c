"""MA-ICQ: implicit constraint Q-learning with value decomposition (Yang et al., 2021), discrete form.

Networks: per-agent critics Q^i(o^i, .) and per-agent actors pi^i(. | o^i) (independent MLP ensembles,
:class:`marlkd.models.agent_nets.AgentMLP`), and a linear mixer whose non-negative weights and bias come
from the global state s (the dataset's ``state``, or all agents' observations concatenated when it has
none):

    Q_tot(s, a) = sum_i k_i(s) Q^i(o^i, a^i) + b(s),   k_i(s) = |w_i(s)| >= 0.

ICQ replaces the maximum over actions by an expectation over the data's actions reweighted by
exp(Q / alpha), normalised over the mini-batch (the implicit constraint: the policy never leaves the
support of the data). For weights of the ``B`` included entries, ``w = B * softmax_batch(x / alpha)``.

- Critic: ``y = r + gamma * bootstrap * w_c * Qbar_tot(s', a')`` with (s', a') the dataset's next state
  and next joint action, ``w_c = B * softmax_batch(Qbar_tot(s', a') / critic_alpha)``, and the loss
  ``1/2 (Q_tot(s, a) - y)^2``. Qbar: Polyak-averaged target critics and mixer. r is the team reward,
  the mean of the agents' rewards (per-agent scale, so alpha does not depend on N).
- Actor (the decomposed policy objective): per agent,
  ``A^i = Q^i(o^i, a^i) - sum_a pi^i(a | o^i) Q^i(o^i, a)``,
  ``w_i = B * softmax_batch(A^i / actor_alpha)``, loss ``-mean(k_i(s) w_i log pi^i(a^i | o^i))``: the
  gradient of Q_tot's policy objective reaches agent i through its mixing weight k_i(s).

Weights carry no gradient. The paper's TD(lambda) over whole episodes and recurrent agent networks are
replaced by one-step targets on sampled transitions and MLPs on the current observation, as for the other
baselines. Execution is decentralized: each agent's greedy available action under pi^i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos import AlgoEntry, register
from marlkd.algos._value import ValueConfig, frozen_copy, soft_update
from marlkd.algos.base import BaseAlgorithm, GreedyPolicy, checkpoint_state, load_checkpoint_state
from marlkd.config import check
from marlkd.data.transitions import Transitions, TransitionSampler, bootstrap_weights
from marlkd.models.agent_nets import AgentMLP
from marlkd.models.layers import MLP
from marlkd.models.layouts import NEG_INF, masked_logits
from marlkd.optim import autocast, make_optimizer, optimizer_step


@dataclass(frozen=True)
class Config(ValueConfig):
    """ICQ settings (besides the network size and the shared value settings).

    Attributes:
        actor_alpha: temperature of the actor's advantage weights (smaller: greedier).
        critic_alpha: temperature of the critic target's weights (large: SARSA on the data). Each sample's
            target is its own weight times its own next value, so a small temperature makes the targets
            high-variance (on the bandit of ``tests/test_baselines.py``: greedy accuracy 0.70 at 1.0 and
            0.9 at 10.0).
        mixer_hidden: width of the mixer's state networks.
    """

    actor_alpha: float = 0.1
    critic_alpha: float = 10.0
    mixer_hidden: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.actor_alpha > 0, "algo.actor_alpha", f"must be > 0, got {self.actor_alpha}")
        check(self.critic_alpha > 0, "algo.critic_alpha", f"must be > 0, got {self.critic_alpha}")
        check(self.mixer_hidden >= 1, "algo.mixer_hidden", f"must be >= 1, got {self.mixer_hidden}")


def batch_softmax_weights(values: torch.Tensor, include: torch.Tensor, alpha: float) -> torch.Tensor:
    """ICQ's weights over the batch axis 0: ``count * softmax(values / alpha)`` over the included entries.

    ``values (B, ...)`` and ``include (B, ...)`` bool -> weights ``(B, ...)``, 0 where not included, mean 1
    over the included entries of each trailing index (a column with none included is all 0)."""
    logits = (values.float() / alpha).masked_fill(~include, NEG_INF)
    return torch.softmax(logits, dim=0) * include.sum(0, keepdim=True) * include


class LinearMixer(nn.Module):
    """Q_tot = sum_i |w_i(s)| Q^i + b(s): agent values ``(B, N)`` and state ``(B, S)`` -> ``(B,)``."""

    def __init__(self, n_agents: int, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.weights = MLP(state_dim, hidden, n_agents, layers=1)
        self.bias = MLP(state_dim, hidden, 1, layers=1)

    def agent_weights(self, state: torch.Tensor) -> torch.Tensor:
        """k(s) ``(B, N)``, non-negative."""
        return self.weights(state).abs()

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return (self.agent_weights(state) * agent_q).sum(-1) + self.bias(state)[..., 0]


class ICQ(BaseAlgorithm):
    """Multi-agent ICQ (see the module docstring)."""

    def __init__(self, ctx) -> None:
        cfg: Config = ctx.config
        super().__init__(ctx)
        self.cfg = cfg
        dataset = ctx.dataset
        self.sampler = TransitionSampler(dataset, ctx.device)
        N, O, A = dataset.n_agents, dataset.obs_dim, dataset.n_actions
        self.q = AgentMLP(N, O, cfg.hidden, A, cfg.layers).to(ctx.device)
        self.mixer = LinearMixer(N, self.sampler.state_dim, cfg.mixer_hidden).to(ctx.device)
        self.actor = AgentMLP(N, O, cfg.hidden, A, cfg.layers).to(ctx.device)
        self.q_target, self.mixer_target = frozen_copy(self.q), frozen_copy(self.mixer)
        critic_params = list(self.q.parameters()) + list(self.mixer.parameters())
        self.critic_optimizer, self.critic_scheduler = make_optimizer(critic_params, ctx.train)
        self.actor_optimizer, self.actor_scheduler = make_optimizer(self.actor.parameters(), ctx.train)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def critic_loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            q = self.q(batch.obs).float()  # (B, N, A)
            q_tot = self.mixer(q.gather(-1, batch.actions[..., None])[..., 0], batch.state).float()  # (B,)
            with torch.no_grad():
                next_q = self.q_target(batch.next_obs).float()
                next_q_data = next_q.gather(-1, batch.next_actions[..., None])[..., 0]  # (B, N)
                next_tot = self.mixer_target(next_q_data, batch.next_state).float()  # (B,)
        team_terminal = ~batch.has_next & batch.terminal.any(-1)
        team_truncated = ~batch.has_next & ~team_terminal
        bootstrap, td_weight = bootstrap_weights(
            team_terminal, team_truncated, batch.has_next, cfg.truncation
        )
        weights = batch_softmax_weights(next_tot, bootstrap > 0, cfg.critic_alpha)  # (B,)
        team_reward = batch.rewards.mean(-1)
        target = team_reward + cfg.gamma * bootstrap * weights * next_tot
        td = 0.5 * (q_tot - target) ** 2
        loss = (td * td_weight).sum() / td_weight.sum().clamp(min=1.0)
        return loss, {"loss/critic": float(loss.detach()), "q/tot": float(q_tot.detach().mean())}

    def actor_loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad(), autocast(self.ctx.device, self.ctx.autocast_dtype):
            q = self.q(batch.obs).float()  # (B, N, A)
            k = self.mixer.agent_weights(batch.state).float()  # (B, N)
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            logits = self.actor(batch.obs).float()
        log_pi = F.log_softmax(masked_logits(logits, batch.avail), dim=-1)  # (B, N, A)
        with torch.no_grad():
            value = (log_pi.exp() * q).sum(-1)  # (B, N): V^i = E_{a ~ pi^i} Q^i
            advantage = q.gather(-1, batch.actions[..., None])[..., 0] - value
            weights = k * batch_softmax_weights(advantage, batch.alive, self.cfg.actor_alpha)  # (B, N)
        log_pi_data = log_pi.gather(-1, batch.actions[..., None])[..., 0]
        per_agent = -(weights * log_pi_data).sum(0) / batch.alive.sum(0).clamp(min=1)  # (N,)
        return per_agent.sum(), {
            "loss/actor": float(per_agent.detach().mean()),
            "advantage": float((advantage * batch.alive).sum() / batch.alive.sum().clamp(min=1)),
        }

    def update(self, step: int) -> dict[str, float]:
        for module in (self.q, self.mixer, self.actor):
            module.train()
        batch = self.sampler.sample(self.ctx.train.batch_size, self.generator)
        clip = self.ctx.train.grad_clip
        critic_loss, metrics = self.critic_loss(batch)
        metrics["grad_norm/critic"] = optimizer_step(
            critic_loss, self.critic_optimizer, self.critic_scheduler, clip
        )
        actor_loss, actor_metrics = self.actor_loss(batch)
        metrics.update(actor_metrics)
        metrics["grad_norm/actor"] = optimizer_step(
            actor_loss, self.actor_optimizer, self.actor_scheduler, clip
        )
        soft_update(self.q_target, self.q, self.cfg.target_tau)
        soft_update(self.mixer_target, self.mixer, self.cfg.target_tau)
        return metrics

    def policy_network(self) -> AgentMLP:
        """The actors pi^i, obs ``(M, N, O)`` -> logits ``(M, N, A)`` (what finetuning trains further)."""
        return self.actor

    def policy(self) -> GreedyPolicy:
        return GreedyPolicy(lambda obs, mask: self.actor(obs), [self.actor], self.ctx.device)

    def _checkpoint_parts(self) -> dict[str, Any]:
        return {
            "q": self.q,
            "mixer": self.mixer,
            "q_target": self.q_target,
            "mixer_target": self.mixer_target,
            "model": self.actor,
            "critic_optimizer": self.critic_optimizer,
            "critic_scheduler": self.critic_scheduler,
            "actor_optimizer": self.actor_optimizer,
            "actor_scheduler": self.actor_scheduler,
        }

    def state_dict(self) -> dict[str, Any]:
        return checkpoint_state(self._checkpoint_parts(), self.generator)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_checkpoint_state(self._checkpoint_parts(), self.generator, state)


register(AlgoEntry("icq", Config, ICQ, "implicit constraint Q-learning with a linear state mixer"))
