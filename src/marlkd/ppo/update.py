"""PPO's update: GAE advantages, the clipped surrogate, and epochs of minibatch steps over a rollout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from marlkd.models.layouts import masked_logits
from marlkd.ppo.config import PPOConfig
from marlkd.ppo.networks import Critic, RunningNorm, history_len
from marlkd.ppo.rollout import Rollout, gather_history

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a rollout, per copy and agent.

    Args:
        rewards: ``(T, B, N)`` reward of the action at step t.
        values: ``(T, B, N)`` value estimate of the state at step t.
        dones: ``(T, B, N)`` 1 where the agent's episode ended with step t (no bootstrap past it).
        last_values: ``(B, N)`` value of the state after the last step (used where not done).
        gamma: discount. gae_lambda: GAE lambda.

    Returns:
        advantages ``(T, B, N)`` and value targets ``advantages + values``. Entries after an episode's
        end are not meaningful (mask them out); they never leak into earlier steps.
    """
    not_done = 1.0 - dones.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        running = delta + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


def clipped_surrogate_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    weights: torch.Tensor,
) -> torch.Tensor:
    """PPO's clipped objective as a loss: ``-mean(min(ratio * adv, clip(ratio, 1 +- clip) * adv))``.

    All tensors share one shape (e.g. ``(M, N)``); ``weights`` (0/1) selects the valid entries.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return -(surrogate * weights).sum() / weights.sum().clamp_min(1)


def learning_rewards(rollout: Rollout, config: PPOConfig, reward_fn: RewardFn | None) -> np.ndarray:
    """``(T, B, N)`` rewards PPO learns from: the environment's or ``reward_fn``'s, scaled, team-summed."""
    if reward_fn is None:
        rewards = rollout.env_rewards
    else:
        T, B = rollout.actions.shape[:2]
        flat = reward_fn(
            rollout.obs.reshape(T * B, *rollout.obs.shape[2:]),
            rollout.actions.reshape(T * B, -1),
            rollout.next_obs.reshape(T * B, *rollout.next_obs.shape[2:]),
        )
        if isinstance(flat, torch.Tensor):
            flat = flat.detach().cpu().numpy()
        rewards = np.asarray(flat, dtype=np.float32).reshape(rollout.env_rewards.shape) * rollout.valid
    if config.advantage == "team":
        rewards = np.broadcast_to(rewards.sum(axis=-1, keepdims=True), rewards.shape)
    return (rewards * config.reward_scale).astype(np.float32)


def ppo_update(
    rollout: Rollout,
    rewards: np.ndarray,
    actor: nn.Module,
    critic: Critic,
    value_norm: RunningNorm | None,
    optimizer: torch.optim.Optimizer,
    config: PPOConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """GAE on ``rewards (T, B, N)``, then ``config.epochs`` epochs of clipped-PPO minibatch steps."""

    def flat(x: np.ndarray | torch.Tensor) -> torch.Tensor:  # (T, B, ...) -> (T*B, ...)
        return torch.as_tensor(x, device=device).flatten(0, 1)

    advantages, returns = compute_gae(
        torch.as_tensor(rewards, device=device),
        rollout.values,
        torch.as_tensor(rollout.dones, device=device),
        torch.zeros_like(rollout.values[0]),
        config.gamma,
        config.gae_lambda,
    )
    valid = flat(rollout.valid)  # (M, N) bool
    advantages, returns = flat(advantages), flat(returns)
    if value_norm is not None:
        value_norm.update(returns[valid])
    advantages = (advantages - advantages[valid].mean()) / (advantages[valid].std() + 1e-8)
    samples = torch.nonzero(valid.any(-1)).squeeze(-1)  # timesteps where some agent acted
    obs, actions, mask = flat(rollout.obs), flat(rollout.actions), flat(rollout.action_mask)
    crit, old_log_probs, valid = flat(rollout.critic_input), flat(rollout.log_probs), valid.float()
    context, copies = history_len(actor), rollout.actions.shape[1]
    if context:
        episodes = tuple(
            torch.as_tensor(x, device=device) for x in (rollout.obs, rollout.actions, rollout.env_rewards)
        )

    stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_frac": 0.0}
    steps = 0
    size = math.ceil(len(samples) / config.minibatches)
    for _ in range(config.epochs):
        order = samples[torch.randperm(len(samples), generator=generator).to(device)]
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            w = valid[idx]  # (m, N)
            actor_input = (
                gather_history(*episodes, idx // copies, idx % copies, context) if context else obs[idx]
            )
            logits = masked_logits(actor(actor_input), mask[idx]).float()  # (m, N, A)
            dist = torch.distributions.Categorical(logits=logits)
            log_probs = dist.log_prob(actions[idx])
            policy_loss = clipped_surrogate_loss(
                log_probs, old_log_probs[idx], advantages[idx], config.clip, w
            )
            entropy = (dist.entropy() * w).sum() / w.sum()
            target = value_norm.normalize(returns[idx]) if value_norm is not None else returns[idx]
            value_loss = 0.5 * (((critic(crit[idx]) - target) ** 2) * w).sum() / w.sum()
            loss = policy_loss - config.ent_coef * entropy + value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(actor.parameters(), config.max_grad_norm)
                nn.utils.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                log_ratio = log_probs - old_log_probs[idx]
                kl = (((log_ratio.exp() - 1) - log_ratio) * w).sum() / w.sum()
                clipped = (((log_ratio.exp() - 1).abs() > config.clip).float() * w).sum() / w.sum()
            for key, value in (
                ("policy_loss", policy_loss),
                ("value_loss", value_loss),
                ("entropy", entropy),
                ("approx_kl", kl),
                ("clip_frac", clipped),
            ):
                stats[key] += float(value.detach())
            steps += 1
    return {k: v / max(steps, 1) for k, v in stats.items()}
