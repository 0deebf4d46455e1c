"""Batched decentralized evaluation: every policy acts in B copies of the environment at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.envs import make, make_batched

# env_id -> evaluator(policy, env_kwargs, episodes, seed) -> EvalResult, for environments marlkd does not
# run itself (data imported from elsewhere, evaluated in its own simulator).
_EVALUATORS: dict[str, Callable[..., EvalResult]] = {}


def register_evaluator(env_id: str, evaluator: Callable[..., EvalResult], *, overwrite: bool = False) -> None:
    """Evaluate policies of datasets recorded with ``env_id`` by ``evaluator`` instead of marlkd's loop.

    ``evaluator(policy, env_kwargs, episodes, seed)`` plays ``episodes`` episodes with the policy
    (``policy.reset(B)``, ``policy.act(obs (B, N, O), mask (B, N, A) or None) -> actions (B, N)``,
    ``policy.observe(rewards (B, N), done (B, N))``) and returns an :class:`EvalResult`. Register it in a
    module that ``--import`` or the ``marlkd.envs`` entry points load, so that the command line, sweeps and
    their workers see it.
    """
    if env_id in _EVALUATORS and not overwrite:
        raise ValueError(f"an evaluator for {env_id!r} is already registered")
    _EVALUATORS[env_id] = evaluator


def can_evaluate(env_id: str) -> bool:
    """Whether policies trained on ``env_id``'s data can be evaluated: an evaluator or the environment is
    registered (an environment whose optional extra is missing counts: evaluating it says what to install)."""
    from marlkd.envs.registry import UnknownEnvironmentError, describe

    if env_id in _EVALUATORS:
        return True
    try:
        describe(env_id)
    except UnknownEnvironmentError:
        return False
    except Exception:  # known, but its optional dependency is missing: evaluation reports it
        return True
    return True


@dataclass
class EvalResult:
    """Per-agent episode returns of an evaluation.

    Attributes:
        returns: ``(E, N)`` each agent's summed reward in each episode.
        lengths: ``(E,)`` episode lengths in steps.
        env_steps: environment steps taken (copies x steps).
    """

    returns: np.ndarray
    lengths: np.ndarray
    env_steps: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_episode(self) -> np.ndarray:
        """``(E,)`` mean per-agent return of each episode."""
        return self.returns.mean(axis=1)

    @property
    def mean(self) -> float:
        return float(self.per_episode.mean())

    @property
    def std(self) -> float:
        return float(self.per_episode.std())

    def summary(self) -> dict[str, float]:
        return {
            "return_mean": self.mean,
            "return_std": self.std,
            "episodes": int(len(self.lengths)),
            "episode_length_mean": float(self.lengths.mean()),
            "eval_env_steps": int(self.env_steps),
        }


def evaluate(
    policy,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    episodes: int,
    seed: int,
    batch_size: int | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` in ``env_id``, ``batch_size`` copies at a time (default: all).

    The policy sees each agent's observation and action mask; invalid actions are never sent (masked
    environments check them). Returns the per-agent episode returns. An evaluator registered for
    ``env_id`` (:func:`register_evaluator`) runs instead.
    """
    env_kwargs = dict(env_kwargs or {})
    if env_id in _EVALUATORS:
        return _EVALUATORS[env_id](policy, env_kwargs, episodes, seed)
    batch_size = min(episodes, batch_size or episodes)
    all_returns, all_lengths, env_steps = [], [], 0
    for start in range(0, episodes, batch_size):
        B = min(batch_size, episodes - start)
        env = make_batched(env_id, B, **env_kwargs)
        obs = env.reset(seed=seed + start)
        policy.reset(B)
        returns = np.zeros((B, env.spec.n_agents), dtype=np.float64)
        lengths = np.zeros(B, dtype=np.int64)
        masked = env.spec.has_action_mask
        for _ in range(env.spec.max_steps):
            alive = ~env.done()
            if not alive.any():
                break
            mask = env.action_mask() if masked else None
            actions = policy.act(obs, mask)
            if mask is not None:
                chosen = np.take_along_axis(mask, actions[..., None], axis=-1)[..., 0]
                if not chosen[alive].all():
                    raise RuntimeError(f"policy chose an unavailable action in {env_id}")
            obs, rewards, terminated, truncated = env.step(actions)
            returns += rewards
            lengths += alive
            env_steps += int(alive.sum())
            policy.observe(rewards, terminated | truncated)
        close = getattr(env, "close", None)
        if close is not None:
            close()
        all_returns.append(returns)
        all_lengths.append(lengths)
    return EvalResult(np.concatenate(all_returns), np.concatenate(all_lengths), env_steps)


def record_gif(
    policy, env_id: str, env_kwargs: dict[str, Any] | None, seed: int, path: str | Path, fps: int = 4
) -> Path:
    """Play one episode of ``policy`` in the single-copy environment and save its frames as a GIF."""
    from PIL import Image

    env = make(env_id, render_mode="rgb_array", **dict(env_kwargs or {}))
    obs, infos = env.reset(seed=seed)
    agents = list(env.possible_agents)
    policy.reset(1)
    frames = [env.render()]
    last_obs = dict(obs)  # an agent that is done keeps its last observation (its actions are ignored)
    while env.agents:
        last_obs.update(obs)
        stacked = np.stack([last_obs[a] for a in agents])[None]  # (1, N, O)
        masks = [infos.get(a, {}).get("action_mask") for a in agents]
        if any(m is not None for m in masks):  # an agent that has left may only "choose" action 0
            no_op = np.zeros_like(np.asarray(next(m for m in masks if m is not None), dtype=bool))
            no_op[0] = True
            masks = [
                no_op if m is None and a not in env.agents else m for m, a in zip(masks, agents, strict=True)
            ]
        mask = None if any(m is None for m in masks) else np.stack(masks)[None].astype(bool)
        actions = policy.act(stacked.astype(np.float32), mask)[0]
        obs, rewards, terms, truncs, infos = env.step(
            {a: int(actions[i]) for i, a in enumerate(agents) if a in env.agents}
        )
        reward_vec = np.array([[rewards.get(a, 0.0) for a in agents]], dtype=np.float32)
        done_vec = np.array([[terms.get(a, True) or truncs.get(a, True) for a in agents]])
        policy.observe(reward_vec, done_vec)
        frames.append(env.render())
    env.close()
    path = Path(path)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    tmp = path.with_suffix(".tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path
