"""Seeds as members: a cell's seeds trained as one program equal separate runs, and fail separately."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import marlkd
from marlkd.algos import ALGOS
from marlkd.checkpoint import load
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset
from marlkd.errors import ConfigError
from marlkd.experiments import members, parse_spec, run_sweep
from marlkd.experiments.members import MemberFailure, clip_per_member_, train_members
from marlkd.experiments.runner import run_dir_for
from marlkd.run_config import RunConfig

SMALL = dict(context=4, width=16, layers=1, heads=2, dropout=0.0, head_hidden=16)


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect_random_dataset("grid-world", 16, tmp_path_factory.mktemp("data") / "gw.h5", seed=3)


def config(data: Path, out: Path, method: str, seed: int, steps: int = 5, eval_episodes: int = 0, **algo):
    return RunConfig(
        method=method,
        data=str(data),
        out=str(out),
        algo=ALGOS[method].config_cls(**{**SMALL, **algo}),
        train=TrainConfig(
            steps=steps,
            batch_size=8,
            lr=3e-3,
            warmup_steps=2,
            seed=seed,
            log_every=1,
            checkpoint_every=2,
            precision="fp32",
            grad_clip=0.05,  # small: the clipping is active, so per-member clipping is tested
        ),
        eval=EvalConfig(episodes=eval_episodes),
    )


@pytest.mark.parametrize("method", ["idt", "madt", "teacher"])
def test_members_equal_separate_runs(grid_data: Path, tmp_path: Path, method: str) -> None:
    seeds = (0, 7)
    group = [config(grid_data, tmp_path / f"m{s}", method, s) for s in seeds]
    results = train_members(group)
    for seed, result in zip(seeds, results, strict=True):
        assert not isinstance(result, MemberFailure)
        assert result["seed"] == seed and result["members"] == 2
        separate = config(grid_data, tmp_path / f"s{seed}", method, seed)
        marlkd.train(separate, progress=False)
        a = load(tmp_path / f"m{seed}" / "checkpoint.pt")["algo"]
        b = load(tmp_path / f"s{seed}" / "checkpoint.pt")["algo"]
        for key in b["model"]:  # same initial weights, data order and updates: equal up to summation order
            assert torch.allclose(a["model"][key], b["model"][key], atol=2e-5), key
        for index, state in b["optimizer"]["state"].items():
            assert torch.allclose(a["optimizer"]["state"][index]["exp_avg"], state["exp_avg"], atol=1e-6)
        assert torch.equal(a["generator"], b["generator"])  # the same windows were drawn
        # the member's run directory is a single run's: metrics per step, and it loads and evaluates
        rows = (tmp_path / f"m{seed}" / "metrics.csv").read_text().splitlines()
        assert sum(",loss/action," in row for row in rows) == 5
    # the two members really differ (different seeds)
    a0 = load(tmp_path / "m0" / "checkpoint.pt")["algo"]["model"]
    a7 = load(tmp_path / "m7" / "checkpoint.pt")["algo"]["model"]
    assert not torch.allclose(a0["embed_obs.weight"], a7["embed_obs.weight"])


def test_members_equal_separate_runs_under_bf16_autocast(grid_data: Path, tmp_path: Path) -> None:
    """The precision ``auto`` picks on CPUs with fast bf16 (and on GPUs): a member computes its bf16
    matmuls on its own slices, so it still ends where the separate run ends (here within 1e-4; five
    updates at lr 3e-3 move a weight by up to 1.5e-2, so a member that did not train would fail)."""
    from dataclasses import replace

    def bf16(out: Path, seed: int) -> RunConfig:
        run = config(grid_data, out, "idt", seed)
        return replace(run, train=replace(run.train, precision="bf16"))

    train_members([bf16(tmp_path / f"m{s}", s) for s in (0, 7)])
    for seed in (0, 7):
        marlkd.train(bf16(tmp_path / f"s{seed}", seed), progress=False)
        a = load(tmp_path / f"m{seed}" / "checkpoint.pt")["algo"]["model"]
        b = load(tmp_path / f"s{seed}" / "checkpoint.pt")["algo"]["model"]
        for key in b:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), key


def test_per_member_clipping_matches_clip_grad_norm() -> None:
    torch.manual_seed(0)
    params = [torch.randn(3, 4, 5, requires_grad=True), torch.randn(3, 1, 5, requires_grad=True)]
    (sum((p * torch.randn_like(p)).sum() for p in params) * 10).backward()
    expected = []
    for member in range(3):
        copies = [p.detach()[member].clone().requires_grad_() for p in params]
        for copy, p in zip(copies, params, strict=True):
            copy.grad = p.grad[member].clone()
        norm = torch.nn.utils.clip_grad_norm_(copies, 1.0)
        expected.append((float(norm), [c.grad for c in copies]))
    norms = clip_per_member_(params, 3, 1.0)
    for member, (norm, grads) in enumerate(expected):
        assert abs(norms[member].item() - norm) < 1e-4
        for p, grad in zip(params, grads, strict=True):
            assert torch.allclose(p.grad[member], grad, atol=1e-6)


def test_a_failing_member_keeps_the_others(grid_data: Path, tmp_path: Path, monkeypatch) -> None:
    original = members._finish_member

    def failing(config, *args):
        if config.train.seed == 1:
            raise RuntimeError("evaluation broke")
        return original(config, *args)

    monkeypatch.setattr(members, "_finish_member", failing)
    group = [config(grid_data, tmp_path / f"m{s}", "idt", s, steps=2) for s in (0, 1, 2)]
    results = train_members(group)
    assert isinstance(results[1], MemberFailure) and "evaluation broke" in results[1].error
    assert not (tmp_path / "m1" / "results.json").exists()
    for index in (0, 2):
        assert json.loads((tmp_path / f"m{index}" / "results.json").read_text())["seed"] == index
    # run again: the finished members are returned as they are, the failed one trains (alone) and finishes
    monkeypatch.setattr(members, "_finish_member", original)
    again = train_members(group)
    assert again[0] == results[0] and again[2] == results[2]
    assert again[1]["seed"] == 1


def test_a_group_resumes_from_its_checkpoint(grid_data: Path, tmp_path: Path, monkeypatch) -> None:
    full = train_members([config(grid_data, tmp_path / f"full{s}", "idt", s) for s in (0, 1)])
    original = members.MemberGroup.update

    def dying(self, step):
        if step == 3:  # after the group checkpoint at step 2
            raise KeyboardInterrupt
        return original(self, step)

    killed = [config(grid_data, tmp_path / f"killed{s}", "idt", s) for s in (0, 1)]
    monkeypatch.setattr(members.MemberGroup, "update", dying)
    with pytest.raises(KeyboardInterrupt):
        train_members(killed)
    assert (tmp_path / "killed0" / members.GROUP_CHECKPOINT).exists()
    monkeypatch.setattr(members.MemberGroup, "update", original)
    resumed = train_members(killed)
    assert not (tmp_path / "killed0" / members.GROUP_CHECKPOINT).exists()
    for seed in (0, 1):
        a = load(tmp_path / f"full{seed}" / "checkpoint.pt")["algo"]["model"]
        b = load(tmp_path / f"killed{seed}" / "checkpoint.pt")["algo"]["model"]
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert [r["seed"] for r in resumed] == [r["seed"] for r in full]


def test_groups_need_runs_that_differ_only_in_seed(grid_data: Path, tmp_path: Path) -> None:
    bc = [
        RunConfig(method="bc", data=str(grid_data), out=str(tmp_path / f"bc{s}"), train=TrainConfig(seed=s))
        for s in (0, 1)
    ]
    with pytest.raises(ConfigError, match="cannot train as members"):
        members.check_group(bc)
    factored = [config(grid_data, tmp_path / f"t{s}", "teacher", s, teacher="factored") for s in (0, 1)]
    with pytest.raises(ConfigError, match="concatenation teacher"):
        members.check_group(factored)
    with pytest.raises(ConfigError, match="differ in more than their seed"):
        members.check_group(
            [
                config(grid_data, tmp_path / "a", "idt", 0),
                config(grid_data, tmp_path / "b", "idt", 1, width=32),
            ]
        )
    with pytest.raises(ConfigError, match="distinct seeds"):
        members.check_group(
            [config(grid_data, tmp_path / "a", "idt", 0), config(grid_data, tmp_path / "b", "idt", 0)]
        )


SPEC = """
name = "members"
description = "Seeds as members in a sweep."
[grid]
envs = ["grid-world"]
methods = ["idt", "bc"]
seeds = 3
steps = [3]
eval_episodes = [1]
dataset_episodes = [12]
[train]
batch_size = 8
[overrides.idt.algo]
context = 4
width = 16
layers = 1
"""


def random_dataset(key, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return collect_random_dataset(key.env, key.episodes, root / f"{key.env}-{key.episodes}.h5", seed=key.seed)


def test_a_sweep_trains_a_cells_seeds_as_members(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    summary = run_sweep(spec, tmp_path, workers=0, dataset_fn=random_dataset, progress=False)
    assert summary.done == 6 and not summary.failed
    from marlkd.experiments import expand

    for run in expand(spec):
        result = json.loads((run_dir_for(tmp_path, run) / "results.json").read_text())
        assert result["seed"] == run.seed
        # IDT's three seeds trained as one group of three members; BC (no members) one run at a time
        assert result.get("members") == (3 if run.method == "idt" else None)


def test_a_sweep_records_a_failing_member_and_keeps_the_others(tmp_path: Path, monkeypatch) -> None:
    """Seed 1's evaluation always fails: the group still trains all three seeds, seeds 0 and 2 finish as
    members, and the sweep records seed 1 as failed (its own marker and traceback), whichever of the
    group's runs the sweep executes first."""
    import marlkd.training

    def broken(original):
        def train(config, *args, **kwargs):
            if config.train.seed == 1:
                raise RuntimeError("evaluation broke")
            return original(config, *args, **kwargs)

        return train

    monkeypatch.setattr(marlkd.training, "train", broken(marlkd.training.train))
    monkeypatch.setattr(marlkd, "train", broken(marlkd.train))  # a run trained alone, as the fallback does
    spec = parse_spec(SPEC.replace('methods = ["idt", "bc"]', 'methods = ["idt"]'))
    summary = run_sweep(spec, tmp_path, workers=0, dataset_fn=random_dataset, progress=False)
    from marlkd.experiments import expand
    from marlkd.experiments.runner import MARKER_FILE

    runs = {run.seed: run for run in expand(spec)}
    assert summary.done == 2 and [f.run_id for f in summary.failed] == [runs[1].run_id]
    assert "evaluation broke" in summary.failed[0].error
    marker = json.loads((run_dir_for(tmp_path, runs[1]) / MARKER_FILE).read_text())
    assert marker["status"] == "failed" and "RuntimeError: evaluation broke" in marker["traceback"]
    for seed in (0, 2):
        result = json.loads((run_dir_for(tmp_path, runs[seed]) / "results.json").read_text())
        assert result["seed"] == seed and result["members"] == 3
    assert not (run_dir_for(tmp_path, runs[1]) / "results.json").exists()
    # the group as a whole did not fail: it is not marked so (its runs are not sent back to one at a time)
    assert not (run_dir_for(tmp_path, runs[0]) / members.GROUP_FAILED).exists()
