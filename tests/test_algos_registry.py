"""Every registered algorithm, built on a tiny dataset and run through the training loop.

One test parametrized over ``ALGOS``: a new method is covered by being registered. Each run takes a few
updates and a few evaluation episodes on the ``test-match`` environment (``tiny_envs``, with action masks
and a global state); interacting methods get a budget of a few rollouts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

import tiny_envs
from marlkd.algos import ALGOS, AlgoEntry, Algorithm, register
from marlkd.algos.base import BaseAlgorithm
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.experiments.display import variant_name
from marlkd.names import METHOD_NAMES, SCRATCH
from marlkd.run_config import RunConfig
from marlkd.training import load_policy, load_run, train

# Small sizes for whichever of these fields a method's config has (others keep their defaults).
SMALL = {
    "context": 4,
    "width": 16,
    "layers": 1,
    "head_hidden": 16,
    "mapping_width": 16,
    "teacher_steps": 2,
    "hidden": 16,
    "mixer_hidden": 8,
    "env_steps": 128,  # two rollouts of 8 copies x 8 steps
    "num_envs": 8,
    "disc_hidden": 16,
    "disc_batch": 16,
    "disc_steps": 2,
}
STEPS, EPISODES = 4, 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("registry") / "match.h5"
    return collect_random_dataset(tiny_envs.ENV_ID, 16, out, seed=0, env_kwargs={"masked": True}, num_envs=16)


def small_config(method: str):
    cls = ALGOS[method].config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in SMALL.items() if k in names})


@pytest.mark.parametrize("method", sorted(ALGOS))
def test_registered_algorithm_trains_evaluates_and_resumes(
    method: str, dataset: Path, tmp_path: Path
) -> None:
    entry = ALGOS[method]
    config = RunConfig(
        method=method,
        data=str(dataset),
        out=str(tmp_path / method),
        train=TrainConfig(
            steps=STEPS, batch_size=8, warmup_steps=1, log_every=1, checkpoint_every=2, precision="fp32"
        ),
        eval=EvalConfig(episodes=EPISODES, every=2),  # also evaluates mid-training
        algo=small_config(method),
    )
    results = train(config, progress=False)

    run_dir = Path(config.out)
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["method"] == method
    assert on_disk["episodes"] == EPISODES
    assert math.isfinite(on_disk["return_mean"]) and math.isfinite(on_disk["return_std"])
    assert 0.0 <= on_disk["return_mean"] <= 8.0  # test-match: at most +1 per step, 8 steps
    assert on_disk["train_steps"] >= 1
    assert (on_disk["env_steps"] > 0) == entry.interacts
    returns = load_dataset(dataset).episode_returns().mean(axis=1)  # what the data scores, for reports
    assert on_disk["data/mean_return"] == pytest.approx(returns.mean())
    assert on_disk["data/best_return"] == pytest.approx(returns.max())
    metric_rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(metric_rows) > 1
    assert all(math.isfinite(float(row.rsplit(",", 1)[1])) for row in metric_rows[1:])

    # a finished run is not redone: same results, files untouched
    stamps = {name: (run_dir / name).stat().st_mtime_ns for name in ("checkpoint.pt", "results.json")}
    assert train(config, progress=False) == results
    assert {name: (run_dir / name).stat().st_mtime_ns for name in stamps} == stamps
    # the method declares the whole interface the loop uses (the protocol, defaults from the base class)
    _, algo, _ = load_run(run_dir)
    assert isinstance(algo, Algorithm) and isinstance(algo, BaseAlgorithm)
    assert algo.num_updates == on_disk["train_steps"] and algo.env_steps == on_disk["env_steps"]
    assert (algo.return_scale is not None) == ("return_scale" in on_disk)
    assert set(algo.extra_policies()) == {k.split("/")[0] for k in on_disk if k.endswith("/return_mean")}
    # the trained policy is rebuilt from the run directory and acts decentralized
    policy = load_policy(run_dir)
    policy.reset(2)
    assert policy.act(*_observation()).shape == (2, 2)


def _observation():
    env = tiny_envs.MatchBatched(2, masked=True)
    return env.reset(seed=0), env.action_mask()


def test_every_method_has_its_display_name_in_reports() -> None:
    assert set(METHOD_NAMES) - {SCRATCH} == set(ALGOS)  # the built-in methods, all registered
    for name, entry in ALGOS.items():
        assert entry.display_name and entry.display_name == METHOD_NAMES[name]
        assert variant_name(name, "") == entry.display_name
    assert variant_name("cql", "") == "MA-CQL"


def test_a_user_method_gets_its_entry_display_name() -> None:
    named = AlgoEntry("user-cql", ALGOS["cql"].config_cls, ALGOS["cql"].build, display_name="User CQL")
    unnamed = AlgoEntry("user-bc", ALGOS["bc"].config_cls, ALGOS["bc"].build)
    assert unnamed.display_name == "user-bc"  # defaults to the registry name
    try:
        register(named)
        assert variant_name("user-cql", "") == "User CQL"
        assert variant_name("user-cql", "x") == "User CQL (x)"
    finally:
        ALGOS.pop("user-cql", None)
    assert variant_name("user-cql", "") == "user-cql"  # not registered: its id
