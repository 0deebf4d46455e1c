"""Runs pinned to their inputs, safe checkpoints, checks before training, and one-line CLI errors.

Each test names the defect it guards against (docs/reliability.md lists each fault with its test)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import marlkd
from marlkd import checkpoint, filelock
from marlkd.algos.bc import BC
from marlkd.checkpoint import CheckpointError
from marlkd.cli import main
from marlkd.config import EvalConfig, TrainConfig
from marlkd.data import collect_random_dataset, load_dataset, write_dataset
from marlkd.errors import ConfigError, DatasetError
from marlkd.run_config import RunConfig
from marlkd.training import evaluate_run, load_policy

SRC = str(Path(marlkd.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    collect_random_dataset("grid-world", 6, directory / "gw.h5", seed=3)
    collect_random_dataset("grid-world", 6, directory / "gw-other.h5", seed=4)
    return directory


def bc_run(
    data: Path, out: Path, steps: int = 4, episodes: int = 2, batch_size: int = 8, **train
) -> RunConfig:
    return RunConfig(
        method="bc",
        data=str(data),
        out=str(out),
        train=TrainConfig(
            steps=steps, batch_size=batch_size, warmup_steps=1, log_every=1, checkpoint_every=2, **train
        ),
        eval=EvalConfig(episodes=episodes),
    )


class Payload:
    """Unpickling this runs ``touch <path>``: what a crafted checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def crafted_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"step": 1, "algo": Payload(marker)}, path)


def metrics_rows(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(row["step"], row["metric"]) for row in csv.DictReader(f)]


def interrupt_at(monkeypatch, step_to_fail: int) -> None:
    original = BC.update

    def dying(self, step):
        if step == step_to_fail:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(BC, "update", dying)


# ------------------------------------------------------------------------------------------ file locks


