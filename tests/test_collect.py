"""Batched collection into dataset arrays, on a tiny deterministic environment registered here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marlkd.data import collect_episodes, collect_random_dataset, load_dataset, random_act_fn, write_dataset
from marlkd.envs import EnvEntry, EnvSpec, env_spec, register

COUNTER = "test-counter"
AGENTS, ACTIONS, MAX_STEPS = 2, 3, 6


def _spec(masked: bool = True, never_ends: bool = False) -> EnvSpec:
    return EnvSpec(
        COUNTER,
        AGENTS,
        obs_dim=2,
        n_actions=ACTIONS,
        state_dim=1 if masked else 0,
        max_steps=MAX_STEPS,
        has_action_mask=masked,
        kwargs={"masked": masked, "never_ends": never_ends},
    )


class CounterBatched:
    """Copy b reset with seed s runs ``2 + (s + b) % 4`` steps; the reward is the action taken.

    Observation of agent i: (time fraction, i); state: the time fraction. Action 2 is unavailable at odd
    steps when ``masked``. With ``never_ends`` episodes ignore the step limit (a broken environment).
    """

    def __init__(self, num_envs: int, masked: bool = True, never_ends: bool = False) -> None:
        self.spec = _spec(masked, never_ends)
        self.num_envs = num_envs
        self._limit = 10**9 if never_ends else MAX_STEPS
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._length = np.zeros(num_envs, dtype=np.int64)

    def _obs(self) -> np.ndarray:
        obs = np.empty((self.num_envs, AGENTS, 2), dtype=np.float32)
        obs[..., 0] = (self._t / MAX_STEPS)[:, None]
        obs[..., 1] = np.arange(AGENTS)
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._t[:] = 0
        self._length = 2 + (int(seed or 0) + np.arange(self.num_envs)) % 4
        if self._limit > MAX_STEPS:
            self._length[:] = self._limit
        return self._obs()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        active = ~self.done()
        rewards = np.where(active[:, None], actions, 0).astype(np.float32)
        self._t += active
        terminated = self._t >= self._length
        truncated = (self._t >= self._limit) & ~terminated
        return (
            self._obs(),
            rewards,
            np.repeat(terminated[:, None], AGENTS, 1),
            np.repeat(truncated[:, None], AGENTS, 1),
        )

    def state(self) -> np.ndarray:
        return (self._t / MAX_STEPS).astype(np.float32)[:, None][:, : self.spec.state_dim]

    def action_mask(self) -> np.ndarray:
        mask = np.ones((self.num_envs, AGENTS, ACTIONS), dtype=bool)
        if self.spec.has_action_mask:
            mask[:, :, 2] = (self._t % 2 == 0)[:, None]
        return mask

    def done(self) -> np.ndarray:
        return (self._t >= self._length) | (self._t >= self._limit)


def _single_form(**kwargs: Any) -> Any:
    raise NotImplementedError("the collection tests use only the batched form")


register(
    EnvEntry(COUNTER, _single_form, CounterBatched, _spec, "collection test environment"), overwrite=True
)


def test_collect_records_every_field() -> None:
    arrays = collect_episodes(COUNTER, None, random_act_fn, episodes=9, seed=3, num_envs=4)
    assert set(arrays) == {
        "obs",
        "actions",
        "rewards",
        "mask",
        "terminals",
        "truncations",
        "state",
        "avail_actions",
    }
    assert arrays["obs"].shape == (9, MAX_STEPS, AGENTS, 2) and arrays["state"].shape == (9, MAX_STEPS, 1)
    assert arrays["avail_actions"].shape == (9, MAX_STEPS, AGENTS, ACTIONS)
    lengths = arrays["mask"].sum(axis=1)
    assert set(lengths) <= {2, 3, 4, 5} and len(set(lengths)) > 1
    for e, length in enumerate(lengths):
        assert arrays["mask"][e, :length].all() and not arrays["mask"][e, length:].any()
        np.testing.assert_allclose(arrays["obs"][e, :length, 0, 0], np.arange(length) / MAX_STEPS)
        assert arrays["terminals"][e, length - 1].all() and not arrays["terminals"][e, : length - 1].any()
        assert not arrays["obs"][e, length:].any() and not arrays["avail_actions"][e, length:].any()
    np.testing.assert_array_equal(arrays["rewards"], arrays["actions"])  # reward = action; zero padding
    valid = arrays["mask"][:, :, None]
    odd = (np.arange(MAX_STEPS) % 2 == 1)[None, :, None]
    assert not (arrays["actions"][np.broadcast_to(valid & odd, arrays["actions"].shape)] == 2).any()


def test_collected_arrays_make_a_valid_dataset(tmp_path: Path) -> None:
    arrays = collect_episodes(COUNTER, {}, random_act_fn, episodes=5, seed=0, num_envs=8)
    dataset = load_dataset(
        write_dataset(tmp_path / "c.h5", arrays, {"env_id": COUNTER, "n_actions": ACTIONS})
    )
    assert dataset.n_episodes == 5 and dataset.state_dim == 1 and dataset.avail_actions is not None


def test_collect_is_deterministic_given_the_seed() -> None:
    first = collect_episodes(COUNTER, None, random_act_fn, episodes=10, seed=7, num_envs=4)
    second = collect_episodes(COUNTER, None, random_act_fn, episodes=10, seed=7, num_envs=4)
    other = collect_episodes(COUNTER, None, random_act_fn, episodes=10, seed=8, num_envs=4)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["actions"], other["actions"])


def test_environment_without_masks_or_state() -> None:
    arrays = collect_episodes(COUNTER, {"masked": False}, random_act_fn, episodes=3, seed=0, num_envs=2)
    assert "avail_actions" not in arrays and "state" not in arrays


def test_random_act_fn_is_uniform_over_available_actions() -> None:
    mask = np.zeros((4000, 2, 4), dtype=bool)
    mask[:, 0, [1, 3]] = True
    mask[:, 1, :] = True
    actions = random_act_fn(np.zeros((4000, 2, 1), np.float32), mask, np.random.default_rng(0))
    assert actions.dtype == np.int64 and actions.shape == (4000, 2)
    assert set(np.unique(actions[:, 0])) == {1, 3}
    counts = np.bincount(actions[:, 1], minlength=4) / 4000
    np.testing.assert_allclose(counts, 0.25, atol=0.03)


def test_act_fn_with_wrong_output_is_rejected() -> None:
    def bad(obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(obs.shape[:1], dtype=np.int64)

    with pytest.raises(ValueError, match="act_fn must return integer actions of shape"):
        collect_episodes(COUNTER, None, bad, episodes=2, seed=0)


def test_environment_that_never_ends_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="did not end its episodes"):
        collect_episodes(COUNTER, {"never_ends": True}, random_act_fn, episodes=2, seed=0)


def test_random_dataset_records_how_to_remake_it(tmp_path: Path) -> None:
    path = collect_random_dataset(COUNTER, episodes=6, out=tmp_path / "random.h5", seed=2, num_envs=4)
    dataset = load_dataset(path)
    meta = dataset.metadata
    assert (meta.quality, meta.seed, meta.env_id, meta.n_episodes) == ("random", 2, COUNTER, 6)
    recipe = meta.behavior_policy
    assert recipe["name"] == "random" and recipe["function"] == "marlkd.data.collect_random_dataset"
    remade = collect_random_dataset(out=tmp_path / "remade.h5", **recipe["arguments"])
    assert load_dataset(remade).metadata.checksum == meta.checksum


@pytest.mark.skipif(
    importlib.util.find_spec("marlkd.envs.grid_world") is None, reason="grid-world not present"
)
def test_collect_grid_world(tmp_path: Path) -> None:
    path = collect_random_dataset("grid-world", episodes=8, out=tmp_path / "gw.h5", seed=0, num_envs=8)
    dataset = load_dataset(path)
    assert dataset.n_agents == 2 and dataset.max_steps == env_spec("grid-world").max_steps
    returns = dataset.episode_returns()
    assert (returns >= 0).all() and (returns <= dataset.metadata.env_kwargs.get("objects_per_agent", 3)).all()
