"""A PettingZoo ParallelEnv marlkd does not ship, registered with one call: layout, batched form, masks,
collection, training, evaluation, GIFs; user environments seen by the command line, sweeps and workers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pz_envs
from marlkd.algos import ALGOS
from marlkd.cli import main
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset, load_dataset
from marlkd.envs import env_spec, make, make_batched, plugins, registry
from marlkd.errors import MarlkdError
from marlkd.run_config import RunConfig

SMALL_DT = {"context": 3, "width": 16, "layers": 1, "heads": 2, "dropout": 0.0, "head_hidden": 16}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Environments a test registers (built-in ones aside), and what ``--import`` adds to MARLKD_IMPORT,
    end with the test."""
    monkeypatch.setenv(plugins.IMPORT_ENV, os.environ.get(plugins.IMPORT_ENV, ""))
    before = set(registry._REGISTRY)
    yield
    for env_id in set(registry._REGISTRY) - before - set(registry._BUILTIN_MODULES):
        del registry._REGISTRY[env_id]


@pytest.mark.parametrize("mask_in", ["observation", "info"])
def test_layout_flattens_pads_and_masks(mask_in: str) -> None:
    spec = env_spec(pz_envs.RELAY_ID, mask_in=mask_in)
    assert (spec.n_agents, spec.obs_dim, spec.n_actions, spec.state_dim, spec.max_steps) == (3, 8, 4, 3, 6)
    assert spec.has_action_mask and spec.kwargs == {"mask_in": mask_in}
    env = make_batched(pz_envs.RELAY_ID, 2, mask_in=mask_in)
    obs = env.reset(seed=5)
    reference = pz_envs.RelayEnv(mask_in=mask_in)
    raw, infos = reference.reset(seed=6)  # copy 1 is reset with seed + 1
    grid = raw["helper"]["observation"] if mask_in == "observation" else raw["helper"]
    np.testing.assert_array_equal(obs[1, 1], grid.reshape(-1))  # a (2, 4) Box, flattened
    mask = env.action_mask()
    assert not mask[:, 1, 3].any() and not mask[:, 2, 3].any()  # helper and lookout have 3 actions
    target = int(np.argmax(obs[1, 0, :4]))
    assert mask[1, 0, target] and not mask[1, 0, (target + 1) % 4]
    np.testing.assert_array_equal(env.state()[1], reference.state())


def test_batched_steps_copies_with_agents_leaving() -> None:
    env = make_batched(pz_envs.RELAY_ID, 3, leave_at=2, max_cycles=4)
    obs = env.reset(seed=0)
    total = np.zeros((3, 3))
    for step in range(6):
        targets = obs[:, :, :4].argmax(-1)  # the pointed-at action (always available)
        before = obs.copy()
        obs, rewards, terminated, truncated = env.step(targets)
        total += rewards
        if step == 1:  # lookout leaves after its second step: terminated, not truncated
            assert terminated[:, 2].all() and not truncated[:, 2].any() and not env.done().any()
        if step == 2:  # it is gone: no reward, frozen observation, only action 0 allowed
            assert (rewards[:, 2] == 0).all() and (obs[:, 2] == before[:, 2]).all()
            assert (env.action_mask()[:, 2] == [True, False, False, False]).all()
        if step == 3:  # the step limit truncates the others
            assert truncated[:, :2].all() and terminated[:, 2].all() and env.done().all()
        if step >= 4:  # a finished copy is a no-op
            assert (rewards == 0).all()
    np.testing.assert_array_equal(total, [[4, 4, 2]] * 3)


def test_single_copy_form_passes_pettingzoo_api_test() -> None:
    from pettingzoo.test import parallel_api_test

    parallel_api_test(make(pz_envs.RELAY_ID, mask_in="info", strict=False), num_cycles=20)
    env = make(pz_envs.RELAY_ID)
    observations, infos = env.reset(seed=1)
    assert observations["runner"].shape == (8,) and infos["lookout"]["action_mask"].tolist() == [
        *(infos["lookout"]["action_mask"][:3].tolist()),
        False,
    ]


