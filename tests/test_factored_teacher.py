"""The factored (time x agent) teacher: equivariance, masking, causality, team sizes, training via the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from marlkd.algos import ALGOS, BuildContext
from marlkd.algos.teacher import teacher_outputs
from marlkd.algos.teacher_models import build_teacher, team_policy
from marlkd.cli import main
from marlkd.config import TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.errors import ConfigError
from marlkd.evaluate import evaluate
from marlkd.models.factored_teacher import FactoredConfig, FactoredTeacher
from marlkd.training import load_run

SMALL = dict(context=4, width=16, layers=1, heads=2, dropout=0.0, head_hidden=16)


def make_model(agent_ids: int = 0, layers: int = 2) -> FactoredTeacher:
    torch.manual_seed(0)
    cfg = FactoredConfig(
        obs_dim=7, n_actions=4, head_hidden=16, context=6, max_timestep=50, width=32, layers=layers,
        heads=2, dropout=0.0, agent_ids=agent_ids,
    )  # fmt: skip
    return FactoredTeacher(cfg).eval()


def make_inputs(B: int = 3, K: int = 6, N: int = 5, seed: int = 1, padded: bool = True):
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(1, B, K, N, generator=g)
    obs = torch.randn(1, B, K, N, 7, generator=g)
    actions = F.one_hot(torch.randint(4, (1, B, K, N), generator=g), 4).float()
    timesteps = torch.arange(K).expand(1, B, K).clone()
    mask = torch.ones(1, B, K, dtype=torch.bool)
    if padded:
        mask[0, 0, :2] = False  # the first window starts two steps into the episode
    return returns, obs, actions, timesteps, mask


def permuted(inputs, perm: torch.Tensor):
    returns, obs, actions, timesteps, mask = inputs
    return returns[..., perm], obs[:, :, :, perm], actions[:, :, :, perm], timesteps, mask


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("padded", [False, True])
def test_permuting_agents_permutes_logits_and_features(padded):
    model = make_model()
    inputs = make_inputs(padded=padded)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        logits, features = model(*inputs)
        p_logits, p_features = model(*permuted(inputs, perm))
    assert logits.shape == (1, 3, 6, 5, 4) and features.shape == (1, 3, 6, 5, 16)
    assert torch.allclose(p_logits, logits[:, :, :, perm], atol=1e-5)
    assert torch.allclose(p_features, features[:, :, :, perm], atol=1e-5)
    assert not torch.allclose(logits[:, :, :, 0], logits[:, :, :, 1], atol=1e-3)  # agents do differ


def test_agent_id_embeddings_break_the_symmetry():
    model = make_model(agent_ids=8)
    torch.nn.init.normal_(model.embed_agent.weight, 0.0, 1.0)
    inputs = make_inputs()
    perm = torch.tensor([1, 0, 2, 3, 4])
    with torch.no_grad():
        logits, _ = model(*inputs)
        p_logits, _ = model(*permuted(inputs, perm))
    assert not torch.allclose(p_logits, logits[:, :, :, perm], atol=1e-3)
    with pytest.raises(ValueError, match="agent-id embedding has 8"):
        model(*make_inputs(N=9))


def test_absent_agents_do_not_affect_present_ones():
    model = make_model()
    returns, obs, actions, timesteps, mask = make_inputs(N=5)
    presence = torch.ones(1, 3, 6, 5, dtype=torch.bool)
    presence[..., 3:] = False  # agents 3 and 4 are padding
    presence[0, 1, 4:, 2] = False  # agent 2 dies at step 4 of the second window
    with torch.no_grad():
        logits, features = model(returns, obs, actions, timesteps, mask, presence)
        junk = torch.full_like(obs, 50.0)
        noisy_obs = torch.where(presence[..., None], obs, junk)
        noisy_returns = torch.where(presence, returns, -9.0)
        noisy_actions = torch.where(presence[..., None], actions, F.one_hot(torch.tensor(3), 4).float())
        logits2, features2 = model(noisy_returns, noisy_obs, noisy_actions, timesteps, mask, presence)
        # padding agents 3, 4 away is the same as a team of three
        small, _ = model(returns[..., :3], obs[:, :, :, :3], actions[:, :, :, :3], timesteps, mask)
    alive = presence[0]  # (B, K, N)
    assert torch.allclose(logits[0][alive], logits2[0][alive], atol=1e-5)
    assert torch.allclose(features[0][alive], features2[0][alive], atol=1e-5)
    assert torch.allclose(logits[0, 0, :, :3], small[0, 0], atol=1e-5)
    assert torch.allclose(logits[0, 2, :, :3], small[0, 2], atol=1e-5)


def test_no_token_sees_the_action_it_predicts_or_the_future():
    model = make_model()
    returns, obs, actions, timesteps, mask = make_inputs(padded=False)
    with torch.no_grad():
        logits, _ = model(returns, obs, actions, timesteps, mask)
        other = actions.clone()
        other[:, :, -1] = F.one_hot((actions[:, :, -1].argmax(-1) + 1) % 4, 4).float()  # every a_{K-1}
        same, _ = model(returns, obs, other, timesteps, mask)
        future = obs.clone()
        future[:, :, 3:] += 1.0  # observations from step 3 on
        changed, _ = model(returns, future, actions, timesteps, mask)
    assert torch.equal(logits, same)
    assert torch.allclose(changed[:, :, :3], logits[:, :, :3], atol=1e-6)
    assert not torch.allclose(changed[:, :, 3:], logits[:, :, 3:], atol=1e-4)
    prev = actions.clone()
    prev[:, :, 2] = F.one_hot((actions[:, :, 2].argmax(-1) + 1) % 4, 4).float()  # a_2 feeds step 3's token
    with torch.no_grad():
        shifted, _ = model(returns, obs, prev, timesteps, mask)
    assert torch.allclose(shifted[:, :, :3], logits[:, :, :3], atol=1e-6)
    assert not torch.allclose(shifted[:, :, 3], logits[:, :, 3], atol=1e-4)


def test_parameter_count_does_not_depend_on_the_team():
    counts = {}
    for n in (2, 8, 32):
        model = make_model()
        inputs = make_inputs(N=n)
        model(*inputs)  # runs at any n
        counts[n] = sum(p.numel() for p in model.parameters())
    assert len(set(counts.values())) == 1


# ---------------------------------------------------------------- learner, policy, CLI


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        n: collect_random_dataset("grid-world", 16, root / f"gw{n}.h5", seed=3, env_kwargs={"n_agents": n})
        for n in (2, 3)
    }


def make_ctx(path: Path, config, steps: int = 10) -> BuildContext:
    torch.manual_seed(0)
    return BuildContext(
        dataset=load_dataset(path),
        config=config,
        train=TrainConfig(steps=steps, batch_size=8, warmup_steps=1, seed=0, precision="fp32"),
        device=torch.device("cpu"),
        autocast_dtype=None,
        run_dir=None,
        seed=0,
    )


def test_teacher_parameters_grow_with_n_only_for_concatenation(grid_data):
    sizes = {}
    for teacher in ("concat", "factored"):
        for n, path in grid_data.items():
            cfg = ALGOS["teacher"].config_cls(**SMALL, teacher=teacher)
            learner = build_teacher(make_ctx(path, cfg), cfg)
            sizes[teacher, n] = sum(p.numel() for p in learner.model.parameters())
    assert sizes["factored", 2] == sizes["factored", 3]
    assert sizes["concat", 3] > sizes["concat", 2]


def test_the_runs_settings_reach_the_factored_network(grid_data):
    settings = dict(context=3, width=24, layers=2, heads=3, dropout=0.2, attn_dropout=0.0, head_hidden=12)
    cfg = ALGOS["teacher"].config_cls(**settings, teacher="factored", agent_ids=4)
    model_cfg = build_teacher(make_ctx(grid_data[2], cfg), cfg).model.cfg
    assert {name: getattr(model_cfg, name) for name in settings} == settings
    assert (model_cfg.agent_ids, model_cfg.obs_dim, model_cfg.n_actions) == (4, 78, 5)


def test_factored_teacher_learns_and_gives_per_agent_features(grid_data):
    cfg = ALGOS["teacher"].config_cls(**{**SMALL, "width": 32}, teacher="factored")
    ctx = make_ctx(grid_data[2], cfg, steps=120)
    ctx.train = TrainConfig(steps=120, batch_size=32, lr=3e-3, warmup_steps=5, precision="fp32")
    learner = ALGOS["teacher"].build(ctx)
    losses = [learner.update(step)["loss/action"] for step in range(120)]
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:5])
    features, logits = teacher_outputs(learner, learner.sampler)
    E, T = learner.sampler.mask.shape
    assert features.shape == (E, T, 2, 16) and logits.shape == (E, T, 2, 5)
    valid = learner.sampler.mask
    assert features[valid].abs().sum() > 0 and not torch.equal(features[valid][:, 0], features[valid][:, 1])


def test_bf16_autocast_step(grid_data):
    ctx = make_ctx(grid_data[3], ALGOS["teacher"].config_cls(**SMALL, teacher="factored"))
    ctx.autocast_dtype = torch.bfloat16
    learner = ALGOS["teacher"].build(ctx)
    assert np.isfinite(learner.update(0)["loss/action"])
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())


def test_teacher_config_is_validated(grid_data):
    config_cls = ALGOS["ours"].config_cls
    with pytest.raises(ConfigError, match="algo.teacher"):
        config_cls(teacher="graph")
    with pytest.raises(ConfigError, match="algo.agent_ids.*factored teacher only"):
        config_cls(agent_ids=4)
    with pytest.raises(ConfigError, match="algo.agent_ids: 2 agent ids for a dataset of 3"):
        cfg = config_cls(**SMALL, teacher="factored", agent_ids=2)
        build_teacher(make_ctx(grid_data[3], cfg), cfg)


def test_train_ours_with_factored_teacher_and_evaluate_on_two_team_sizes(grid_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "ours", "--data", str(grid_data[2]), "--out", str(out), "--teacher", "factored"]
    args += ["--context", "4", "--width", "16", "--layers", "1", "--head-hidden", "16", "--dropout", "0"]
    args += ["--steps", "6", "--batch-size", "8", "--log-every", "1", "--eval-episodes", "2", "--quiet"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_steps"] == 12 and np.isfinite(results["teacher/return_mean"])
    with (out / "metrics.csv").open() as f:
        metrics = {row["metric"] for row in csv.DictReader(f)}
    assert {"teacher/loss/action", "loss/rel", "loss/kl"} <= metrics  # the teacher trained, then distilled

    _, algo, _ = load_run(out)  # one checkpoint, two team sizes of Grid-World (observation size 78 both)
    for n in (2, 3):
        result = evaluate(team_policy(algo.teacher, n), "grid-world", {"n_agents": n}, episodes=3, seed=0)
        assert result.returns.shape == (3, n) and np.isfinite(result.returns).all()
    with pytest.raises(ConfigError, match="only the factored teacher"):
        team_policy(algo.students, 3)
