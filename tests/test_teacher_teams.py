"""The factored teacher on several team sizes at once and with agents that do not act (dead, finished,
padding): which agents act, the pool of teams, masking in attention and loss, distillation per team."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from marlkd.algos import ALGOS, BuildContext
from marlkd.algos._dt import DTPolicy, action_loss
from marlkd.algos.teacher import teacher_key, teacher_outputs, teacher_view
from marlkd.algos.teacher_models import build_teacher
from marlkd.cli import main
from marlkd.config import TrainConfig
from marlkd.data import collect_random_dataset, load_dataset, write_dataset
from marlkd.data.teams import pool_teams
from marlkd.data.windows import WindowSampler, acting_agents
from marlkd.errors import ConfigError, DatasetError
from marlkd.models.layouts import Layout
from marlkd.training import load_run

SMALL = dict(context=4, width=16, layers=2, heads=2, dropout=0.0, head_hidden=16)
O, A = 6, 4  # the synthetic datasets' sizes; action 3 plays SMAX's "stop"


def synthetic(path: Path, n_agents: int = 3, episodes: int = 4, steps: int = 8, seed: int = 0) -> Path:
    """A dataset with action masks in which agent 1 of episode 0 dies at step 3 (from then on its
    observation is zeros and "stop" is its only action, as SMAX marks a dead unit) and agent 2 of episode 1
    finishes at step 4 (its own terminal flag, as a crashed Highway car); episode 2 is two steps shorter."""
    rng = np.random.default_rng(seed)
    E, T, N = episodes, steps, n_agents
    obs = rng.normal(size=(E, T, N, O)).astype(np.float32)
    actions = rng.integers(0, A, size=(E, T, N))
    avail = np.ones((E, T, N, A), bool)
    mask = np.ones((E, T), bool)
    mask[2, -2:] = False
    obs[0, 3:, 1] = 0.0
    avail[0, 3:, 1] = False
    avail[0, 3:, 1, 3] = True
    actions[0, 3:, 1] = 3
    terminals = np.zeros((E, T, N), bool)
    terminals[1, 4, 2] = True
    arrays = dict(
        obs=obs * mask[..., None, None],
        actions=actions * mask[..., None],
        rewards=(rng.normal(size=(E, T, N)) * mask[..., None]).astype(np.float32),
        mask=mask,
        terminals=terminals,
        truncations=np.zeros((E, T, N), bool),
        avail_actions=avail & mask[..., None, None],
    )
    return write_dataset(path, arrays, {"env_id": "synthetic", "n_actions": A})


def make_ctx(dataset, config, steps: int = 10) -> BuildContext:
    torch.manual_seed(0)
    return BuildContext(
        dataset=dataset,
        config=config,
        train=TrainConfig(steps=steps, batch_size=8, warmup_steps=1, seed=0, precision="fp32"),
        device=torch.device("cpu"),
        autocast_dtype=None,
        run_dir=None,
        seed=0,
    )


def factored(**fields):
    return ALGOS["teacher"].config_cls(**SMALL, teacher="factored", **fields)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teams")
    paths = {"synthetic": synthetic(root / "synthetic.h5")}
    for n in (2, 3):
        paths[f"gw{n}"] = collect_random_dataset(
            "grid-world", 6, root / f"gw{n}.h5", seed=n, env_kwargs={"n_agents": n, "max_steps": 12}
        )
    es3 = {"n_agents": 3}
    paths["es3"] = collect_random_dataset("equal-space", 2, root / "es3.h5", seed=0, env_kwargs=es3)
    return paths


# ---------------------------------------------------------------- which agents act


def test_acting_agents_marks_dead_and_finished_agents(data):
    dataset = load_dataset(data["synthetic"])
    acting = acting_agents(dataset)
    assert acting.shape == (4, 8, 3)
    assert acting[0, :3, 1].all() and not acting[0, 3:, 1].any()  # dead from step 3
    assert acting[1, :5, 2].all() and not acting[1, 5:, 2].any()  # acts at its terminal step, not after
    assert not acting[2, -2:].any()  # padding after the episode
    expected = dataset.mask[..., None].repeat(3, axis=2)
    expected[0, 3:, 1] = expected[1, 5:, 2] = False
    np.testing.assert_array_equal(acting, expected)
    # an agent with one available action but a real observation still acts (it is not dead)
    live = dataclass_copy(dataset, obs=np.where(dataset.obs == 0, 1.0, dataset.obs).astype(np.float32))
    assert acting_agents(live)[0, 3:, 1].all()


def dataclass_copy(dataset, **arrays):
    import dataclasses

    return dataclasses.replace(dataset, **arrays)


def test_sampler_windows_carry_presence_only_when_asked_and_needed(data):
    dataset = load_dataset(data["synthetic"])
    plain = WindowSampler(dataset, 4, 1.0)
    marked = WindowSampler(dataset, 4, 1.0, presence=True)
    episode, end = torch.tensor([0, 0, 1]), torch.tensor([2, 5, 6])
    assert plain.gather(episode, end).present is None
    present = marked.gather(episode, end).present  # (3, 4, 3): steps end-3 .. end
    assert present[0].all()  # window over steps -1..2: agent 1 still alive, left padding counts as present
    assert present[1, :, 1].tolist() == [True, False, False, False]  # steps 2..5, dead from 3
    assert present[2, :, 2].tolist() == [True, True, False, False]  # steps 3..6, finished at 4
    grid = load_dataset(data["gw2"])  # nobody dies in Grid-World: the windows are the plain ones
    assert WindowSampler(grid, 4, 1.0, presence=True).present is None


# ---------------------------------------------------------------- masking in the teacher


def test_a_dead_agents_token_changes_nothing_in_the_others_outputs(data):
    dataset = load_dataset(data["synthetic"])
    learner = build_teacher(make_ctx(dataset, factored()), factored())
    for module in learner.model.modules():  # weights large enough that any leak shows
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, 0.0, 0.3)
    learner.model.eval()
    window = learner.sampler.gather(torch.tensor([0, 0]), torch.tensor([5, 7]))
    absent = ~window.present  # agent 1 from step 3
    assert absent[..., 1].any() and not absent[..., [0, 2]].any()
    noisy = dataclass_copy(
        window,
        obs=torch.where(absent[..., None], torch.full_like(window.obs, 7.0), window.obs),
        returns=torch.where(absent, torch.full_like(window.returns, -5.0), window.returns),
        actions=torch.where(absent, torch.full_like(window.actions, 2), window.actions),
    )
    with torch.no_grad():
        logits, features = learner.forward(window)
        noisy_logits, noisy_features = learner.forward(noisy)
        unmasked, _ = learner.forward(dataclass_copy(noisy, present=None))
    others = window.present.clone()
    others[..., 1] = False
    assert torch.allclose(logits[others], noisy_logits[others], atol=1e-5)
    assert torch.allclose(features[0][others], noisy_features[0][others], atol=1e-5)
    # without the mask the dead agent's junk does reach the others (the check above has teeth)
    assert (logits[others] - unmasked[others]).abs().max() > 1e-2


def test_agents_that_do_not_act_are_left_out_of_the_loss(data):
    dataset = load_dataset(data["synthetic"])
    learner = build_teacher(make_ctx(dataset, factored()), factored())
    window = learner.sampler.gather(torch.tensor([1, 1]), torch.tensor([6, 7]))  # agent 2 finished at 4
    assert not window.present[:, -1, 2].any()
    logits, _ = learner.forward(window)
    other_labels = dataclass_copy(
        window, actions=torch.where(window.present, window.actions, (window.actions + 1) % A)
    )
    assert torch.equal(action_loss(logits, window), action_loss(logits, other_labels))
    counted = dataclass_copy(window, present=None)
    assert not torch.equal(action_loss(logits, counted), action_loss(logits, other_labels))


def test_the_policy_tells_the_teacher_which_agents_act():
    seen = []

    class Recorder(torch.nn.Module):
        cfg = SimpleNamespace(max_timestep=50)

        def forward(self, returns, obs, actions, timesteps, mask, presence=None):
            seen.append(None if presence is None else presence[0, :, -1].clone())
            return torch.zeros(*obs.shape[:-1], A), None

    policy = DTPolicy(Recorder(), Layout.FACTORED, 3, A, 4, 1.0, np.zeros(3), torch.device("cpu"))
    policy.reset(2)
    obs, avail = np.ones((2, 3, O), np.float32), np.ones((2, 3, A), bool)
    policy.act(obs, avail)
    assert seen[-1] is None  # everybody acts: no mask
    obs[0, 1], avail[0, 1] = 0.0, [False, False, False, True]  # copy 0's agent 1 is dead
    policy.act(obs, avail)
    assert seen[-1].tolist() == [[True, False, True], [True, True, True]]
    policy.observe(np.zeros((2, 3)), np.array([[False, False, False], [False, False, True]]))
    obs, avail = np.ones((2, 3, O), np.float32), np.ones((2, 3, A), bool)
    policy.act(obs, avail)  # copy 1's agent 2 finished its episode
    assert seen[-1].tolist() == [[True, True, True], [True, True, False]]
    policy.observe(np.zeros((2, 3)), np.array([[True, True, True], [False, False, True]]))
    policy.act(obs, avail)  # copy 0's team is done (frozen until the batch ends): nobody hidden there
    assert seen[-1].tolist() == [[True, True, True], [True, True, False]]


# ---------------------------------------------------------------- several team sizes


def test_pool_pads_teams_and_does_not_depend_on_the_order(data):
    gw2, gw3 = load_dataset(data["gw2"]), load_dataset(data["gw3"])
    pool = pool_teams([("a", gw2), ("b", gw3)])
    E = gw2.n_episodes + gw3.n_episodes
    assert pool.obs.shape == (E, max(gw2.max_steps, gw3.max_steps), 3, gw2.obs_dim)
    small = pool.source == [s.n_agents for s in pool.sources].index(2)
    assert small.sum() == gw2.n_episodes
    assert not pool.acting()[small][..., 2].any()  # the padding agent never acts
    assert (pool.obs[small][..., 2, :] == 0).all() and (pool.rewards[small][..., 2] == 0).all()
    np.testing.assert_array_equal(pool.acting()[~small], pool.mask[~small][..., None].repeat(3, axis=2))
    other = pool_teams([("b", gw3), ("a", gw2)])
    np.testing.assert_array_equal(pool.obs, other.obs)
    assert [s.checksum for s in pool.sources] == [s.checksum for s in other.sources]


def test_datasets_of_other_per_agent_sizes_are_refused_naming_them(data):
    gw2, es3 = load_dataset(data["gw2"]), load_dataset(data["es3"])
    with pytest.raises(ConfigError) as info:
        pool_teams([("runs/gw2.h5", gw2), ("runs/es3.h5", es3)])
    message = str(info.value)
    assert message.startswith("config field algo.teacher_data:")
    assert "runs/gw2.h5 (grid-world, 2 agents): observation size 78, 5 actions" in message
    assert "runs/es3.h5 (equal-space, 3 agents): observation size 8, 5 actions" in message
    with pytest.raises(ConfigError, match="x.h5 and y.h5 are the same dataset"):
        pool_teams([("y.h5", gw2), ("x.h5", gw2)])
    with pytest.raises(ConfigError, match="algo.teacher_data: only the factored teacher"):
        ALGOS["ours"].config_cls(teacher_data=(str(data["gw3"]),))
    cfg = factored(teacher_data=(str(data["es3"]),))
    with pytest.raises(ConfigError, match="observation size 8"):
        build_teacher(make_ctx(gw2, cfg), cfg)


def test_a_pooled_teacher_trains_on_every_team_and_acts_for_the_runs_own(data):
    gw2 = load_dataset(data["gw2"])
    cfg = factored(teacher_data=(str(data["gw3"]),))
    learner = build_teacher(make_ctx(gw2, cfg), cfg)
    pool = learner.train_data
    assert learner.sampler.num_positions == int(pool.mask.sum()) > int(gw2.mask.sum())
    assert (learner.sampler.n_agents, learner.n_agents) == (3, 2)
    losses = [learner.update(step)["loss/action"] for step in range(3)]
    assert np.isfinite(losses).all()
    # the students' windows (the run's team of two) as the pooled teacher reads them
    students = WindowSampler(gw2, cfg.context, 1.0)
    view = teacher_view(learner, students, gw2)
    assert view.return_scale == learner.return_scale and view.obs is students.obs  # shared, not copied
    features, logits = teacher_outputs(learner, view)
    assert features.shape == (*gw2.mask.shape, 2, 16) and logits.shape == (*gw2.mask.shape, 2, 5)
    assert learner.policy().n_agents == 2


def key_context(checksum: str, episodes: int) -> SimpleNamespace:
    dataset = SimpleNamespace(metadata=SimpleNamespace(checksum=checksum), n_episodes=episodes)
    return SimpleNamespace(dataset=dataset, train=TrainConfig())


def test_teacher_cache_key_keeps_earlier_names_and_pools_share_one():
    ctx, other = key_context("0" * 64, 10), key_context("b" * 64, 5)
    config_cls = ALGOS["ours"].config_cls
    # the file names of teachers cached before pooled teachers existed
    assert teacher_key(ctx, config_cls(), 1000) == "teacher-879889c3b876e05b.pt"
    factored_key = teacher_key(ctx, config_cls(teacher="factored", agent_ids=4), 1000)
    assert factored_key == "teacher-a624086d4fcfb4f8.pt"
    a, b = SimpleNamespace(checksum="a" * 64, episodes=3), SimpleNamespace(checksum="b" * 64, episodes=5)
    cfg = config_cls(teacher="factored")
    assert teacher_key(ctx, cfg, 10, (a, b)) == teacher_key(other, cfg, 10, (b, a))
    assert teacher_key(ctx, cfg, 10, (a, b)) != teacher_key(ctx, cfg, 10)


def test_ours_distils_a_pooled_teacher_into_each_datasets_team(data, tmp_path):
    """One teacher on teams of two and three (trained once, shared through the cache); each run distils it
    into the students of its own dataset's team."""
    cache = tmp_path / "cache"
    common = ["--teacher", "factored", "--teacher-cache", str(cache), "--context", "4", "--width", "16"]
    common += ["--layers", "1", "--head-hidden", "16", "--dropout", "0", "--steps", "4", "--batch-size", "8"]
    common += ["--log-every", "1", "--eval-episodes", "2", "--quiet"]
    runs = {}
    for own, more in (("gw2", "gw3"), ("gw3", "gw2")):
        out = tmp_path / own
        args = ["train", "ours", "--data", str(data[own]), "--out", str(out)]
        assert main([*args, "--teacher-data", str(data[more]), *common]) == 0
        runs[own] = out
    first = json.loads((runs["gw2"] / "results.json").read_text())
    second = json.loads((runs["gw3"] / "results.json").read_text())
    assert first["train_steps"] == 8 and second["train_steps"] == 4  # the second reused the cached teacher
    assert len(list(cache.iterdir())) == 1
    assert first["config"]["algo"]["teacher_data"] == [str(data["gw3"])]
    for own, n in (("gw2", 2), ("gw3", 3)):
        _, algo, dataset = load_run(runs[own])
        assert dataset.n_agents == n and algo.students.model.cfg.members == n  # students of its own team
        assert algo.teacher.sampler.n_agents == 3  # the teacher trained on the pool
        algo._freeze_and_cache()
        assert algo.cache[0].shape[:3] == (*dataset.mask.shape, n)  # distilled on its own dataset
        assert algo.extra_policies()["teacher"].n_agents == n
    teacher_a = load_run(runs["gw2"])[1].teacher.model.state_dict()
    teacher_b = load_run(runs["gw3"])[1].teacher.model.state_dict()
    assert all(torch.equal(teacher_a[k], teacher_b[k]) for k in teacher_a)