def _hold_lock_in_child(path: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from marlkd import filelock; "
        f"lock = filelock.try_lock({str(path)!r}, what='test'); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_lock_names_its_holder_and_is_taken_over_when_the_holder_dies(tmp_path):
    path = tmp_path / "x.lock"
    child = _hold_lock_in_child(path)
    try:
        assert filelock.try_lock(path) is None
        with pytest.raises(filelock.LockHeld, match=f"process {child.pid} on "):
            filelock.acquire(path, timeout=0.2, what="thing")
    finally:
        child.kill()
        child.wait()
    with filelock.locked(path, timeout=5) as lock:  # kill -9 released it
        assert lock.held and filelock.read_holder(path)["pid"] == os.getpid()


# ------------------------------------------------------------------------- training: issue items 2, 5-7


def test_two_processes_cannot_train_one_run_directory(data_dir, tmp_path):
    config = bc_run(data_dir / "gw.h5", tmp_path / "run")
    (tmp_path / "run").mkdir()
    child = _hold_lock_in_child(tmp_path / "run" / ".lock")
    try:
        with pytest.raises(filelock.LockHeld, match=f"run directory .* in use by process {child.pid}"):
            marlkd.train(config, progress=False)
    finally:
        child.kill()
        child.wait()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    marlkd.train(config, progress=False)  # free again


def test_resume_logs_each_step_once_and_removes_stale_temporaries(data_dir, tmp_path, monkeypatch):
    config = bc_run(data_dir / "gw.h5", tmp_path / "run", steps=6)
    interrupt_at(monkeypatch, 3)  # steps 1..3 logged, checkpoint at 2
    with pytest.raises(KeyboardInterrupt):
        marlkd.train(config, progress=False)
    monkeypatch.undo()
    stale = tmp_path / "run" / ".checkpoint.tmp999999999.pt"  # a writer killed mid-write (no such pid)
    stale.write_bytes(b"")
    marlkd.train(config, progress=False)
    counts = Counter(metrics_rows(tmp_path / "run"))
    assert counts and max(counts.values()) == 1, [key for key, n in counts.items() if n > 1]
    assert {int(step) for step, _ in counts} == {1, 2, 3, 4, 5, 6}
    assert not stale.exists()


def test_a_different_dataset_at_the_same_path_is_refused(data_dir, tmp_path, monkeypatch):
    data = tmp_path / "data.h5"
    data.write_bytes((data_dir / "gw.h5").read_bytes())
    config = bc_run(data, tmp_path / "run", steps=6)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        marlkd.train(config, progress=False)
    monkeypatch.undo()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == str(data.resolve())
    assert saved["data_checksum"] == load_dataset(data).metadata.checksum
    data.write_bytes((data_dir / "gw-other.h5").read_bytes())  # replaced between the kill and the resume
    with pytest.raises(DatasetError, match="not the dataset this run was made with"):
        marlkd.train(config, progress=False)
    data.write_bytes((data_dir / "gw.h5").read_bytes())
    marlkd.train(config, progress=False)
    data.write_bytes((data_dir / "gw-other.h5").read_bytes())
    with pytest.raises(DatasetError, match="not the dataset this run was made with"):
        evaluate_run(tmp_path / "run")


def test_changed_evaluation_settings_re_evaluate(data_dir, tmp_path):
    first = marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "run", episodes=2), progress=False)
    assert first["episodes"] == 2
    again = marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "run", episodes=3), progress=False)
    assert again["episodes"] == 3 and again["train_steps"] == first["train_steps"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["episodes"] == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["eval"]["episodes"] == 3


def test_a_finished_run_is_extended_by_more_steps(data_dir, tmp_path):
    marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "short", steps=4), progress=False)
    longer = marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "short", steps=6), progress=False)
    straight = marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "long", steps=6), progress=False)
    assert longer["train_steps"] == 6
    assert {int(s) for s, _ in metrics_rows(tmp_path / "short")} == {1, 2, 3, 4, 5, 6}
    a = checkpoint.load(tmp_path / "short" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "long" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key, value in b["algo"]["model"].items():
        assert torch.equal(a["algo"]["model"][key], value), key  # resumed at 4 = trained straight to 6
    assert longer["return_mean"] == pytest.approx(straight["return_mean"])


def test_results_record_target_and_revision_and_eval_works_from_anywhere(data_dir, tmp_path, monkeypatch):
    idt = RunConfig(
        method="idt",
        data=os.path.relpath(data_dir / "gw.h5"),
        out=str(tmp_path / "run"),
        algo={"context": 4, "width": 16, "layers": 1, "heads": 2},
        train=TrainConfig(steps=2, batch_size=4, warmup_steps=1),
        eval=EvalConfig(episodes=2),
    )
    results = marlkd.train(idt, progress=False)
    assert len(results["target_return"]) == 2 and "code_revision" in results
    monkeypatch.chdir("/")
    assert main(["eval", str(tmp_path / "run"), "--episodes", "2"]) == 0
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["episodes"] == 2 and written["target_return"] == results["target_return"]


# --------------------------------------------------------------------------- no code from files: item 8


def test_a_crafted_run_checkpoint_does_not_run(data_dir, tmp_path):
    marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "run"), progress=False)
    marker = tmp_path / "pwned"
    crafted_checkpoint(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_policy(tmp_path / "run")
    assert main(["eval", str(tmp_path / "run")]) == 2
    assert not marker.exists()


def test_a_crafted_expert_folder_does_not_run(tmp_path, capsys):
    expert = tmp_path / "expert"
    expert.mkdir()
    marker = tmp_path / "pwned"
    crafted_checkpoint(expert / "checkpoint.pt", marker)
    digest = hashlib.sha256((expert / "checkpoint.pt").read_bytes()).hexdigest()
    info = {
        "env_id": "grid-world",
        "env_kwargs": {"grid_size": 8, "n_agents": 2, "objects_per_agent": 3, "max_steps": 30, "window": 5},
        "checkpoint": "checkpoint.pt",
        "checkpoint_sha256": digest,  # the payload's own hash: proves nothing
        "deterministic": True,
        "expert_return": 1.0,
        "expert_return_sampled": 1.0,
        "expert_return_greedy": 1.0,
        "random_return": 0.0,
        "reference_episodes": 10,
        "reference_seed": 0,
        "ppo": {},
        "env_steps": 100,
        "wall_time_s": 1.0,
    }
    (expert / "expert.json").write_text(json.dumps(info))
    out = tmp_path / "data.h5"
    code = main(
        [
            "collect",
            "grid-world",
            "--quality",
            "good",
            "--episodes",
            "2",
            "--out",
            str(out),
            "--expert",
            str(expert),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and not out.exists()
    assert "refused to load this PPO checkpoint" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncate"])
def test_damaged_checkpoints_are_one_clear_error(data_dir, tmp_path, content, capsys):
    marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "run"), progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "truncate" else content)
    with pytest.raises(CheckpointError, match="not a readable run checkpoint"):
        load_policy(tmp_path / "run")
    assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marlkd: error:") and err.count("\n") == 1


def test_checkpoints_hold_only_plain_values(tmp_path):
    state = {"a": np.arange(3, dtype=np.uint32), "b": (np.float32(2.5), [torch.ones(2)]), "c": None}
    checkpoint.save(state, tmp_path / "c.pt")
    back = checkpoint.load(tmp_path / "c.pt")
    assert back["a"].dtype == np.uint32 and back["a"].tolist() == [0, 1, 2]
    assert back["b"][0] == 2.5 and torch.equal(back["b"][1][0], torch.ones(2))
    with pytest.raises(CheckpointError, match="not Payload"):
        checkpoint.save({"x": Payload(tmp_path / "p")}, tmp_path / "d.pt")


# ---------------------------------------------------------------- checks before training: items 9-11


def _relabelled(source: Path, target: Path, **metadata) -> Path:
    data = load_dataset(source)
    meta = {k: v for k, v in data.metadata.to_dict().items() if k not in ("checksum",)}
    meta.update(metadata)
    return write_dataset(target, data.arrays(), meta)


def test_unknown_environment_or_wrong_sizes_fail_before_training(data_dir, tmp_path, capsys):
    unknown = _relabelled(data_dir / "gw.h5", tmp_path / "unknown.h5", env_id="no-such-env")
    # said before training, which then runs with evaluation off (no failure after the last update)
    results = marlkd.train(bc_run(unknown, tmp_path / "a"), progress=False)
    assert "not registered: training with evaluation off" in capsys.readouterr().err
    assert "return_mean" not in results and (tmp_path / "a" / "checkpoint.pt").exists()
    assert main(["dataset", "validate", str(unknown)]) == 2
    assert "unknown environment 'no-such-env'" in capsys.readouterr().err

    data = load_dataset(data_dir / "gw.h5")
    arrays = data.arrays()
    arrays["obs"] = np.concatenate([arrays["obs"], np.zeros_like(arrays["obs"][..., :1])], axis=-1)
    meta = {k: v for k, v in data.metadata.to_dict().items() if k not in ("checksum", "obs_dim")}
    wider = write_dataset(tmp_path / "wider.h5", arrays, meta)
    with pytest.raises(DatasetError, match="attribute 'obs_dim': the dataset has"):
        marlkd.train(bc_run(wider, tmp_path / "c"), progress=False)
    assert not (tmp_path / "c" / "checkpoint.pt").exists()
    assert main(["dataset", "validate", str(wider)]) == 2
    assert "obs_dim" in capsys.readouterr().err


def _declared(tmp_path: Path, source: Path, name: str, shape: tuple[int, ...]) -> Path:
    """A copy of ``source`` whose array ``name`` is replaced by an unwritten one declared ``shape``."""
    target = tmp_path / f"declared-{name}.h5"
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as f:
        dtype = f[name].dtype
        del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), compression="gzip")
    return target


