"""Distillation that transfers: diagnostics, the collapse of L_rel and its remedies, teacher targets."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import marlkd
from marlkd.algos import BuildContext
from marlkd.algos import distill_diagnostics as diag
from marlkd.algos._dt import DTLearner
from marlkd.algos.idt import Config as IDTConfig
from marlkd.algos.ours import Config as OursConfig
from marlkd.algos.ours import Ours, kl_loss, spread_loss
from marlkd.algos.teacher import eval_target_returns, teacher_outputs
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.data.format import DatasetMetadata, OfflineDataset, compute_checksum
from marlkd.errors import ConfigError
from marlkd.models.layouts import Layout
from marlkd.run_config import RunConfig

SMALL = dict(context=4, width=16, layers=1, heads=2, dropout=0.0, head_hidden=16)


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "gw.h5"
    return collect_random_dataset("grid-world", 24, path, seed=3)


def make_ctx(dataset, config, steps: int = 10, seed: int = 0, **train) -> BuildContext:
    train_cfg = TrainConfig(
        steps=steps,
        batch_size=train.pop("batch_size", 8),
        warmup_steps=1,
        seed=seed,
        precision="fp32",
        **train,
    )
    torch.manual_seed(seed)
    return BuildContext(
        dataset=dataset if isinstance(dataset, OfflineDataset) else load_dataset(dataset),
        config=config,
        train=train_cfg,
        device=torch.device("cpu"),
        autocast_dtype=None,
        run_dir=None,
        seed=seed,
    )


# ---------------------------------------------------------------- diagnostics on known vectors


def test_pair_angles_cosine_and_correlation_of_known_vectors():
    e = torch.eye(3)
    x = torch.stack([e, torch.stack([e[0], e[0] + e[1], -e[0]])])  # (S=2, N=3, P=3)
    angles = diag.pair_angles(x)  # pairs (0,1), (0,2), (1,2)
    assert torch.allclose(angles, torch.tensor([[90.0, 90.0, 90.0], [45.0, 180.0, 135.0]]), atol=1e-3)
    same = torch.ones(5, 2, 4)
    assert diag.cross_step_cosine(same) == pytest.approx(1.0)
    assert diag.cross_step_cosine(torch.eye(4)[:, None].expand(4, 2, 4)) == pytest.approx(0.0)
    a = torch.arange(6.0)
    assert diag.correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert diag.correlation(a, torch.ones(6)) == 0.0


def test_spread_loss_is_one_when_collapsed_and_near_zero_when_spread():
    collapsed = torch.ones(64, 2, 8) * torch.rand(64, 1, 1)  # every step one direction, any length
    assert torch.allclose(spread_loss(collapsed), torch.ones(2))
    spread = torch.randn(4096, 2, 8)
    assert (spread_loss(spread) < 0.1).all()


def test_collapse_needs_both_high_cosine_and_small_spread():
    base = {"distill/angle_teacher_std": 10.0, "distill/mapped_cosine_teacher": 0.5}
    base["distill/angle_mapped_teacher_std"] = 5.0
    assert (
        diag.collapsed_metric(
            {**base, "distill/mapped_cosine_student": 0.95, "distill/angle_mapped_student_std": 0.5}
        )
        == "distill/mapped_cosine_student"
    )
    assert (
        diag.collapsed_metric(
            {**base, "distill/mapped_cosine_student": 0.95, "distill/angle_mapped_student_std": 2.0}
        )
        is None
    )
    assert (
        diag.collapsed_metric(
            {**base, "distill/mapped_cosine_student": 0.5, "distill/angle_mapped_student_std": 0.5}
        )
        is None
    )


# ---------------------------------------------------------------- the collapse and its remedy


def _distill_on_diverse_teacher(grid_data, ablation: str, steps: int = 150):
    """Students trained on L_action + L_rel alone against a teacher cache of diverse features (a ReLU of
    Gaussians, as a trained teacher's), with a high learning rate so that what happens, happens fast."""
    cfg = OursConfig(**SMALL, teacher_steps=0, ablation=ablation, beta=0.0, mapping_width=32)
    ours = Ours(make_ctx(grid_data, cfg, steps=steps, lr=1e-2, log_every=25))
    E, T = ours.students.sampler.mask.shape
    N, A = ours.students.n_agents, ours.students.n_actions
    generator = torch.Generator().manual_seed(0)
    ours.cache = (torch.relu(torch.randn(E, T, N, 16, generator=generator)), torch.zeros(E, T, N, A))
    valid = ours.students.sampler.mask
    with torch.no_grad():
        ours.initial_cosine = diag.cross_step_cosine(ours.map_teacher(ours.cache[0][valid]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logs = [m for m in (ours.update(step) for step in range(steps)) if "distill/angle_corr" in m]
    collapse_warnings = [w for w in caught if issubclass(w.category, diag.CollapseWarning)]
    return ours, logs, collapse_warnings


def test_paper_mapping_collapses_and_warns_once(grid_data):
    ours, logs, caught = _distill_on_diverse_teacher(grid_data, "full")
    first, last = logs[0], logs[-1]
    teacher_std = last["distill/angle_teacher_std"]
    assert ours.initial_cosine < 0.8  # M does not send the teacher's features one way at the start
    for side in ("teacher", "student"):  # both trainable mappings send every step one way
        assert last[f"distill/mapped_cosine_{side}"] > 0.9
        assert last[f"distill/angle_mapped_{side}_std"] < 0.2 * teacher_std
    assert last["distill/l_rel"] < 0.2 * first["distill/l_rel"]  # the loss vanishes with the relation
    assert len(caught) == 1 and "distill/mapped_cosine_" in str(caught[0].message)
    summary = ours.summary()
    assert (
        summary["distill/collapse"].startswith("distill/mapped_cosine_")
        and summary["distill/collapse_update"] > 0
    )


@pytest.mark.parametrize("ablation", ["raw-teacher", "frozen-mapping"])
def test_stop_gradient_teacher_side_does_not_collapse(grid_data, ablation):
    ours, logs, caught = _distill_on_diverse_teacher(grid_data, ablation)
    last = logs[-1]
    assert not caught and ours.summary()["distill/collapse"] == ""
    assert last["distill/mapped_cosine_student"] < 0.9
    assert last["distill/angle_mapped_student_std"] > 0.3 * last["distill/angle_teacher_std"]
    assert last["distill/angle_corr"] > 0.0  # the students' relation follows the teacher's


def test_remedies_hold_the_teacher_map(grid_data):
    cfg = OursConfig(**SMALL, teacher_steps=0, ablation="ema-mapping", ema_decay=0.5)
    ours = Ours(make_ctx(grid_data, cfg, steps=3))
    assert all(not p.requires_grad for p in ours.map_teacher.parameters())
    ours.update(0)
    for m, n in zip(ours.map_teacher.parameters(), ours.map_student.parameters(), strict=True):
        assert m.grad is None
        assert not torch.equal(m, n)  # moved half way toward N, which took a step
    frozen = Ours(
        make_ctx(grid_data, OursConfig(**SMALL, teacher_steps=0, ablation="frozen-mapping"), steps=3)
    )
    before = [p.clone() for p in frozen.map_teacher.parameters()]
    frozen.update(0)
    frozen.update(1)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.map_teacher.parameters(), strict=True))
    with pytest.raises(ConfigError, match="algo.teacher_map"):
        OursConfig(teacher_map="ema", width=64, head_hidden=128)
    with pytest.raises(ConfigError, match="algo.ablation"):
        OursConfig(ablation="ema-mapping", width=64, head_hidden=128)
    with pytest.raises(ConfigError, match="algo.teacher_target"):
        OursConfig(teacher_target="best")


def test_diagnostics_only_on_log_steps_and_grad_norms_per_term(grid_data):
    cfg = OursConfig(**SMALL, teacher_steps=1, ablation="spread")
    ours = Ours(make_ctx(grid_data, cfg, steps=4, log_every=2))
    logged = [ours.update(step) for step in range(5)]  # 1 teacher + 4 student updates; log at 2, 4, 5
    has = ["distill/angle_corr" in m for m in logged]
    assert has == [False, True, False, True, True]
    m = logged[-1]
    for term in ("action", "rel", "kl", "spread"):
        assert m[f"distill/grad_norm_{term}"] > 0.0
    assert "loss/spread" in m


# ---------------------------------------------------------------- the teacher's cache


def test_cache_is_computed_in_eval_mode_with_the_students_return_scale(grid_data):
    cfg = OursConfig(**{**SMALL, "dropout": 0.5}, teacher_steps=0, teacher_target="eval-return")
    ours = Ours(make_ctx(grid_data, cfg, steps=2))
    ours.update(0)
    features, logits = ours.cache
    students, teacher = ours.students, ours.teacher
    assert teacher.return_scale == students.return_scale
    e, t = students.sampler.all_positions()
    e, t = e[:16], t[:16]
    expected = eval_target_returns(ours.ctx.dataset, students.target_return, students.return_scale)
    window = students.sampler.gather(e, t)
    # the evaluation's returns-to-go: the target minus the rewards received before each step, same scale
    rewards = torch.as_tensor(ours.ctx.dataset.rewards)
    received = torch.cumsum(rewards, 1) - rewards
    target = torch.as_tensor(students.target_return)
    assert torch.allclose(expected[e, t], (target - received[e, t]) / students.return_scale)
    window.returns = expected[e[:, None], window.step].masked_fill(~window.mask[..., None], 0.0)
    teacher.model.eval()
    with torch.no_grad():
        eval_logits, eval_features = teacher.forward(window)
    assert torch.allclose(logits[e, t], eval_logits[:, -1], atol=1e-5)
    assert torch.allclose(features[e, t], eval_features[0, :, -1], atol=1e-5)
    teacher.model.train()  # dropout on: a different output, so the cache was made with it off
    with torch.no_grad():
        train_logits, _ = teacher.forward(window)
    assert not torch.allclose(logits[e, t], train_logits[:, -1], atol=1e-3)
    own_logits = teacher_outputs(teacher, students.sampler)[1]
    assert not torch.allclose(own_logits[e, t], logits[e, t])  # the own-return cache differs


# ---------------------------------------------------------------- what the teacher knows reaches the students


def hidden_bit_dataset(episodes: int = 512, seed: int = 0) -> OfflineDataset:
    """One-step episodes, two agents, two actions. Agent 0 sees a bit b; agent 1 sees h, equal to b with
    probability 0.8. The data's actions are uniformly random; agent 1's reward is 1 when agent 0's action
    equals h (agent 0's own reward is always 0), so only the teacher, who sees h and agent 1's return,
    knows which action of agent 0 serves the team."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 2, episodes)
    h = np.where(rng.random(episodes) < 0.8, b, 1 - b)
    obs = np.stack([np.eye(2)[b], np.eye(2)[h]], axis=1)[:, None].astype(np.float32)  # (E, 1, 2, 2)
    actions = rng.integers(0, 2, (episodes, 1, 2))
    rewards = np.zeros((episodes, 1, 2), np.float32)
    rewards[:, 0, 1] = actions[:, 0, 0] == h
    arrays = {
        "obs": obs,
        "actions": actions,
        "rewards": rewards,
        "mask": np.ones((episodes, 1), bool),
        "terminals": np.ones((episodes, 1, 2), bool),
        "truncations": np.zeros((episodes, 1, 2), bool),
    }
    returns = rewards.sum(1).mean(-1)
    metadata = DatasetMetadata(
        format_version=1,
        env_id="hidden-bit",
        env_kwargs={},
        n_agents=2,
        obs_dim=2,
        n_actions=2,
        state_dim=0,
        behavior_policy={},
        quality="random",
        seed=seed,
        n_episodes=episodes,
        mean_return=float(returns.mean()),
        min_return=float(returns.min()),
        max_return=float(returns.max()),
        normalized_score=math.nan,
        checksum=compute_checksum(arrays),
        marlkd_version=marlkd.__version__,
    )
    return OfflineDataset(**arrays, state=None, avail_actions=None, metadata=metadata)


def _agent0_kl(learner: DTLearner, teacher_logits: torch.Tensor, returns: torch.Tensor) -> float:
    """Agent 0's KL(teacher || student) over the dataset, both conditioned on the evaluation target."""
    sampler = learner.sampler
    sampler.rtg = returns
    e, t = sampler.all_positions()
    learner.model.eval()
    with torch.no_grad():
        logits, _ = learner.forward(sampler.gather(e, t))
    return float(kl_loss(teacher_logits[e, t, 0], logits[:, -1, 0]).mean())


def test_distillation_of_the_high_return_teacher_lowers_the_kl_below_idt(tmp_path):
    data = hidden_bit_dataset()
    model = dict(context=1, width=16, layers=1, heads=1, dropout=0.0, head_hidden=16)
    steps = dict(steps=200, lr=3e-3, batch_size=64)
    results = {}
    for target in ("own-return", "eval-return"):  # one teacher (shared through the cache), two targets
        cfg = OursConfig(
            **model,
            teacher_steps=200,
            ablation="kl-only",
            beta=10.0,
            teacher_target=target,
            teacher_cache=str(tmp_path),
        )
        ours = Ours(make_ctx(data, cfg, **steps))
        for step in range(ours.num_updates):
            ours.update(step)
        students = ours.students
        high = eval_target_returns(data, students.target_return, students.return_scale)
        teacher_high = teacher_outputs(ours.teacher, students.sampler, high)[1]
        results[target] = _agent0_kl(students, teacher_high, high)
    idt = DTLearner(make_ctx(data, IDTConfig(**model), **steps), Layout.INDEPENDENT, IDTConfig(**model))
    for step in range(200):
        idt.update(step)
    results["idt"] = _agent0_kl(idt, teacher_high, high)
    # At the high target the teacher plays agent 0's action = h. IDT sees only agent 0's zero returns and
    # plays uniformly; a student distilled from the high-return teacher guesses h from b (P = 0.8).
    assert results["eval-return"] < results["idt"] - 0.08, results
    # The own-return teacher, marginalised over what agent 0 cannot see, is IDT's target again.
    assert results["own-return"] > results["eval-return"] + 0.08, results
    assert abs(results["own-return"] - results["idt"]) < 0.08, results


# ---------------------------------------------------------------- a run writes the diagnostics


def test_train_writes_distill_metrics_and_summary(grid_data, tmp_path):
    config = RunConfig(
        method="ours",
        data=str(grid_data),
        out=str(tmp_path / "run"),
        algo=OursConfig(**SMALL, teacher_steps=2),
        train=TrainConfig(steps=4, batch_size=8, warmup_steps=1, log_every=2, precision="fp32"),
        eval=EvalConfig(episodes=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diag.CollapseWarning)
        results = marlkd.train(config, progress=False)
    text = (tmp_path / "run" / "metrics.csv").read_text()
    for name in (
        "l_rel",
        "l_kl",
        "angle_teacher_mean",
        "angle_mapped_student_std",
        "angle_corr",
        "mapped_cosine_teacher",
        "grad_norm_rel",
    ):
        assert f"distill/{name}," in text
        assert f"distill/{name}" in results
    assert "distill/collapse" in results