def test_a_run_refuses_teacher_data_that_changed_or_differs(data, tmp_path):
    more = tmp_path / "more.h5"
    more.write_bytes(Path(data["gw3"]).read_bytes())
    out = tmp_path / "run"
    args = ["train", "teacher", "--data", str(data["gw2"]), "--out", str(out), "--teacher", "factored"]
    args += ["--teacher-data", str(more), "--context", "4", "--width", "16", "--layers", "1"]
    args += ["--head-hidden", "16", "--steps", "2", "--batch-size", "4", "--eval-episodes", "0", "--quiet"]
    assert main(args) == 0
    model = {**SMALL, "layers": 1}  # the run's
    # ours reusing this teacher run must pool the same datasets (the weights would load, but the teacher
    # was trained on other data, with another return scale)
    cfg = ALGOS["ours"].config_cls(**model, teacher="factored", teacher_run=str(out))
    expected = "teacher_run: .* trained its teacher on .*more.h5.*would train on its own dataset alone"
    with pytest.raises(ConfigError, match=expected):
        ALGOS["ours"].build(make_ctx(load_dataset(data["gw2"]), cfg))
    pooled = ALGOS["ours"].config_cls(
        **model, teacher="factored", teacher_run=str(out), teacher_data=(str(more),)
    )
    reused = ALGOS["ours"].build(make_ctx(load_dataset(data["gw2"]), pooled))
    assert reused.teacher_steps == 0  # the same pool: the run's teacher is taken as it is
    collect_random_dataset("grid-world", 6, more, seed=9, env_kwargs={"n_agents": 3, "max_steps": 12})
    with pytest.raises(DatasetError, match="trained on .*more.h5.*hold other data"):
        load_run(out)
