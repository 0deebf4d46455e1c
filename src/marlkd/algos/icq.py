"""MA-ICQ: implicit constraint Q-learning with value decomposition (Yang et al., 2021), discrete form.

Networks, as in the reference (ICQ-MA) and OG-MARL's MAICQ:

- per-agent critics ``Q^i(s, o^i, i; .)`` reading the global state s (the dataset's ``state``, or all
  agents' observations concatenated when it has none), the agent's own observation (or observation
  window) and its one-hot id;
- per-agent actors ``pi^i(. | o^i)`` on the agent's own observation (decentralized execution);
- a linear mixer without bias whose weights come from the state and sum to one:

    Q_tot(s, a) = sum_i k_i(s) Q^i(s, o^i, i; a^i),   k_i(s) = |w_i(s)| / sum_j |w_j(s)|.

ICQ replaces the maximum over actions by an expectation over the data's actions reweighted by
exp(Q / alpha), normalised over the mini-batch (the implicit constraint: the policy never leaves the
support of the data). For weights of the ``B`` included entries, ``w = B * softmax_batch(x / alpha)``.

- Critic: ``y = r + gamma * bootstrap * w_c * Qbar_tot(s', a')`` with (s', a') the dataset's next state
  and next joint action, ``w_c = B * softmax_batch(Qbar_tot(s', a') / critic_alpha)``, and the loss
  ``1/2 (Q_tot(s, a) - y)^2``. Qbar: target critics and mixer. r is the team reward, the mean of the
  agents' rewards (per-agent scale, so alpha does not depend on N). The team's episode ends at its last
  stored step: terminal only when every agent still acting there terminated
  (:func:`marlkd.data.transitions.team_end`), otherwise a truncation (``truncation`` rule).
- Actor (the decomposed policy objective): per agent,
  ``A^i = Q^i(a^i) - sum_a pi^i(a | o^i) Q^i(a)``,
  ``w_i = B * softmax_batch(A^i / actor_alpha)``, loss ``-mean(k_i(s) w_i log pi^i(a^i | o^i))``: the
  gradient of Q_tot's policy objective reaches agent i through its mixing weight k_i(s).

Weights carry no gradient. The temperatures are the reference's (critic 1000, actor 0.1). The paper's
TD(lambda) over whole episodes is replaced by one-step targets on sampled transitions, and its recurrent
agent networks by MLPs on the current observation or an observation window (``history``), as for the other
MLP baselines. Execution is decentralized: each agent's greedy available action under pi^i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.algos import AlgoEntry, register
from marlkd.algos._value import ValueConfig, ValueLearner, frozen_copy, update_targets
from marlkd.algos.base import GreedyPolicy
from marlkd.config import check
from marlkd.data.transitions import Transitions, bootstrap_weights, team_end
from marlkd.models.agent_nets import AgentMLP
from marlkd.models.layers import MLP
from marlkd.models.layouts import NEG_INF, masked_logits
from marlkd.names import METHOD_NAMES
from marlkd.optim import autocast, make_optimizer, optimizer_step


@dataclass(frozen=True)
class Config(ValueConfig):
    """ICQ settings (besides the network size and inputs and the shared value settings).

    Attributes:
        actor_alpha: temperature of the actor's advantage weights (smaller: greedier; the reference's 0.1).
        critic_alpha: temperature of the critic target's weights (the reference's 1000: close to SARSA on
            the data; each sample's target is its own weight times its own next value, so a small
            temperature makes the targets high-variance).
        mixer_hidden: width of the mixer's state network.
    """

    actor_alpha: float = 0.1
    critic_alpha: float = 1000.0
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
    """Q_tot = sum_i k_i(s) Q^i with k(s) >= 0 summing to one over the agents, no bias: agent values
    ``(B, N)`` and state ``(B, S)`` -> ``(B,)``."""

    def __init__(self, n_agents: int, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.weights = MLP(state_dim, hidden, n_agents, layers=1)

    def agent_weights(self, state: torch.Tensor) -> torch.Tensor:
        """k(s) ``(B, N)``: non-negative, summing to one over the agents."""
        w = self.weights(state).abs() + 1e-8
        return w / w.sum(-1, keepdim=True)

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return (self.agent_weights(state) * agent_q).sum(-1)


def critic_inputs(state: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Each agent's critic input: the state ``(B, S)`` beside its own observation ``(B, N, O)`` ->
    ``(B, N, S + O)`` (the agent id is appended by the network)."""
    return torch.cat((state[:, None].expand(-1, obs.shape[1], -1), obs), dim=-1)


class ICQ(ValueLearner):
    """Multi-agent ICQ (see the module docstring)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        cfg: Config = self.cfg
        dataset = ctx.dataset
        N, O, A = dataset.n_agents, cfg.history * dataset.obs_dim, dataset.n_actions
        S = self.sampler.state_dim
        self.q = AgentMLP(N, S + O, cfg.hidden, A, cfg.layers, cfg.share_weights, agent_id=True)
        self.q.to(ctx.device)
        self.mixer = LinearMixer(N, S, cfg.mixer_hidden).to(ctx.device)
        self.actor = self.agent_net()
        self.q_target, self.mixer_target = frozen_copy(self.q), frozen_copy(self.mixer)
        critic_params = list(self.q.parameters()) + list(self.mixer.parameters())
        self.critic_optimizer, self.critic_scheduler = make_optimizer(critic_params, ctx.train)
        self.actor_optimizer, self.actor_scheduler = make_optimizer(self.actor.parameters(), ctx.train)

    def critic_loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            q = self.q(critic_inputs(batch.state, batch.obs)).float()  # (B, N, A)
            q_tot = self.mixer(q.gather(-1, batch.actions[..., None])[..., 0], batch.state).float()  # (B,)
            with torch.no_grad():
                next_q = self.q_target(critic_inputs(batch.next_state, batch.next_obs)).float()
                next_q_data = next_q.gather(-1, batch.next_actions[..., None])[..., 0]  # (B, N)
                next_tot = self.mixer_target(next_q_data, batch.next_state).float()  # (B,)
        team_terminal, team_truncated = team_end(batch.terminal, batch.truncated, batch.alive, batch.has_next)
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
            q = self.q(critic_inputs(batch.state, batch.obs)).float()  # (B, N, A)
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

    def _update_once(self, step: int) -> dict[str, float]:
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
            actor_loss, self.actor_optimizer, self.actor_scheduler, clip, self.actor.members
        )
        update_targets([(self.q_target, self.q), (self.mixer_target, self.mixer)], self.cfg, step)
        return metrics

    def policy_network(self) -> AgentMLP:
        """The actors pi^i, obs ``(M, N, O)`` -> logits ``(M, N, A)`` (what finetuning trains further)."""
        return self.actor

    def policy(self) -> GreedyPolicy:
        return GreedyPolicy(
            lambda obs, mask: self.actor(obs), [self.actor], self.ctx.device, self.cfg.history
        )

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


register(
    AlgoEntry(
        "icq",
        Config,
        ICQ,
        "implicit constraint Q-learning, state-conditioned critics, linear mixer",
        display_name=METHOD_NAMES["icq"],
    )
)