def test_collect_train_ours_and_idt_evaluate_and_gif(tmp_path: Path) -> None:
    from marlkd.training import evaluate_run, train

    data = collect_random_dataset(pz_envs.RELAY_ID, 24, tmp_path / "relay.h5", seed=0, num_envs=8)
    dataset = load_dataset(data)
    assert dataset.avail_actions is not None and dataset.state_dim == 3 and dataset.max_steps == 6
    for method in ("idt", "ours"):
        config = RunConfig(
            method=method,
            data=str(data),
            out=str(tmp_path / method),
            train=TrainConfig(steps=3, batch_size=8, warmup_steps=1, precision="fp32"),
            eval=EvalConfig(episodes=4, gif=method == "ours"),
            algo=__import__(f"marlkd.algos.{method}", fromlist=["Config"]).Config(**SMALL_DT),
        )
        results = train(config, progress=False)
        assert results["episodes"] == 4 and 0 <= results["return_mean"] <= 6
    assert (tmp_path / "ours" / "episode.gif").stat().st_size > 0
    again = evaluate_run(tmp_path / "idt", EvalConfig(episodes=2))
    assert again["episodes"] == 2


def test_mpe_simple_spread_collects_and_trains(tmp_path: Path) -> None:
    pytest.importorskip("mpe2", reason="MPE is the mpe2 package (the test extra)")
    from marlkd.training import train

    spec = env_spec(pz_envs.SPREAD_ID, N=2, max_cycles=10)
    assert (spec.n_agents, spec.obs_dim, spec.n_actions, spec.state_dim, spec.max_steps) == (2, 12, 5, 24, 10)
    data = collect_random_dataset(
        pz_envs.SPREAD_ID, 8, tmp_path / "spread.h5", seed=0, env_kwargs={"N": 2, "max_cycles": 10}
    )
    config = RunConfig(
        method="idt",
        data=str(data),
        out=str(tmp_path / "idt"),
        train=TrainConfig(steps=2, batch_size=4, warmup_steps=1, precision="fp32"),
        eval=EvalConfig(episodes=2),
    )
    results = train(config, progress=False)
    assert results["episode_length_mean"] == 10 and results["return_mean"] < 0  # spread's rewards


@pytest.mark.slow
def test_ppo_expert_and_good_data_on_a_pettingzoo_env(tmp_path: Path) -> None:
    from marlkd import experts

    info = experts.train_expert(
        pz_envs.RELAY_ID, tmp_path / "expert", steps=768, reference_episodes=8, progress=False
    )
    assert info.env_steps >= 768
    path = experts.make_dataset(
        pz_envs.RELAY_ID, "good", 16, tmp_path / "good.h5", expert_dir=tmp_path / "expert"
    )
    assert load_dataset(path).metadata.quality == "good"


def test_cli_import_makes_the_environment_visible(tmp_path: Path, capsys, monkeypatch) -> None:
    module = tmp_path / "my_envs.py"
    module.write_text(
        "from pz_envs import RelayEnv\n"
        "from marlkd.envs.pettingzoo import register_parallel_env\n"
        "register_parallel_env('my-relay', RelayEnv, overwrite=True)\n"
    )
    monkeypatch.chdir(tmp_path)  # --import finds modules in the current directory
    out = tmp_path / "my.h5"
    arguments = ["collect", "my-relay", "--quality", "random", "--episodes", "6", "--out", str(out)]
    assert main([*arguments, "--import=my_envs"]) == 0
    assert load_dataset(out).metadata.env_id == "my-relay"
    assert "my_envs" in os.environ[plugins.IMPORT_ENV].split(",")  # passed on to child processes
    capsys.readouterr()
    assert main(["--import", "no_such_module_here", "dataset", "info", str(out)]) == 2
    assert "--import no_such_module_here: cannot import module" in capsys.readouterr().err


