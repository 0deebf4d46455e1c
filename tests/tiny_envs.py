"""A trivially learnable batched environment for the PPO and expert tests (registered as ``test-match``).

Each step every agent sees a random target action (one-hot) and the time fraction; it earns +1 for playing
its target. Random play earns ``max_steps / n_actions`` per agent, perfect play ``max_steps``. With
``masked=True`` the action after the target (cyclically) is unavailable, so masks matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marlkd.envs import EnvEntry, EnvSpec, register

ENV_ID = "test-match"


def spec(n_agents: int = 2, n_actions: int = 3, max_steps: int = 8, masked: bool = False) -> EnvSpec:
    return EnvSpec(
        env_id=ENV_ID,
        n_agents=n_agents,
        obs_dim=n_actions + 1,
        n_actions=n_actions,
        state_dim=n_agents * n_actions,
        max_steps=max_steps,
        has_action_mask=masked,
        kwargs={"n_agents": n_agents, "n_actions": n_actions, "max_steps": max_steps, "masked": masked},
    )


class MatchBatched:
    """``num_envs`` copies of the matching game (the :class:`marlkd.envs.BatchedEnv` protocol)."""

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        self.spec = spec(**kwargs)
        self.num_envs = num_envs
        self._rng = np.random.default_rng(0)
        self._t = 0
        self._target = np.zeros((num_envs, self.spec.n_agents), dtype=np.int64)

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.spec.n_agents, self.spec.obs_dim), dtype=np.float32)
        np.put_along_axis(obs, self._target[..., None], 1.0, axis=-1)
        obs[..., -1] = self._t / self.spec.max_steps
        return obs

    def _draw(self) -> None:
        self._target = self._rng.integers(self.spec.n_actions, size=self._target.shape)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._rng = np.random.default_rng(seed)
        self._t = 0
        self._draw()
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        active = not self.done().all()
        rewards = ((actions == self._target) & active).astype(np.float32)  # (B, N)
        self._t += int(active)
        self._draw()
        truncated = np.full(rewards.shape, self._t >= self.spec.max_steps)
        return self._observe(), rewards, np.zeros_like(truncated), truncated

    def state(self) -> np.ndarray:
        onehot = np.eye(self.spec.n_actions, dtype=np.float32)[self._target]  # (B, N, A)
        return onehot.reshape(self.num_envs, -1)

    def action_mask(self) -> np.ndarray:
        mask = np.ones((self.num_envs, self.spec.n_agents, self.spec.n_actions), dtype=bool)
        if self.spec.has_action_mask:
            blocked = (self._target + 1) % self.spec.n_actions
            np.put_along_axis(mask, blocked[..., None], False, axis=-1)
        return mask

    def done(self) -> np.ndarray:
        return np.full(self.num_envs, self._t >= self.spec.max_steps)


EARLY_ENV_ID = "test-match-early"


def early_spec(n_agents: int = 2, n_actions: int = 3, max_steps: int = 8) -> EnvSpec:
    base = spec(n_agents, n_actions, max_steps)
    kwargs = {"n_agents": n_agents, "n_actions": n_actions, "max_steps": max_steps}
    return EnvSpec(EARLY_ENV_ID, n_agents, base.obs_dim, n_actions, base.state_dim, max_steps, False, kwargs)


class EarlyMatchBatched(MatchBatched):
    """The matching game where a copy's episode terminates, for every agent, at its first miss: episodes
    end early and at different steps, as a budget counted in environment steps must handle."""

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        super().__init__(num_envs, **kwargs)
        self.spec = early_spec(**kwargs)
        self._over = np.zeros(num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._over = np.zeros(self.num_envs, dtype=bool)
        return super().reset(seed)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        live = ~self.done()  # (B,)
        hit = actions == self._target  # (B, N)
        rewards = (hit & live[:, None]).astype(np.float32)
        self._over |= live & ~hit.all(-1)
        self._t += int(live.any())
        self._draw()
        terminated = np.repeat(self._over[:, None], self.spec.n_agents, axis=1)
        truncated = ~terminated & (self._t >= self.spec.max_steps)
        return self._observe(), rewards, terminated, truncated

    def done(self) -> np.ndarray:
        return self._over | (self._t >= self.spec.max_steps)


def _single_form(**kwargs: Any) -> Any:
    raise NotImplementedError(f"{ENV_ID} is a test environment with a batched form only")


register(
    EnvEntry(ENV_ID, make=_single_form, make_batched=MatchBatched, spec=spec, description="test env"),
    overwrite=True,
)
register(
    EnvEntry(
        EARLY_ENV_ID,
        make=_single_form,
        make_batched=EarlyMatchBatched,
        spec=early_spec,
        description="test env",
    ),
    overwrite=True,
)
