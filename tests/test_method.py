"""The method: decision-transformer core, layouts, distillation losses, teacher/students, train loop."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import marlkd
from marlkd.algos import ALGOS, BuildContext
from marlkd.algos.ours import Config as OursConfig
from marlkd.algos.ours import Ours, angles, kl_loss, relational_loss
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.data.windows import WindowSampler, returns_to_go
from marlkd.errors import ConfigError
from marlkd.models.decision_transformer import DecisionTransformer, DTConfig
from marlkd.models.layouts import Layout, per_agent_logits, to_inputs
from marlkd.run_config import RunConfig

SMALL = dict(context=4, width=16, layers=1, heads=2, dropout=0.0, head_hidden=16)


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "gw.h5"
    return collect_random_dataset("grid-world", 24, path, seed=3)


def make_ctx(path: Path, config, steps: int = 10, seed: int = 0) -> BuildContext:
    train = TrainConfig(steps=steps, batch_size=8, warmup_steps=1, seed=seed, precision="fp32")
    torch.manual_seed(seed)
    return BuildContext(
        dataset=load_dataset(path),
        config=config,
        train=train,
        device=torch.device("cpu"),
        autocast_dtype=None,
        run_dir=None,
        seed=seed,
    )


# ---------------------------------------------------------------- losses against hand-computed values


def test_angles_of_known_vectors():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    a = angles(x, x, eps=1e-6)
    expected = torch.tensor(
        [[0, math.pi / 2, math.pi], [math.pi / 2, 0, math.pi / 2], [math.pi, math.pi / 2, 0]]
    )
    assert torch.allclose(a, expected, atol=3e-3)  # the clamp keeps 0 and pi a hair away


def test_angle_gradient_is_finite_for_parallel_vectors():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    angles(x, x, eps=1e-5).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_relational_loss_sums_huber_over_other_agents():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # angles: 90, 45, 45 degrees
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # angles: 0, 90, 90 degrees
    got = relational_loss(teacher, student, eps=1e-7, delta=1.0)
    t = {(0, 1): math.pi / 2, (0, 2): math.pi / 4, (1, 2): math.pi / 4}
    s = {(0, 1): 0.0, (0, 2): math.pi / 2, (1, 2): math.pi / 2}

    def huber(d: float) -> float:
        return 0.5 * d * d if abs(d) <= 1 else abs(d) - 0.5

    def pair(i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        return huber(s[key] - t[key])

    expected = torch.tensor([pair(0, 1) + pair(0, 2), pair(1, 0) + pair(1, 2), pair(2, 0) + pair(2, 1)])
    assert torch.allclose(got, expected, atol=1e-3)


def test_relational_gradient_reaches_only_the_agents_own_features():
    teacher = torch.randn(3, 4)
    student = torch.randn(3, 4, requires_grad=True)
    relational_loss(teacher, student)[0].backward()  # L^0
    assert student.grad[0].abs().sum() > 0
    assert torch.all(student.grad[1:] == 0)


def test_kl_loss_matches_hand_computation():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.tensor([[0.0, 1.0, 0.0]])
    p = torch.softmax(teacher, -1)
    q = torch.softmax(student, -1)
    expected = (p * (p.log() - q.log())).sum(-1)
    assert torch.allclose(kl_loss(teacher, student), expected)
    assert torch.allclose(kl_loss(teacher, teacher), torch.zeros(1), atol=1e-6)


# ---------------------------------------------------------------- windows and layouts


def test_returns_to_go_and_left_padding(grid_data):
    dataset = load_dataset(grid_data)
    rtg = returns_to_go(dataset.rewards, dataset.mask)
    assert np.allclose(rtg[:, 0], dataset.rewards.sum(axis=1))
    sampler = WindowSampler(dataset, context=5, return_scale=2.0)
    w = sampler.gather(torch.tensor([0, 1]), torch.tensor([1, 10]))
    assert w.mask.tolist()[0] == [False, False, False, True, True]
    assert w.mask[1].all()
    assert torch.all(w.obs[0, :3] == 0) and torch.all(w.timesteps[1] == torch.arange(6, 11))
    assert torch.allclose(w.returns[1, -1], torch.as_tensor(rtg[1, 10]) / 2.0)


@pytest.mark.parametrize("layout", list(Layout))
def test_layouts_round_trip_logits(grid_data, layout):
    dataset = load_dataset(grid_data)
    sampler = WindowSampler(dataset, context=3, return_scale=1.0)
    w = sampler.sample(4, torch.Generator().manual_seed(0))
    inputs = to_inputs(w, layout, dataset.n_actions)
    N, A = dataset.n_agents, dataset.n_actions
    if layout == Layout.INDEPENDENT:
        assert inputs.obs.shape == (N, 4, 3, dataset.obs_dim)
        # member i holds agent i's data only
        assert torch.equal(inputs.obs[1], w.obs[:, :, 1])
    elif layout == Layout.SHARED:
        assert inputs.obs.shape == (1, 4 * N, 3, dataset.obs_dim + N)
        assert torch.equal(inputs.obs[0, 1, :, -N:], torch.eye(N)[1].expand(3, N))
    elif layout == Layout.FACTORED:
        assert inputs.obs.shape == (1, 4, 3, N, dataset.obs_dim)
    else:
        assert inputs.obs.shape == (1, 4, 3, N * dataset.obs_dim)
    # per-agent logits put agent i's output back at position i: use the one-hot actions as fake logits
    M, Bp, K = inputs.mask.shape
    heads = N if layout in (Layout.CENTRALIZED, Layout.FACTORED) else 1
    fake = inputs.actions[..., :A] if heads == 1 else inputs.actions.reshape(M, Bp, K, N, A)
    fake = fake.reshape(M, Bp, K, heads, A)
    back = per_agent_logits(fake, layout, N)
    assert torch.equal(back.argmax(-1), w.actions)


# ---------------------------------------------------------------- models


def test_ensemble_equals_separate_models():
    cfg = DTConfig(
        return_dim=1,
        obs_dim=5,
        action_dim=3,
        n_actions=3,
        context=4,
        width=16,
        layers=2,
        heads=2,
        dropout=0.0,
        members=3,
    )
    ensemble = DecisionTransformer(cfg).eval()
    singles = []
    for i in range(3):
        single = DecisionTransformer(DTConfig(**{**cfg.__dict__, "members": 1})).eval()
        state = {k: v[i : i + 1] for k, v in ensemble.state_dict().items()}
        single.load_state_dict(state)
        singles.append(single)
    g = torch.Generator().manual_seed(0)
    r, o = torch.randn(3, 2, 4, 1, generator=g), torch.randn(3, 2, 4, 5, generator=g)
    a = F.one_hot(torch.randint(0, 3, (3, 2, 4), generator=g), 3).float()
    t = torch.arange(4).expand(3, 2, 4)
    mask = torch.ones(3, 2, 4, dtype=torch.bool)
    mask[:, 0, :2] = False
    logits, _ = ensemble(r, o, a, t, mask)
    for i, single in enumerate(singles):
        li, _ = single(r[i : i + 1], o[i : i + 1], a[i : i + 1], t[i : i + 1], mask[i : i + 1])
        assert torch.allclose(logits[i], li[0], atol=1e-5)


def test_causality_future_tokens_do_not_change_the_past():
    cfg = DTConfig(
        return_dim=1, obs_dim=4, action_dim=2, n_actions=2, context=5, width=8, heads=1, dropout=0.0
    )
    model = DecisionTransformer(cfg).eval()
    r, o = torch.randn(1, 1, 5, 1), torch.randn(1, 1, 5, 4)
    a, t, mask = torch.zeros(1, 1, 5, 2), torch.arange(5).view(1, 1, 5), torch.ones(1, 1, 5, dtype=torch.bool)
    before, _ = model(r, o, a, t, mask)
    o2, a2 = o.clone(), a.clone()
    o2[..., 3:, :] += 5.0
    a2[..., 2:, 0] = 1.0  # a_2 comes after o_2: the prediction at step 2 must not see it
    after, _ = model(r, o2, a2, t, mask)
    assert torch.allclose(before[..., :3, :, :], after[..., :3, :, :], atol=1e-6)
    assert not torch.allclose(before[..., 3, :, :], after[..., 3, :, :])


def test_students_see_no_other_agents_data(grid_data):
    ours = Ours(make_ctx(grid_data, OursConfig(**SMALL)))
    sampler = ours.students.sampler
    w = sampler.sample(6, torch.Generator().manual_seed(1))
    ours.students.model.eval()
    logits, _ = ours.students.forward(w)
    w.obs[:, :, 1] = torch.randn_like(w.obs[:, :, 1])  # change agent 1's observations, rewards, actions
    w.returns[:, :, 1] += 3.0
    w.actions[:, :, 1] = (w.actions[:, :, 1] + 1) % sampler.n_actions
    changed, _ = ours.students.forward(w)
    assert torch.allclose(logits[:, :, 0], changed[:, :, 0])
    assert not torch.allclose(logits[:, :, 1], changed[:, :, 1])


def test_teacher_frozen_and_mapping_momentum(grid_data):
    cfg = OursConfig(**SMALL, teacher_steps=3, momentum_every=3)
    ours = Ours(make_ctx(grid_data, cfg, steps=7))
    for step in range(3):
        ours.update(step)
    teacher = copy.deepcopy(ours.teacher.model.state_dict())
    m_params = [p.detach().clone() for p in ours.map_teacher.parameters()]
    n_params = [p.detach().clone() for p in ours.map_student.parameters()]
    m_changed = []
    for step in range(3, 10):
        metrics = ours.update(step)
        assert {"loss/action", "loss/rel", "loss/kl"} <= set(metrics)
        now = [p.detach().clone() for p in ours.map_teacher.parameters()]
        m_changed.append(any(not torch.equal(a, b) for a, b in zip(m_params, now, strict=True)))
        m_params = now
        n_now = [p.detach().clone() for p in ours.map_student.parameters()]
        assert any(
            not torch.equal(a, b) for a, b in zip(n_params, n_now, strict=True)
        )  # N steps every update
        n_params = n_now
    assert m_changed == [False, False, True, False, False, True, False]
    for key, value in ours.teacher.model.state_dict().items():
        assert torch.equal(value, teacher[key]), key


@pytest.mark.parametrize("ablation", ["no-mapping", "kl-only", "shared-mapping", "no-kl"])
def test_ablations_switch_terms(grid_data, ablation):
    ours = Ours(make_ctx(grid_data, OursConfig(**SMALL, teacher_steps=1, ablation=ablation)))
    ours.update(0)
    metrics = ours.update(1)
    assert ("loss/rel" in metrics) == (ablation != "kl-only")
    assert ("loss/kl" in metrics) == (ablation != "no-kl")
    if ablation == "shared-mapping":
        assert ours.map_teacher is ours.map_student


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="algo.ablation"):
        OursConfig(ablation="bogus")
    with pytest.raises(ConfigError, match=r"algo.ablation.*head_hidden \(128\) == width \(64\)"):
        OursConfig(ablation="shared-mapping", width=64)
    assert OursConfig(ablation="shared-mapping", width=64, head_hidden=64).head_hidden == 64
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="method"):
        RunConfig(method="nope", data="x", out="y")


# ---------------------------------------------------------------- training loop


def small_run(data: Path, out: Path, method: str = "ours", steps: int = 6, **train) -> RunConfig:
    algo = ALGOS[method].config_cls(**SMALL) if method in ("idt", "madt", "teacher", "ours") else None
    return RunConfig(
        method=method,
        data=str(data),
        out=str(out),
        algo=algo,
        train=TrainConfig(
            steps=steps,
            batch_size=8,
            warmup_steps=1,
            log_every=1,
            checkpoint_every=2,
            precision="fp32",
            **train,
        ),
        eval=EvalConfig(episodes=2),
    )


def test_resume_after_kill_matches_uninterrupted(grid_data, tmp_path, monkeypatch):
    full = small_run(grid_data, tmp_path / "full")
    marlkd.train(full, progress=False)

    killed = small_run(grid_data, tmp_path / "killed")
    original = Ours.update

    def dying_update(self, step):
        if step == 9:  # after the checkpoint at 8 (teacher 6 + 2 student updates)
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(Ours, "update", dying_update)
    with pytest.raises(KeyboardInterrupt):
        marlkd.train(killed, progress=False)
    assert not (tmp_path / "killed" / "results.json").exists()
    monkeypatch.setattr(Ours, "update", original)
    marlkd.train(killed, progress=False)

    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["algo"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["algo"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["map_teacher"]:
        assert torch.equal(a["map_teacher"][key], b["map_teacher"][key]), key


def test_finished_run_is_not_redone_and_config_mismatch_is_refused(grid_data, tmp_path):
    cfg = small_run(grid_data, tmp_path / "run", method="idt", steps=2)
    first = marlkd.train(cfg, progress=False)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["return_mean"] == first["return_mean"]
    assert marlkd.train(cfg, progress=False) == first
    other = small_run(grid_data, tmp_path / "run", method="idt", steps=2, seed=1)
    with pytest.raises(ConfigError, match="different config"):
        marlkd.train(other, progress=False)
    shorter = small_run(grid_data, tmp_path / "run", method="idt", steps=1)
    with pytest.raises(ConfigError, match="cannot be shortened"):
        marlkd.train(shorter, progress=False)


def test_tiny_run_learns(grid_data):
    ctx = make_ctx(grid_data, ALGOS["idt"].config_cls(**{**SMALL, "width": 32}), steps=150)
    ctx.train = TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=5, precision="fp32")
    algo = ALGOS["idt"].build(ctx)
    losses = [algo.update(step)["loss/action"] for step in range(150)]
    start, end = np.mean(losses[:5]), np.mean(losses[-10:])
    assert end < 0.8 * start, (start, end)


def test_bf16_autocast_step_runs_and_keeps_fp32_weights(grid_data):
    ctx = make_ctx(grid_data, ALGOS["idt"].config_cls(**SMALL))
    ctx.autocast_dtype = torch.bfloat16
    algo = ALGOS["idt"].build(ctx)
    metrics = algo.update(0)
    assert math.isfinite(metrics["loss/action"])
    assert all(p.dtype == torch.float32 for p in algo.model.parameters())


def test_teacher_cache_shares_one_teacher_between_runs(grid_data, tmp_path):
    cache = tmp_path / "teachers"
    first = Ours(make_ctx(grid_data, OursConfig(**SMALL, teacher_steps=2, teacher_cache=str(cache))))
    assert first.num_updates == 2 + 10
    for step in range(3):  # the first student update saves the trained teacher
        first.update(step)
    assert len(list(cache.glob("teacher-*.pt"))) == 1
    second = Ours(
        make_ctx(
            grid_data, OursConfig(**SMALL, teacher_steps=2, teacher_cache=str(cache), ablation="kl-only")
        )
    )
    assert second.num_updates == 10  # the teacher comes from the cache
    for key, value in first.teacher.model.state_dict().items():
        assert torch.equal(value, second.teacher.model.state_dict()[key]), key
    other_seed = Ours(
        make_ctx(grid_data, OursConfig(**SMALL, teacher_steps=2, teacher_cache=str(cache)), seed=1)
    )
    assert other_seed.num_updates == 12  # another seed trains its own


def test_periodic_evaluation_is_logged(grid_data, tmp_path):
    cfg = small_run(grid_data, tmp_path / "run", method="idt", steps=4)
    cfg = RunConfig(
        method=cfg.method,
        data=cfg.data,
        out=cfg.out,
        algo=cfg.algo,
        train=cfg.train,
        eval=EvalConfig(episodes=2, every=2),
    )
    marlkd.train(cfg, progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    eval_steps = [int(r.split(",")[0]) for r in rows if ",eval/return_mean," in r]
    assert eval_steps == [2, 4]


def test_a_moved_run_directory_is_still_recognised(grid_data, tmp_path):
    first = small_run(grid_data, tmp_path / "a", method="idt", steps=2)
    results = marlkd.train(first, progress=False)
    (tmp_path / "a").rename(tmp_path / "b")
    moved = small_run(grid_data, tmp_path / "b", method="idt", steps=2)
    assert marlkd.train(moved, progress=False)["return_mean"] == results["return_mean"]
