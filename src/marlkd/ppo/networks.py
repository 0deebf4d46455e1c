"""PPO's networks (the centralized and the shared actor, the per-agent critic, the running value
normalizer) and :class:`PPOPolicy`, a trained actor acting in a batched environment."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from marlkd.envs import EnvSpec
from marlkd.errors import MarlkdError
from marlkd.models.layouts import masked_logits
from marlkd.ppo.config import PPOConfig


def _mlp(in_dim: int, hidden: int, out_dim: int, out_gain: float) -> nn.Sequential:
    """Two tanh hidden layers, orthogonal initialisation (gain sqrt 2 inside, ``out_gain`` at the output)."""
    layers = [
        nn.Linear(in_dim, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, out_dim),
    ]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, out_gain if layer.out_features == out_dim else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class CentralizedActor(nn.Module):
    """Joint observation -> one action head per agent: obs ``(M, N, O)`` -> logits ``(M, N, A)``."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        self.net = _mlp(n_agents * obs_dim, hidden, n_agents * n_actions, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        logits = self.net(obs.flatten(-2))  # (M, N*A)
        return logits.unflatten(-1, (self.n_agents, self.n_actions))  # (M, N, A)


class SharedActor(nn.Module):
    """MAPPO's actor: shared weights on own observation + one-hot id: obs ``(M, N, O)`` -> ``(M, N, A)``."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.net = _mlp(obs_dim + n_agents, hidden, n_actions, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        agent_id = torch.eye(self.n_agents, device=obs.device, dtype=obs.dtype)  # (N, N)
        agent_id = agent_id.expand(*obs.shape[:-2], -1, -1)  # (M, N, N)
        return self.net(torch.cat([obs, agent_id], dim=-1))  # (M, N, A)


class Critic(nn.Module):
    """Centralized critic: critic input ``(M, C)`` -> one value per agent ``(M, N)``."""

    def __init__(self, in_dim: int, n_agents: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden, n_agents, out_gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_actor(config: PPOConfig, spec: EnvSpec) -> nn.Module:
    """The built-in actor of ``config.mode`` for an environment of shape ``spec``."""
    cls = CentralizedActor if config.mode == "centralized" else SharedActor
    return cls(spec.n_agents, spec.obs_dim, spec.n_actions, config.hidden)


class RunningNorm(nn.Module):
    """Running mean and variance of value targets (MAPPO's ValueNorm without debiasing)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.zeros(()))

    def update(self, x: torch.Tensor) -> None:
        """Fold the values ``x`` (any shape) into the statistics (parallel Welford update)."""
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = x.mean(), x.var(unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.var.clamp_min(1e-8).sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.var.clamp_min(1e-8).sqrt() + self.mean


def history_len(actor: nn.Module) -> int:
    """K of a sequence actor (its ``history_len`` attribute), 0 for a memoryless actor."""
    return int(getattr(actor, "history_len", 0))


class PPOPolicy:
    """A trained PPO actor as a :class:`marlkd.algos.base.Policy` and as a collection ``act_fn``.

    Actions are the most probable available action (``deterministic=True``) or sampled from the actor's
    distribution with a NumPy generator, so that a collection seeded the same way is reproduced exactly.
    The centralized mode's actor reads all agents' observations: it is a team expert, not a decentralized
    policy.
    """

    def __init__(self, actor: nn.Module, deterministic: bool = False, seed: int = 0, device: str = "cpu"):
        if history_len(actor):
            raise MarlkdError("PPOPolicy runs memoryless actors; a sequence actor needs its own policy")
        self.actor = actor.eval()
        self.deterministic = deterministic
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def probs(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """obs ``(B, N, O)``, action_mask ``(B, N, A)`` or None -> probabilities ``(B, N, A)`` float64."""
        logits = self.actor(torch.tensor(obs, dtype=torch.float32, device=self.device))
        mask = None if action_mask is None else torch.tensor(action_mask, device=self.device)
        logits = masked_logits(logits.float(), mask)
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def act_fn(self, obs: np.ndarray, action_mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """Collection callback: actions ``(B, N)`` int64, sampled with ``rng`` unless deterministic."""
        probs = self.probs(obs, action_mask)
        if self.deterministic:
            return probs.argmax(-1).astype(np.int64)
        return sample_categorical(probs, rng)

    def reset(self, num_envs: int) -> None:
        """Nothing to reset: the actor is memoryless."""

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        return self.act_fn(obs, action_mask, self.rng)

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """Rewards are not used: the actor is memoryless."""


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one index per row of ``probs (..., A)`` by inverse CDF; zero-probability entries never win."""
    cdf = np.cumsum(probs, axis=-1)
    u = (1.0 - rng.random(probs.shape[:-1] + (1,))) * cdf[..., -1:]  # in (0, total]
    return (cdf < u).sum(axis=-1).astype(np.int64)