def test_entry_points_register_installed_environments(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "site"
    (package / "relay_plugin-1.0.dist-info").mkdir(parents=True)
    (package / "relay_plugin-1.0.dist-info" / "METADATA").write_text("Name: relay-plugin\nVersion: 1.0\n")
    (package / "relay_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[marlkd.envs]\nrelay = relay_plugin:register\nbroken = relay_plugin:missing_function\n"
    )
    (package / "relay_plugin.py").write_text(
        "def register():\n"
        "    from pz_envs import RelayEnv\n"
        "    from marlkd.envs.pettingzoo import register_parallel_env\n"
        "    register_parallel_env('plugin-relay', RelayEnv, overwrite=True)\n"
    )
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setattr(plugins, "_loaded", False)
    with pytest.warns(UserWarning, match=r"entry point 'broken' \(relay_plugin:missing_function\)"):
        spec = env_spec("plugin-relay")  # an unknown id loads the entry points, then finds it
    assert spec.n_agents == 3


def _sweep_spec(tmp_path: Path, env: str, extra: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(
        f"""name = "pz"
{extra}
[grid]
envs = ["{env}"]
methods = ["bc"]
seeds = 1
steps = [2]
eval_episodes = [2]
dataset_episodes = [8]
quality = ["random"]

[train]
batch_size = 4
"""
    )
    return path


def test_sweep_checks_envs_after_importing_run_fn_module(tmp_path: Path, monkeypatch) -> None:
    from marlkd.experiments.runner import run_sweep
    from marlkd.experiments.spec import load_spec

    (tmp_path / "late_envs.py").write_text(
        "from pz_envs import RelayEnv\n"
        "from marlkd.envs.pettingzoo import register_parallel_env\n"
        "from marlkd.experiments.runner import train_run as run\n"
        "register_parallel_env('late-relay', RelayEnv, overwrite=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = load_spec(_sweep_spec(tmp_path, "late-relay", 'run_fn = "late_envs:run"'))
    summary = run_sweep(spec, tmp_path / "exp", workers=0, progress=False)
    assert summary.done == 1 and not summary.failed


@pytest.mark.slow
def test_sweep_spawned_workers_import_the_spec_modules(tmp_path: Path) -> None:
    from marlkd.experiments.runner import run_sweep
    from marlkd.experiments.spec import load_spec

    (tmp_path / "worker_envs.py").write_text(
        "from pz_envs import RelayEnv\n"
        "from marlkd.envs.pettingzoo import register_parallel_env\n"
        "register_parallel_env('worker-relay', RelayEnv, overwrite=True)\n"
    )
    sys.path.insert(0, str(tmp_path))  # as an installed package would be, for the spawned workers too
    try:
        spec = load_spec(_sweep_spec(tmp_path, "worker-relay", 'imports = ["worker_envs"]'))
        assert spec.imports == ("worker_envs",)
        summary = run_sweep(spec, tmp_path / "exp", workers=1, progress=False)
    finally:
        sys.path.remove(str(tmp_path))
    assert summary.done == 1 and not summary.failed
    rows = (tmp_path / "exp" / "pz" / "results.csv").read_text()
    assert "worker-relay" in rows


def test_a_bad_factory_is_reported_naming_the_environment() -> None:
    from gymnasium import spaces

    from marlkd.envs.pettingzoo import register_parallel_env

    class Continuous(pz_envs.RelayEnv):
        def action_space(self, agent):
            return spaces.Box(-1.0, 1.0, (2,), np.float32)

    register_parallel_env("test-pz-continuous", Continuous, overwrite=True)
    with pytest.raises(
        MarlkdError, match=r"test-pz-continuous: agent 'runner': action space Box.* not Discrete"
    ):
        env_spec("test-pz-continuous")
    register_parallel_env("test-pz-nolimit", lambda: _NoLimit(), overwrite=True)
    with pytest.raises(MarlkdError, match=r"test-pz-nolimit: cannot tell the episode's step limit"):
        env_spec("test-pz-nolimit")
    # ``marlkd envs`` lists such an environment with the reason, and the others as usual
    from marlkd.cli.envs import env_rows

    rows = {row.env_id: row for row in env_rows() if row.env_id.startswith("test-pz")}
    assert "cannot tell the episode's step limit" in rows["test-pz-nolimit"].unavailable
    assert rows[pz_envs.RELAY_ID].agents == "3" and not rows[pz_envs.RELAY_ID].unavailable
    json.dumps(env_spec(pz_envs.RELAY_ID).kwargs)


class _NoLimit(pz_envs.RelayEnv):
    def __init__(self) -> None:
        super().__init__()
        del self.max_cycles


@pytest.fixture(scope="module")
def relay_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("relay") / "relay.h5"
    return collect_random_dataset(pz_envs.RELAY_ID, 16, out, seed=0, num_envs=8)


@pytest.mark.parametrize("method", sorted(ALGOS))
def test_every_method_trains_and_evaluates_on_the_pettingzoo_env(
    method: str, relay_data: Path, tmp_path: Path
):
    from marlkd.training import train
    from test_algos_registry import small_config

    config = RunConfig(
        method=method,
        data=str(relay_data),
        out=str(tmp_path / method),
        train=TrainConfig(steps=2, batch_size=8, warmup_steps=1, precision="fp32"),
        eval=EvalConfig(episodes=3),
        algo=small_config(method),
    )
    results = train(config, progress=False)
    assert results["episodes"] == 3 and 0.0 <= results["return_mean"] <= 6.0  # relay: at most 1 per step
    assert (results["env_steps"] > 0) == ALGOS[method].interacts
