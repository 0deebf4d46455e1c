"""Local sweep workers that serve several runs: each run finds the process as a fresh worker would have
it (random generators, signal handlers, environment, working directory, warning filters, logging
handlers, torch's threads, grad mode and default dtype), whatever the run before it changed; and the JAX
compilation cache's settings. The run and dataset functions are module-level, so spawned workers can
import them."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marlkd import jax_cache
from marlkd.cli import main
from marlkd.errors import ConfigError
from marlkd.experiments import expand, load_results, parse_spec, run_sweep
from marlkd.experiments import workers as workers_module
from marlkd.experiments.runner import run_dir_for
from marlkd.experiments.spec import DatasetKey, RunSpec

SPEC = """
name = "leaks"
description = "Runs that change their process, for the worker tests."

[grid]
envs = ["grid-world"]
methods = ["idt", "bc"]
seeds = 2
steps = [4]
eval_episodes = [2]
dataset_episodes = [4]
"""
_LEAK = "MARLKD_TEST_LEAK"
_FILTER = "marlkd-test-leak"


def _on_term(signum: int, frame: Any) -> None:  # a handler a run installs and should not leave behind
    raise SystemExit(1)


def placeholder_dataset(key: DatasetKey, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key.env}-{key.episodes}-s{key.seed}.h5"
    path.write_text("placeholder")
    return path


def polluting_run(run: RunSpec, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """Records the state of its process as it finds it, then changes all of it."""
    import torch

    state = {
        "pid": os.getpid(),
        "leaked_env": os.environ.get(_LEAK),
        "cwd": os.getcwd(),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "sigint_worker": signal.getsignal(signal.SIGINT) is workers_module._on_interrupt,
        "torch_seed": torch.initial_seed(),
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "dtype": str(torch.get_default_dtype()),
        "leaked_filter": any(getattr(entry[1], "pattern", None) == _FILTER for entry in warnings.filters),
        "closed_handler": any(
            getattr(handler.stream, "closed", False) for handler in logging.getLogger(_FILTER).handlers
        ),
        "numpy_draw": float(np.random.random()),
        "python_draw": random.random(),
    }
    (run_dir / "state.json").write_text(json.dumps(state))
    os.environ[_LEAK] = "1"
    os.chdir(run_dir)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(5)
    torch.set_num_threads(3)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message=_FILTER)
    if not logging.getLogger(_FILTER).handlers:
        logging.getLogger(_FILTER).addHandler(logging.StreamHandler())  # onto the run's captured stderr
    return {"return_mean": float(run.seed), "train_steps": 4, "seed": run.seed}


def test_a_worker_serving_several_runs_gives_each_a_fresh_process_state(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    summary = run_sweep(
        spec,
        tmp_path,
        workers=1,
        runs_per_worker=10,
        run_fn=polluting_run,
        dataset_fn=placeholder_dataset,
        progress=False,
        group_seeds=False,
    )
    assert summary.ok and summary.done == 4
    states = [json.loads((run_dir_for(tmp_path, run) / "state.json").read_text()) for run in expand(spec)]
    assert len({state["pid"] for state in states}) == 1  # one worker served the dataset and all four runs
    np.random.seed(5)
    polluted_numpy = float(np.random.random())
    random.seed(5)
    polluted_python = random.random()
    for state in states:
        assert state["leaked_env"] is None and state["cwd"] == os.getcwd()
        assert state["sigterm_default"] and state["sigint_worker"]
        assert state["torch_seed"] != 123
        assert state["threads"] == max(1, workers_module._cpu_count())
        assert state["grad"] and state["dtype"] == "torch.float32" and not state["leaked_filter"]
        assert not state["closed_handler"]  # a handler left on a run's log writes to the worker's stderr
        assert state["numpy_draw"] != polluted_numpy and state["python_draw"] != polluted_python
    assert len({state["torch_seed"] for state in states}) == 4  # seeded from the OS, as a fresh process is
    assert sorted(load_results(tmp_path, spec).query("metric == 'return_mean'")["value"]) == [0, 0, 1, 1]


@pytest.mark.slow
@pytest.mark.parametrize(("per_worker", "processes"), [(1, 4), (2, 3)])
def test_a_worker_is_replaced_after_its_runs(tmp_path: Path, per_worker: int, processes: int) -> None:
    """Five jobs (the dataset, four runs), one at a time: a fresh process per job, or one per two jobs."""
    spec = parse_spec(SPEC)
    summary = run_sweep(
        spec,
        tmp_path,
        workers=1,
        runs_per_worker=per_worker,
        run_fn=polluting_run,
        dataset_fn=placeholder_dataset,
        progress=False,
        group_seeds=False,
    )
    assert summary.ok and summary.done == 4
    pids = [
        json.loads((run_dir_for(tmp_path, run) / "state.json").read_text())["pid"] for run in expand(spec)
    ]
    assert len(set(pids)) == processes


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_runs_per_worker_must_be_a_positive_integer(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match="runs_per_worker: must be an integer >= 1"):
        run_sweep(
            parse_spec(SPEC),
            tmp_path,
            workers=1,
            runs_per_worker=value,
            run_fn=polluting_run,
            dataset_fn=placeholder_dataset,
            progress=False,
        )
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_cli_passes_runs_per_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen: dict[str, Any] = {}

    def fake_sweep(spec, root, **kwargs):
        seen.update(kwargs)
        raise ConfigError("stop here")

    monkeypatch.setattr("marlkd.experiments.runner.run_sweep", fake_sweep)
    spec_file = tmp_path / "leaks.toml"
    spec_file.write_text(SPEC)
    assert main(["experiment", "run", str(spec_file), "--root", str(tmp_path), "--runs-per-worker", "3"]) != 0
    assert seen["runs_per_worker"] == 3
    seen.clear()
    main(["experiment", "run", str(spec_file), "--root", str(tmp_path)])
    assert "runs_per_worker" not in seen  # run_sweep's default
    capsys.readouterr()
    assert f"default {workers_module.DEFAULT_RUNS_PER_WORKER};" in _run_help()


def _run_help() -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main(["experiment", "run", "--help"])
    return " ".join(buffer.getvalue().split())


# ---------------------------------------------------------------------------------- JAX compile cache


class _FakeConfig:
    def __init__(self, directory: str | None = None) -> None:
        self.jax_compilation_cache_dir = directory
        self.updates: dict[str, Any] = {}

    def update(self, name: str, value: Any) -> None:
        self.updates[name] = value
        setattr(self, name, value)


class _FakeJax:
    def __init__(self, directory: str | None = None) -> None:
        self.config = _FakeConfig(directory)


def test_jax_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jax_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax_cache.cache_dir() == tmp_path / "xdg" / "marlkd" / "jax"
    monkeypatch.setenv(jax_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert jax_cache.cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "None"):
        monkeypatch.setenv(jax_cache.CACHE_ENV, off)
        assert jax_cache.cache_dir() is None


def test_the_jax_cache_is_enabled_for_every_compilation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv(jax_cache.CACHE_ENV, str(tmp_path / "cache"))
    jax = _FakeJax()
    assert jax_cache.enable_compilation_cache(jax) == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()
    assert jax.config.updates == {
        "jax_compilation_cache_dir": str(tmp_path / "cache"),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    user = _FakeJax(str(tmp_path / "users"))  # a cache the user gave JAX is left alone
    assert jax_cache.enable_compilation_cache(user) == tmp_path / "users" and not user.config.updates
    monkeypatch.setenv(jax_cache.CACHE_ENV, "off")
    assert jax_cache.enable_compilation_cache(_FakeJax()) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(jax_cache.CACHE_ENV, str(blocked / "cache"))  # cannot be made: no cache, no error
    unwritable = _FakeJax()
    assert jax_cache.enable_compilation_cache(unwritable) is None and not unwritable.config.updates


@pytest.mark.slow
def test_smax_turns_the_cache_on(tmp_path: Path) -> None:
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("jaxmarl") is None:  # not imported here: JAX in the test process forks badly
        pytest.skip("needs marlkd[smax]")
    code = "import jax, marlkd.envs.smax; print(jax.config.jax_compilation_cache_dir)"
    env = {**os.environ, jax_cache.CACHE_ENV: str(tmp_path / "jax")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "jax")
