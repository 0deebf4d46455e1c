"""Batched rollouts of any registered environment into the arrays of the dataset format.

Shapes: B copies stepped together, N agents, O observation size, S state size, A actions, T the
environment's ``max_steps``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.data.format import write_dataset
from marlkd.envs import env_spec, make_batched
from marlkd.progress import progress_bar

# act_fn(obs (B,N,O) float32, action_mask (B,N,A) bool, rng) -> actions (B,N) int64
ActFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
# on_reset(first episode index of the chunk, B, rng): a chunk of B episodes starts
ResetFn = Callable[[int, int, np.random.Generator], None]


def random_act_fn(obs: np.ndarray, action_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random available actions ``(B, N)`` int64 (action 0 where an agent has none available)."""
    scores = np.where(action_mask, rng.random(action_mask.shape), -1.0)  # (B, N, A)
    return scores.argmax(axis=-1).astype(np.int64)


def _seeds(seed: int) -> tuple[int, np.random.Generator]:
    """An environment base seed and an action generator, independent streams derived from ``seed``."""
    env_key, action_key = np.random.SeedSequence(seed).spawn(2)
    env_base = int(env_key.generate_state(1, np.uint64)[0] >> np.uint64(2))  # leaves room for + episode index
    return env_base, np.random.default_rng(action_key)


def collect_episodes(
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    act_fn: ActFn,
    episodes: int,
    seed: int,
    num_envs: int = 256,
    progress: bool = False,
    on_reset: ResetFn | None = None,
) -> dict[str, np.ndarray]:
    """Roll out ``act_fn`` in ``env_id`` until ``episodes`` episodes are done, ``num_envs`` at a time.

    Args:
        env_id: registered environment id.
        env_kwargs: its constructor arguments (None for the defaults).
        act_fn: ``(obs (B,N,O), action_mask (B,N,A), rng) -> actions (B,N)`` integer; it is called once per
            timestep for all copies, with the generator collection draws from.
        episodes: number of episodes E to return.
        seed: makes the result deterministic (together with ``num_envs`` and a deterministic ``act_fn``).
            Chunk c of copies is reset with seed ``base + c * num_envs``, ``base`` derived from ``seed``.
        num_envs: copies stepped together; the last chunk runs all copies and keeps the first ones needed.
        progress: show a progress bar over episodes.
        on_reset: called as ``on_reset(start, B, rng)`` before each chunk of B episodes starts (``start``:
            the index of its first episode), for behaviour policies that fix something per episode.

    Returns:
        The arrays of the dataset format with T = the environment's ``max_steps``: ``obs (E,T,N,O)``,
        ``actions``, ``rewards``, ``terminals``, ``truncations`` ``(E,T,N)``, ``mask (E,T)``, plus
        ``state (E,T,S)`` when the environment has a global state and ``avail_actions (E,T,N,A)`` when it
        has action masks. Step t holds o_t, a_t and the reward and done flags ``step`` returned for a_t.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    kwargs = dict(env_kwargs or {})
    spec = env_spec(env_id, **kwargs)
    batch = min(num_envs, episodes)
    env = make_batched(env_id, batch, **kwargs)
    shapes = _step_shapes(spec)
    out = {name: np.zeros((episodes, *shape), dtype=dtype) for name, (shape, dtype) in shapes.items()}
    chunk = {name: np.zeros((batch, *shape), dtype=dtype) for name, (shape, dtype) in shapes.items()}

    env_base, rng = _seeds(seed)
    bar = progress_bar(progress, total=episodes, desc=f"collect {env_id}", unit="ep")
    for start in range(0, episodes, batch):
        for array in chunk.values():
            array.fill(0)
        obs = env.reset(seed=env_base + start)
        if on_reset is not None:
            on_reset(start, batch, rng)
        _roll_out(env_id, env, obs, act_fn, rng, chunk)
        kept = min(batch, episodes - start)
        for name, array in chunk.items():
            out[name][start : start + kept] = array[:kept]
        bar.update(kept)
    bar.close()
    return out


def _step_shapes(spec: Any) -> dict[str, tuple[tuple[int, ...], type]]:
    """Each array's shape per episode ``(T, ...)`` and dtype, for an environment of ``spec``."""
    steps, agents = spec.max_steps, spec.n_agents
    shapes: dict[str, tuple[tuple[int, ...], type]] = {
        "obs": ((steps, agents, spec.obs_dim), np.float32),
        "actions": ((steps, agents), np.int64),
        "rewards": ((steps, agents), np.float32),
        "mask": ((steps,), np.bool_),
        "terminals": ((steps, agents), np.bool_),
        "truncations": ((steps, agents), np.bool_),
    }
    if spec.state_dim > 0:
        shapes["state"] = ((steps, spec.state_dim), np.float32)
    if spec.has_action_mask:
        shapes["avail_actions"] = ((steps, agents, spec.n_actions), np.bool_)
    return shapes


