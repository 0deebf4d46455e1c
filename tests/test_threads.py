"""Thread settings: one rule (marlkd.threads), applied by every entry point before it computes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import marlkd
from marlkd import experts, threads
from marlkd.cli import main
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset
from marlkd.errors import ConfigError
from marlkd.experiments import workers
from marlkd.run_config import RunConfig


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch):
    """Each test starts from 2 torch threads and no choice made; torch goes back to 1 thread after."""
    for name in (threads.THREADS_ENV, *threads.BLAS_ENV_VARS, "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    threads._reset_for_tests()
    torch.set_num_threads(2)
    yield
    threads._reset_for_tests()
    torch.set_num_threads(1)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.resolve_threads() == 1  # nothing set: one thread
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve_threads() == 3
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    assert threads.resolve_threads() == 2  # marlkd's own variable before OpenMP's
    assert threads.resolve_threads(4) == 4  # an explicit count before both
    monkeypatch.setenv(threads.THREADS_ENV, "not a number")
    assert threads.resolve_threads() == 3
    with pytest.raises(ConfigError, match="threads"):
        threads.resolve_threads(-1)


def test_apply_sets_torch_and_the_environment() -> None:
    assert threads.apply_threads() == 1
    assert torch.get_num_threads() == 1
    assert all(os.environ[name] == "1" for name in (threads.THREADS_ENV, *threads.BLAS_ENV_VARS))
    if "jax" not in sys.modules:  # XLA reads its flags once, when JAX starts
        assert "xla_cpu_multi_thread_eigen=false" in os.environ["XLA_FLAGS"]
    assert threads.apply_threads(2) == 2 and torch.get_num_threads() == 2
    # an explicit choice stays in force when a library function later asks for the automatic count
    assert threads.apply_threads() == 2 and torch.get_num_threads() == 2
    assert threads.apply_threads(0) == 2


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect_random_dataset("grid-world", 8, tmp_path_factory.mktemp("data") / "gw.h5", seed=0)


def test_train_applies_the_config_or_the_automatic_count(grid_data: Path, tmp_path: Path) -> None:
    def config(out: str, count: int) -> RunConfig:
        train = TrainConfig(steps=1, batch_size=4, precision="fp32", threads=count)
        return RunConfig(method="bc", data=str(grid_data), out=str(tmp_path / out), train=train,
                         eval=EvalConfig(episodes=0))  # fmt: skip

    marlkd.train(config("auto", 0), progress=False)
    assert torch.get_num_threads() == 1
    marlkd.train(config("three", 3), progress=False)
    assert torch.get_num_threads() == 3


def test_dataset_api_applies_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_make_dataset(*args, **kwargs):
        seen.append(torch.get_num_threads())
        Path(args[3]).write_bytes(b"")

    monkeypatch.setattr(experts.datasets, "make_dataset", fake_make_dataset)
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    experts.ensure_dataset("grid-world", "random", 4, tmp_path, progress=False)
    assert seen == [1]


def test_cli_applies_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # a command without --threads: the automatic count (before it fails on the missing file)
    assert main(["dataset", "info", str(tmp_path / "missing.h5")]) == 2
    assert torch.get_num_threads() == 1
    calls = []

    def fake_train_expert(*args, **kwargs) -> SimpleNamespace:
        calls.append(torch.get_num_threads())
        numbers = ("env_steps", "wall_time_s", "reference_episodes", "expert_return", "random_return")
        extra = {"expert_return_sampled": 0.0, "expert_return_greedy": 0.0, "deterministic": True}
        return SimpleNamespace(**dict.fromkeys(numbers, 0.0), **extra)

    monkeypatch.setattr(experts, "train_expert", fake_train_expert)
    assert main(["expert", "train", "grid-world", "--out", str(tmp_path), "--threads", "2"]) == 0
    assert calls == [2]


def test_sweep_workers_apply_their_share() -> None:
    workers.limit_threads(2)
    assert torch.get_num_threads() == 2 and os.environ[threads.THREADS_ENV] == "2"
    threads._reset_for_tests()
    workers.limit_threads(0)  # no share given: the automatic count (here the variable just set)
    assert torch.get_num_threads() == 2


def test_finetune_and_evaluation_apply_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from marlkd.errors import MarlkdError
    from marlkd.finetune import finetune
    from marlkd.training import evaluate_run

    monkeypatch.setenv(threads.THREADS_ENV, "1")
    with pytest.raises(MarlkdError, match="no config.json"):  # threads are set before the run is read
        finetune(tmp_path)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    with pytest.raises(MarlkdError, match="no config.json"):
        evaluate_run(tmp_path)
    assert torch.get_num_threads() == 1


class _Started(Exception):
    """Raised by a stand-in for an entry point's first piece of work, once it saw the thread count."""


def test_every_public_entry_point_applies_threads(
    grid_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each public function that computes sets the automatic count (here MARLKD_THREADS=1, while torch
    runs 2 threads) before its first piece of work: the stand-in for that work records the count."""
    from marlkd import ppo, training
    from marlkd.experiments import members
    from marlkd.ppo import trainer

    seen: list[int] = []

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise _Started

    def check(call) -> None:
        torch.set_num_threads(2)
        with pytest.raises(_Started):
            call()
        assert seen.pop() == 1

    monkeypatch.setenv(threads.THREADS_ENV, "1")
    monkeypatch.setattr(trainer, "make_batched", record)  # PPO's first step: its environments
    check(lambda: ppo.train_ppo("grid-world", ppo.PPOConfig(total_steps=8), tmp_path / "ppo", progress=False))
    monkeypatch.setattr(experts.training, "train_ppo", record)
    check(lambda: experts.train_expert("grid-world", tmp_path / "expert", steps=8, progress=False))
    monkeypatch.setattr(experts.training, "train_expert", record)
    check(lambda: experts.ensure_expert("grid-world", tmp_path / "experts", steps=8, progress=False))
    monkeypatch.setattr(experts.datasets, "collect_episodes", record)
    check(lambda: experts.make_dataset("grid-world", "random", 4, tmp_path / "r.h5", progress=False))
    monkeypatch.setattr(members.MemberGroup, "update", record)  # members: the group's first update
    group = [
        RunConfig(method="idt", data=str(grid_data), out=str(tmp_path / f"m{seed}"),
                  train=TrainConfig(steps=1, batch_size=4, seed=seed), eval=EvalConfig(episodes=0))
        for seed in (0, 1)
    ]  # fmt: skip
    check(lambda: members.train_members(group))
    monkeypatch.setattr(training.loop, "build_algorithm", record)
    check(lambda: marlkd.train(RunConfig(method="bc", data=str(grid_data), out=str(tmp_path / "bc"))))
