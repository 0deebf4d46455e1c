"""PPO: GAE and the clipped loss on hand values, masks, learning on a trivial task, checkpoints and hooks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tiny_envs
from marlkd.algos.base import Policy
from marlkd.errors import ConfigError, MarlkdError
from marlkd.models.layouts import masked_logits
from marlkd.ppo import (
    PPOConfig,
    PPOPolicy,
    SharedActor,
    clipped_surrogate_loss,
    compute_gae,
    load_ppo_policy,
    sample_categorical,
    train_ppo,
)

ENV = tiny_envs.ENV_ID
RANDOM_RETURN = 8 / 3  # max_steps / n_actions


def _quick(**overrides) -> PPOConfig:
    values = {"total_steps": 512 * 25, "num_envs": 64, "lr": 3e-3, "critic_lr": 3e-3, "hidden": 32}
    return PPOConfig(**{**values, **overrides})


def test_gae_matches_hand_computed_values() -> None:
    # Two agents on one copy, T = 3, gamma 0.9, lambda 0.8. Agent 0's episode ends at t = 2; agent 1's at
    # t = 1 (then a new stretch bootstraps from last_values = 2.0 at t = 2).
    rewards = torch.tensor([[[1.0, 1.0]], [[2.0, 2.0]], [[3.0, 3.0]]])  # (T, B, N)
    values = torch.tensor([[[0.5, 0.5]], [[1.0, 1.0]], [[1.5, 1.5]]])
    dones = torch.tensor([[[0, 0]], [[0, 1]], [[1, 0]]])
    advantages, returns = compute_gae(rewards, values, dones, torch.tensor([[9.0, 2.0]]), 0.9, 0.8)
    # agent 0: d2 = 3 - 1.5 = 1.5; d1 = 2 + .9*1.5 - 1 = 2.35, A1 = 2.35 + .72*1.5 = 3.43;
    #          d0 = 1 + .9*1 - .5 = 1.4, A0 = 1.4 + .72*3.43 = 3.8696
    # agent 1: d2 = 3 + .9*2 - 1.5 = 3.3; d1 = 2 - 1 = 1.0 (done), A1 = 1.0; A0 = 1.4 + .72*1.0 = 2.12
    expected = torch.tensor([[[3.8696, 2.12]], [[3.43, 1.0]], [[1.5, 3.3]]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


def test_clipped_surrogate_loss_matches_hand_values() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7])
    old = torch.zeros(4)
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # min(r A, clip(r) A) with clip 0.2: 1.2, 0.5, -1.1, -0.8
    loss = clipped_surrogate_loss(ratios.log(), old, advantages, 0.2, torch.ones(4))
    torch.testing.assert_close(loss, torch.tensor(-(1.2 + 0.5 - 1.1 - 0.8) / 4))
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])
    masked = clipped_surrogate_loss(ratios.log(), old, advantages, 0.2, weights)
    torch.testing.assert_close(masked, torch.tensor(-(1.2 + 0.5 - 1.1) / 3))


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", "qmix"), ("total_steps", 0), ("clip", 0.0), ("gamma", 1.5), ("advantage", "sum"), ("lr", -1.0)],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"ppo.{field}"):
        PPOConfig(**{field: value})


def test_state_critic_needs_a_state() -> None:
    config = PPOConfig(critic_input="state")
    spec = tiny_envs.spec()
    assert config.resolved_critic_input(spec) == "state"
    assert PPOConfig(mode="mappo").resolved_critic_input(spec) == "state"
    assert PPOConfig().resolved_critic_input(spec) == "joint_obs"
    no_state = tiny_envs.EnvSpec(**{**spec.__dict__, "state_dim": 0})
    with pytest.raises(ConfigError, match="ppo.critic_input"):
        config.resolved_critic_input(no_state)


def test_masked_actions_are_never_chosen() -> None:
    actor = SharedActor(n_agents=2, obs_dim=4, n_actions=3, hidden=8)
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # action 1 strongly preferred
    mask = np.ones((64, 2, 3), dtype=bool)
    mask[..., 1] = False
    obs = np.random.default_rng(0).random((64, 2, 4)).astype(np.float32)
    for deterministic in (False, True):
        policy = PPOPolicy(actor, deterministic=deterministic, seed=0)
        actions = policy.act(obs, mask)
        assert actions.shape == (64, 2) and actions.dtype == np.int64
        assert not (actions == 1).any()
    logits = masked_logits(torch.zeros(2, 3), torch.tensor([[True, False, True], [False, False, True]]))
    torch.testing.assert_close(torch.softmax(logits, -1), torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]))


def test_sample_categorical_follows_the_probabilities() -> None:
    probs = np.broadcast_to(np.array([0.2, 0.0, 0.8]), (20000, 3))
    draws = sample_categorical(probs, np.random.default_rng(1))
    assert not (draws == 1).any()
    assert abs((draws == 2).mean() - 0.8) < 0.02


def test_mappo_rollouts_respect_masks_and_learn(tmp_path: Path) -> None:
    seen = []

    def check_rollout(iteration) -> None:
        rollout = iteration.rollout
        chosen = np.take_along_axis(rollout.action_mask, rollout.actions[..., None], axis=-1)[..., 0]
        seen.append(bool(chosen[rollout.valid].all()))

    result = train_ppo(
        ENV,
        _quick(mode="mappo"),
        tmp_path,
        env_kwargs={"masked": True},
        progress=False,
        callback=check_rollout,
    )
    assert seen and all(seen)
    # with one of three actions masked, random play earns max_steps / 2 = 4 of 8
    assert result.final_return > 6.0, result.curve


def test_centralized_ppo_improves_on_a_trivial_task(tmp_path: Path) -> None:
    result = train_ppo(ENV, _quick(), tmp_path, progress=False)
    first, last = result.curve[0][1], result.final_return
    assert abs(first - RANDOM_RETURN) < 0.6
    assert last > 6.5, result.curve
    assert result.env_steps >= 512 * 25 and result.iterations == 25

    for name in ("checkpoint.pt", "config.json", "learning_curve.csv", "learning_curve.png"):
        assert (tmp_path / name).is_file(), name
    with open(tmp_path / "learning_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25 and int(rows[-1]["env_steps"]) == result.env_steps
    assert math.isclose(float(rows[-1]["mean_return"]), result.curve[-1][1], rel_tol=1e-6)

    policy = load_ppo_policy(tmp_path, deterministic=True)
    assert isinstance(policy, Policy)
    env = tiny_envs.MatchBatched(32)
    obs = env.reset(seed=5)
    target = obs[..., :3].argmax(-1)
    assert (policy.act(obs, env.action_mask()) == target).mean() > 0.9


def test_kept_checkpoints_and_custom_actor(tmp_path: Path) -> None:
    class Table(nn.Module):  # a custom actor: logits from the observation by one linear map
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.linear(obs)

    config = _quick(mode="mappo", total_steps=2048, checkpoint_every=1024)
    train_ppo(ENV, config, tmp_path, progress=False, actor=Table(), init_actor_state=Table().state_dict())
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_0000001024.pt", "step_0000002048.pt"]
    with pytest.raises(MarlkdError, match="custom actor"):
        load_ppo_policy(tmp_path)
    policy = load_ppo_policy(tmp_path / "checkpoints" / kept[0], actor=Table())
    assert policy.act(np.zeros((2, 2, 4), np.float32), None).shape == (2, 2)


def test_reward_fn_replaces_the_env_reward_and_callback_stops(tmp_path: Path) -> None:
    calls = []

    def always_action_zero(obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        calls.append((obs.shape, actions.shape, next_obs.shape))
        return (actions == 0).astype(np.float32)

    result = train_ppo(
        ENV,
        _quick(mode="mappo"),
        tmp_path,
        progress=False,
        reward_fn=always_action_zero,
        callback=lambda it: it.iteration >= 15,
    )
    assert result.iterations == 15
    assert calls[0] == ((64 * 8, 2, 4), (64 * 8, 2), (64 * 8, 2, 4))
    actions = load_ppo_policy(tmp_path, deterministic=True).act(
        tiny_envs.MatchBatched(16).reset(seed=1), None
    )
    assert (actions == 0).all()
    assert abs(result.curve[-1][1] - RANDOM_RETURN) < 1.0  # the env's return: action 0 matches a third


def test_load_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(MarlkdError, match="no PPO checkpoint"):
        load_ppo_policy(tmp_path)
    torch.save({"something": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(MarlkdError, match="not a marlkd PPO checkpoint"):
        load_ppo_policy(tmp_path)


def test_metrics_csv_has_the_tidy_rows_of_every_run(tmp_path: Path) -> None:
    config = _quick(mode="mappo", total_steps=2048)
    for _ in range(2):  # a second training in the same folder starts its metrics afresh
        result = train_ppo(ENV, config, tmp_path, progress=False)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "wall_time_s", "metric", "value"]  # marlkd.training's MetricsLog format
    by_metric: dict[str, list[tuple[int, float]]] = {}
    for step, wall_time, metric, value in rows[1:]:
        assert float(wall_time) >= 0.0
        by_metric.setdefault(metric, []).append((int(step), float(value)))
    stats = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"}
    assert set(by_metric) == {"return/env", "env_steps"} | {f"ppo/{k}" for k in stats}
    with open(tmp_path / "learning_curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == result.iterations == 4
    assert [s for s, _ in by_metric["return/env"]] == [int(r["iteration"]) for r in curve] == [1, 2, 3, 4]
    for (_, value), row in zip(by_metric["return/env"], curve, strict=True):
        assert math.isclose(value, float(row["mean_return"]), rel_tol=1e-5)
    assert [int(v) for _, v in by_metric["env_steps"]] == [int(r["env_steps"]) for r in curve]
    for k in stats:
        for (_, value), row in zip(by_metric[f"ppo/{k}"], curve, strict=True):
            assert math.isclose(value, float(row[k]), rel_tol=1e-5, abs_tol=1e-9)
    assert not (tmp_path / "tb").exists()  # metrics.csv alone, PPO's other files as they were