def _roll_out(
    env_id: str,
    env: Any,
    obs: np.ndarray,
    act_fn: ActFn,
    rng: np.random.Generator,
    chunk: dict[str, np.ndarray],
) -> None:
    """Step the just-reset copies of ``env`` (first observations ``obs``) until every episode ends, into
    ``chunk`` (zeros, ``(B, T, ...)``); steps after a copy's episode ended stay zeros."""
    batch, steps, agents = chunk["actions"].shape
    for t in range(steps):
        active = ~env.done()  # (B,)
        if not active.any():
            break
        action_mask = env.action_mask()  # (B, N, A)
        actions = np.asarray(act_fn(obs, action_mask, rng))
        if actions.shape != (batch, agents) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"act_fn must return integer actions of shape {(batch, agents)}, got {actions.dtype} "
                f"{actions.shape}"
            )
        chunk["obs"][:, t] = obs
        chunk["actions"][:, t] = actions
        chunk["mask"][:, t] = active
        if "state" in chunk:
            chunk["state"][:, t] = env.state()
        if "avail_actions" in chunk:
            chunk["avail_actions"][:, t] = action_mask
        obs, rewards, terminated, truncated = env.step(actions.astype(np.int64, copy=False))
        chunk["rewards"][:, t] = rewards
        chunk["terminals"][:, t] = terminated
        chunk["truncations"][:, t] = truncated
    if not env.done().all():
        raise RuntimeError(f"environment {env_id!r} did not end its episodes within max_steps={steps}")
    padding = ~chunk["mask"]  # (B, T): steps after a copy's episode ended are zeros
    for name, array in chunk.items():
        if name != "mask":
            array[padding] = 0


def collect_random_dataset(
    env_id: str,
    episodes: int,
    out: str | os.PathLike[str],
    seed: int,
    env_kwargs: Mapping[str, Any] | None = None,
    num_envs: int = 256,
    progress: bool = False,
) -> Path:
    """Collect ``episodes`` episodes of uniformly random available actions and write them to ``out``.

    The file's quality is ``"random"`` and its ``behavior_policy`` records the function and every argument
    needed to remake it bit for bit. Returns the path written.
    """
    given = dict(env_kwargs or {})
    spec = env_spec(env_id, **given)
    kwargs = {**spec.kwargs, **given}  # every constructor argument, so later default changes do not matter
    arrays = collect_episodes(
        env_id, kwargs, random_act_fn, episodes, seed, num_envs=num_envs, progress=progress
    )
    recipe = {
        "name": "random",
        "description": "uniformly random available actions",
        "function": "marlkd.data.collect_random_dataset",
        "arguments": {
            "env_id": env_id,
            "episodes": episodes,
            "seed": seed,
            "env_kwargs": kwargs,
            "num_envs": num_envs,
        },
    }
    metadata = {
        "env_id": env_id,
        "env_kwargs": kwargs,
        "n_actions": spec.n_actions,
        "behavior_policy": recipe,
        "quality": "random",
        "seed": seed,
    }
    return write_dataset(out, arrays, metadata)
