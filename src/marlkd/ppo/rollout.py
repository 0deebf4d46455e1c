"""Rollouts: one episode in each environment copy, with the actor's log-probabilities and the critic's
values, and the :class:`History` a sequence actor reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlkd.envs import EnvSpec
from marlkd.models.layouts import masked_logits
from marlkd.ppo.networks import Critic, RunningNorm, history_len


@dataclass
class Rollout:
    """One rollout: an episode in each of B copies, T = ``spec.max_steps`` steps (padded after the end).

    Shapes: ``obs``/``next_obs`` ``(T, B, N, O)``, ``actions`` ``(T, B, N)`` int64, ``env_rewards``
    ``(T, B, N)`` (the environment's, unscaled), ``valid`` ``(T, B, N)`` bool (the agent acted at step t),
    ``action_mask`` ``(T, B, N, A)`` bool, ``critic_input`` ``(T, B, C)``, ``dones`` ``(T, B, N)`` bool
    (the agent's episode ended with step t). NumPy arrays, except the PPO internals ``log_probs`` and
    ``values`` ``(T, B, N)`` tensors.
    """

    obs: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    env_rewards: np.ndarray
    valid: np.ndarray
    dones: np.ndarray
    action_mask: np.ndarray
    critic_input: np.ndarray
    log_probs: torch.Tensor
    values: torch.Tensor
    terminated: np.ndarray | None = None  # (T, B, N) bool: the part of ``dones`` that are terminations

    def episode_returns(self) -> np.ndarray:
        """``(B, N)`` environment return of each copy's episode, per agent."""
        return self.env_rewards.sum(axis=0)


@dataclass
class History:
    """What a sequence actor reads at M decisions: each copy's last K steps of the current episode.

    Position K-1 is the current step; positions before the episode's start are padding (``mask`` False,
    zeros). Agent i's entries hold agent i's own data, so an actor that reads only them is decentralized.
    """

    obs: torch.Tensor  # (M, K, N, O)
    actions: torch.Tensor  # (M, K, N) int64: the action taken at each step; 0 at the current step
    reward_to_date: torch.Tensor  # (M, K, N): environment reward received in the episode before each step
    timesteps: torch.Tensor  # (M, K) int64: step index in the episode
    mask: torch.Tensor  # (M, K) bool


def gather_history(
    obs: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    step: torch.Tensor,
    copy: torch.Tensor,
    context: int,
) -> History:
    """The :class:`History` of decisions at ``step (M,)`` of copies ``copy (M,)`` of a rollout's arrays
    ``obs (T, B, N, O)``, ``actions (T, B, N)`` and ``rewards (T, B, N)`` (rollouts start at step 0)."""
    offsets = torch.arange(-context + 1, 1, device=obs.device)  # (K,)
    steps = step[:, None] + offsets  # (M, K)
    padding = (steps < 0)[..., None]  # (M, K, 1)
    at, b = steps.clamp(min=0), copy[:, None]
    reward_to_date = rewards.cumsum(0) - rewards  # (T, B, N)
    current = (offsets == 0)[None, :, None]  # (1, K, 1)
    return History(
        obs=obs[at, b].masked_fill(padding[..., None], 0.0),
        actions=actions[at, b].masked_fill(padding | current, 0),
        reward_to_date=reward_to_date[at, b].masked_fill(padding, 0.0),
        timesteps=at.masked_fill(padding[..., 0], 0),
        mask=~padding[..., 0],
    )


def _critic_input(env: Any, obs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "state":
        return np.array(env.state(), dtype=np.float32)  # (B, S); a copy: jax-backed arrays are read-only
    return obs.reshape(obs.shape[0], -1)  # (B, N*O)


@torch.no_grad()
def collect_rollout(
    env: Any,
    actor: nn.Module,
    critic: Critic,
    value_norm: RunningNorm | None,
    critic_kind: str,
    reset_seed: int,
    generator: torch.Generator,
    device: torch.device,
) -> Rollout:
    """Run one episode in every copy of ``env`` with actions sampled from ``actor``."""
    spec: EnvSpec = env.spec
    T, B, N = spec.max_steps, env.num_envs, spec.n_agents
    obs = env.reset(seed=reset_seed)
    buf: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "next", "act", "rew", "valid", "done", "term", "mask", "crit")
    }
    log_probs, values = [], []
    agent_done = np.zeros((B, N), dtype=bool)
    context = history_len(actor)
    if context:  # the episode so far, for a sequence actor
        seen_obs = torch.zeros(T, B, N, spec.obs_dim, device=device)
        seen_actions = torch.zeros(T, B, N, dtype=torch.int64, device=device)
        seen_rewards = torch.zeros(T, B, N, device=device)
        copies = torch.arange(B, device=device)
    for t in range(T):
        mask = env.action_mask()  # (B, N, A)
        crit = _critic_input(env, obs, critic_kind)
        obs_t = torch.tensor(obs, dtype=torch.float32, device=device)  # (B, N, O)
        if context:
            seen_obs[t] = obs_t
            now = torch.full((B,), t, device=device)
            actor_input = gather_history(seen_obs, seen_actions, seen_rewards, now, copies, context)
        else:
            actor_input = obs_t
        logits = masked_logits(actor(actor_input), torch.tensor(mask, device=device))
        dist = torch.distributions.Categorical(logits=logits.float())
        probs = dist.probs.reshape(B * N, -1)
        actions = torch.multinomial(probs, 1, generator=generator).reshape(B, N)
        value = critic(torch.as_tensor(crit, device=device))  # (B, N)
        if value_norm is not None:
            value = value_norm.denormalize(value)
        actions_np = actions.cpu().numpy().astype(np.int64)
        next_obs, rewards, terminated, truncated = env.step(actions_np)
        valid = ~agent_done
        if context:
            seen_actions[t] = actions
            seen_rewards[t] = torch.as_tensor(rewards * valid, dtype=torch.float32, device=device)
        agent_done = agent_done | terminated | truncated
        for key, value_np in (
            ("obs", obs),
            ("next", next_obs),
            ("act", actions_np),
            ("rew", rewards * valid),
            ("valid", valid),
            ("done", (terminated | truncated) & valid),
            ("term", terminated & valid),
            ("mask", mask),
            ("crit", crit),
        ):
            buf[key].append(np.asarray(value_np))
        log_probs.append(dist.log_prob(actions))
        values.append(value)
        obs = next_obs
        if agent_done.all():
            break
    return _stacked(buf, log_probs, values, T)


def _stacked(
    buf: dict[str, list[np.ndarray]], log_probs: list[torch.Tensor], values: list[torch.Tensor], T: int
) -> Rollout:
    """The rollout's per-step records stacked along time and padded to ``T`` steps."""
    pad = T - len(buf["obs"])
    stacked = {k: np.stack(v) for k, v in buf.items()}
    if pad:  # every copy ended early: pad to T so rollouts keep one shape
        stacked = {
            k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in stacked.items()
        }
        stacked["mask"][-pad:] = True
    log_probs_t = F.pad(torch.stack(log_probs), (0, 0, 0, 0, 0, pad))
    values_t = F.pad(torch.stack(values), (0, 0, 0, 0, 0, pad))
    return Rollout(
        obs=stacked["obs"].astype(np.float32, copy=False),
        next_obs=stacked["next"].astype(np.float32, copy=False),
        actions=stacked["act"],
        env_rewards=stacked["rew"].astype(np.float32, copy=False),
        valid=stacked["valid"],
        dones=stacked["done"],
        terminated=stacked["term"],
        action_mask=stacked["mask"],
        critic_input=stacked["crit"].astype(np.float32, copy=False),
        log_probs=log_probs_t,
        values=values_t,
    )