def test_declared_shapes_are_checked_before_arrays_are_read(data_dir, tmp_path):
    source = data_dir / "gw.h5"
    data = load_dataset(source)
    e, t, n, o = data.obs.shape
    huge = _declared(tmp_path, source, "obs", (10**9, t, n, o))
    assert huge.stat().st_size < 10**6
    with pytest.raises(
        DatasetError, match=r"field 'obs': shape .* has E = 1000000000, but attribute 'n_episodes'"
    ):
        load_dataset(huge)
    short = _declared(tmp_path, source, "obs", (e, t - 1, n, o))
    with pytest.raises(
        DatasetError, match=rf"field 'obs': .* T = {t - 1}, but the other fields have T = {t}"
    ):
        load_dataset(short)


def test_absurd_batch_or_context_is_refused_with_a_memory_estimate(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size.* needs about .* more than this machine"):
        marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "a", batch_size=10**10), progress=False)
    big_context = RunConfig(
        method="idt",
        data=str(data_dir / "gw.h5"),
        out=str(tmp_path / "b"),
        algo={"context": 100000},
        train=TrainConfig(steps=1),
    )
    with pytest.raises(ConfigError, match=r"context 100000 needs about"):
        marlkd.train(big_context, progress=False)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "inf"], "train.lr: must be finite"),
        (["--lr", "nan"], "train.lr: must be finite"),
        (["--out", ""], "out: must name a run directory"),
        (["--config", "/nonexistent/config.json"], "cannot read the config"),
        (["--config", "NOTJSON"], "not valid JSON"),
        (["--out", "FILE"], "is a file, not a run directory"),
    ],
)
def test_train_input_errors_are_one_line(data_dir, tmp_path, capsys, extra, message):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "NOTJSON").write_text("{nope")
    extra = [str(tmp_path / x) if x in ("FILE", "NOTJSON") else x for x in extra]
    args = ["train", "bc", "--data", str(data_dir / "gw.h5"), "--out", str(tmp_path / "run"), "--steps", "1"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_run_that_fails_its_checks_leaves_no_directory(data_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing.h5")
    out = tmp_path / "new" / "run"
    assert main(["train", "bc", "--data", missing, "--out", str(out), "--steps", "1"]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the run directory and the folder made for it are gone
    kept = tmp_path / "kept"
    kept.mkdir()  # an existing folder is kept as it was
    (kept / "notes.txt").write_text("mine")
    assert main(["train", "bc", "--data", missing, "--out", str(kept), "--steps", "1"]) == 2
    assert (kept / "notes.txt").read_text() == "mine" and not (kept / "config.json").exists()


def test_eval_needs_episodes(data_dir, tmp_path, capsys):
    marlkd.train(bc_run(data_dir / "gw.h5", tmp_path / "run"), progress=False)
    assert main(["eval", str(tmp_path / "run"), "--episodes", "0"]) == 2
    assert "eval.episodes: must be >= 1" in capsys.readouterr().err


def test_unwritable_out_is_one_line(data_dir, capsys):
    # /proc refuses new folders, even to root
    code = main(["train", "bc", "--data", str(data_dir / "gw.h5"), "--out", "/proc/marlkd-run"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot create /proc/marlkd-run" in err and err.count("\n") == 1


def test_collect_refuses_to_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "d.h5"
    out.write_bytes((data_dir / "gw.h5").read_bytes())
    before = out.read_bytes()
    args = ["collect", "grid-world", "--quality", "random", "--episodes", "2", "--out", str(out)]
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert (
        main(["collect", "grid-world", "--quality", "random", "--episodes", "2", "--out", str(tmp_path)]) == 2
    )
    assert "is a directory" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert load_dataset(out).n_episodes == 2


def test_internal_errors_print_one_line_and_keep_the_traceback(data_dir, monkeypatch, capsys):
    import marlkd.cli.dataset as dataset_cli

    def broken(dataset):
        raise TypeError("something internal")

    monkeypatch.setattr(dataset_cli, "summarize", broken)
    monkeypatch.delenv("MARLKD_TRACEBACK", raising=False)
    assert main(["dataset", "info", str(data_dir / "gw.h5")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: TypeError: something internal" in err
    path = Path(err.split("full traceback in ")[1].rstrip(")\n"))
    assert "Traceback" in path.read_text() and "something internal" in path.read_text()
    path.unlink()


def test_python_dash_m_and_a_closed_pipe(data_dir):
    env = {**os.environ, "PYTHONPATH": SRC}
    shown = subprocess.run(
        [sys.executable, "-m", "marlkd", "--help"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and "usage: marlkd" in shown.stdout
    reader = f"{sys.executable} -m marlkd dataset info --json {data_dir / 'gw.h5'} | true"
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", reader], capture_output=True, text=True, env=env)
    assert piped.stderr == ""
