"""Finetuning: PPO's sequence-actor hook, DT students as MAPPO actors, ``marlkd finetune`` and sweep runs."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import tiny_envs
from marlkd.cli import main
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset
from marlkd.errors import ConfigError
from marlkd.finetune import DTActor, pretrained_actor, run_experiment
from marlkd.models.layouts import masked_logits
from marlkd.ppo import (
    History,
    PPOConfig,
    build_actor,
    collect_rollout,
    gather_history,
    train_ppo,
)
from marlkd.run_config import RunConfig
from marlkd.training import load_run, train

DT_SMALL = {"context": 3, "width": 16, "layers": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "match.h5"
    return collect_random_dataset(tiny_envs.ENV_ID, 16, out, seed=0, env_kwargs={"masked": True}, num_envs=16)


def trained_run(method: str, dataset: Path, out: Path, **algo) -> Path:
    config = RunConfig(
        method=method,
        data=str(dataset),
        out=str(out),
        train=TrainConfig(steps=3, batch_size=8, warmup_steps=1, log_every=1, precision="fp32"),
        eval=EvalConfig(episodes=2),
        algo=algo or None,
    )
    train(config, progress=False)
    return out


def test_gather_history_matches_hand_values() -> None:
    obs = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)  # (T, B, N, O)
    actions = torch.tensor([1, 2, 0]).view(3, 1, 1)
    rewards = torch.tensor([0.5, 1.0, 0.0]).view(3, 1, 1)
    h = gather_history(obs, actions, rewards, torch.tensor([2]), torch.tensor([0]), context=4)
    assert h.obs.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert h.mask.flatten().tolist() == [False, True, True, True]
    assert h.actions.flatten().tolist() == [0, 1, 2, 0]  # the current step's action is not known yet
    assert h.reward_to_date.flatten().tolist() == [0.0, 0.0, 0.5, 1.5]
    assert h.timesteps.flatten().tolist() == [0, 0, 1, 2]


class LastObservation(nn.Module):
    """A memoryless actor dressed as a sequence actor: it reads only the current observation."""

    def __init__(self, actor: nn.Module, context: int) -> None:
        super().__init__()
        self.actor, self.history_len = actor, context

    def forward(self, history: History) -> torch.Tensor:
        return self.actor(history.obs[:, -1])


def test_sequence_actor_hook_trains_like_the_memoryless_actor(tmp_path: Path) -> None:
    config = PPOConfig(mode="mappo", total_steps=8 * 8 * 3, num_envs=8, hidden=16)
    spec = tiny_envs.spec()
    torch.manual_seed(0)
    actor = build_actor(config, spec)
    plain = train_ppo(
        tiny_envs.ENV_ID, config, tmp_path / "plain", actor=copy.deepcopy(actor), progress=False
    )
    wrapped = LastObservation(copy.deepcopy(actor), context=3)
    sequence = train_ppo(tiny_envs.ENV_ID, config, tmp_path / "sequence", actor=wrapped, progress=False)
    assert sequence.curve == plain.curve


@pytest.mark.parametrize("method", ["idt", "madt"])
def test_dt_actor_acts_like_the_evaluation_policy(method: str, dataset: Path, tmp_path: Path) -> None:
    _, algo, _ = load_run(trained_run(method, dataset, tmp_path / method, **DT_SMALL))
    policy = algo.policy()
    actor = DTActor(algo.policy())
    env = tiny_envs.MatchBatched(6, masked=True)
    obs = env.reset(seed=3)
    policy.reset(6)
    T, B, N = 8, 6, 2
    seen_obs, seen_actions, seen_rewards = (
        torch.zeros(T, B, N, 4),
        torch.zeros(T, B, N, dtype=torch.int64),
        (torch.zeros(T, B, N)),
    )
    for t in range(T):
        mask = env.action_mask()
        actions = policy.act(obs, mask)
        seen_obs[t] = torch.as_tensor(obs)
        history = gather_history(
            seen_obs, seen_actions, seen_rewards, torch.full((B,), t), torch.arange(B), 3
        )
        with torch.no_grad():
            logits = masked_logits(actor(history), torch.as_tensor(mask))
        np.testing.assert_array_equal(logits.argmax(-1).numpy(), actions)
        obs, rewards, terminated, truncated = env.step(actions)
        policy.observe(rewards, terminated | truncated)
        seen_actions[t], seen_rewards[t] = torch.as_tensor(actions), torch.as_tensor(rewards)


def test_dt_actor_gives_the_same_probabilities_at_collection_and_update(
    dataset: Path, tmp_path: Path
) -> None:
    _, algo, _ = load_run(trained_run("idt", dataset, tmp_path / "idt", dropout=0.5, **DT_SMALL))
    actor = DTActor(algo.policy())
    env = tiny_envs.MatchBatched(4, masked=True)
    critic = torch.nn.Linear(env.spec.n_agents * env.spec.obs_dim, 2)
    actor.eval()
    rollout = collect_rollout(
        env, actor, critic, None, "joint_obs", 0, torch.Generator(), torch.device("cpu")
    )
    actor.train()  # PPO's update mode: dropout must stay off
    T, B = rollout.actions.shape[:2]
    t, b = torch.arange(T).repeat_interleave(B), torch.arange(B).repeat(T)
    history = gather_history(
        torch.as_tensor(rollout.obs),
        torch.as_tensor(rollout.actions),
        torch.as_tensor(rollout.env_rewards),
        t,
        b,
        3,
    )
    logits = masked_logits(actor(history), torch.as_tensor(rollout.action_mask).flatten(0, 1))
    log_probs = torch.distributions.Categorical(logits=logits).log_prob(
        torch.as_tensor(rollout.actions).flatten(0, 1)
    )
    torch.testing.assert_close(log_probs.detach(), rollout.log_probs.flatten(0, 1))


def test_value_methods_have_no_policy_network_to_finetune(dataset: Path, tmp_path: Path) -> None:
    _, algo, _ = load_run(trained_run("cql", dataset, tmp_path / "cql", hidden=8))
    with pytest.raises(ConfigError, match="no policy network"):
        pretrained_actor(algo, "cql")
    _, bc, _ = load_run(trained_run("bc", dataset, tmp_path / "bc", hidden=8))
    assert pretrained_actor(bc, "bc") is bc.net


def test_finetune_command_writes_both_curves_once(dataset: Path, tmp_path: Path, capsys) -> None:
    run_dir = trained_run("idt", dataset, tmp_path / "idt", **DT_SMALL)
    out = tmp_path / "ft"
    argv = ["finetune", str(run_dir), "--steps", "128", "--seed", "1", "--out", str(out)]
    assert main([*argv, "--num-envs", "8", "--eval-episodes", "2"]) == 0
    assert "idt: 128 environment steps" in capsys.readouterr().out
    with open(out / "learning_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["init"] for r in rows} == {"idt", "scratch"}
    assert [int(r["env_steps"]) for r in rows if r["init"] == "idt"] == [64, 128]
    assert (out / "learning_curves.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "idt" and set(results["runs"]) == {"idt", "scratch"}
    assert all(run["env_steps"] == 128 and run["episodes"] == 2 for run in results["runs"].values())
    # the scratch run at MAPPO's standard actor learning rate, the pretrained one at the finetuning rate
    lrs = {
        name: json.loads((out / name / "config.json").read_text())["ppo"]["lr"]
        for name in ("scratch", "pretrained")
    }
    assert lrs == {"scratch": 5e-4, "pretrained": 1e-4}
    stamp = (out / "results.json").stat().st_mtime_ns
    assert main([*argv, "--num-envs", "8", "--eval-episodes", "2"]) == 0  # finished: not redone
    assert (out / "results.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("init", ["scratch", "bc"])
def test_sweep_run_function_pretrains_then_finetunes(init: str, dataset: Path, tmp_path: Path) -> None:
    pretrain = None
    if init != "scratch":
        pretrain = {
            "method": init,
            "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1},
            "eval": {"episodes": 2},
            "algo": {"hidden": 8},
        }
    spec = {
        "init": init,
        "pretrain": pretrain,
        "finetune": {"env_steps": 128, "num_envs": 8},
        "env": tiny_envs.ENV_ID,
        "env_kwargs": {"masked": True},
        "seed": 0,
        "eval": {"episodes": 2},
    }
    run = SimpleNamespace(run_id=f"test-{init}", config=spec)
    results = run_experiment(run, tmp_path, dataset)
    assert results["method"] == init and results["env_steps"] == 128 and results["episodes"] == 2
    assert [p["env_steps"] for p in results["curve"]] == [64, 128]
    assert (tmp_path / "pretrain" / "results.json").exists() == (init != "scratch")
    assert run_experiment(run, tmp_path, dataset) == json.loads((tmp_path / "results.json").read_text())
