"""Fault injection: drivers and training runs killed with ``kill -9`` at random points, two drivers at
once, truncated results tables and checkpoints, a crafted pickle. The tests that start processes and
kill them are marked ``slow`` (CI runs them; each takes well under 30 s)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import marlkd
from fault_helpers import SPEC, crashing_run, quick_dataset, spec, stepping_run
from marlkd import checkpoint
from marlkd.checkpoint import CheckpointError
from marlkd.cli import main
from marlkd.errors import MarlkdError
from marlkd.experiments.results import load_results, marker_rows, results_path
from marlkd.experiments.runner import finished_marker, run_dir_for, run_sweep
from marlkd.experiments.spec import expand

TESTS = Path(__file__).resolve().parent
SRC = str(Path(marlkd.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(TESTS)]), "OMP_NUM_THREADS": "1"}


def _rows_per_run(root: Path) -> Counter:
    with open(results_path(root, "faults"), newline="") as f:
        return Counter(row["run_id"] for row in csv.DictReader(f))


def _expected_rows(root: Path) -> dict[str, int]:
    return {run.run_id: len(marker_rows(run, finished_marker(root, run))) for run in expand(spec())}


def _assert_complete(root: Path) -> None:
    """Every run done, its rows in the table exactly once, and every step trained exactly once."""
    assert _rows_per_run(root) == Counter(_expected_rows(root))
    for run in expand(spec()):
        lines = (run_dir_for(root, run) / "steps.txt").read_text().splitlines()
        assert [int(line.split()[0]) for line in lines] == list(range(1, 13)), run.run_id
    assert len(load_results(root, spec())) == sum(_expected_rows(root).values())


def _sweep(root: Path, workers: int = 0):
    return run_sweep(
        spec(), root, workers=workers, run_fn=stepping_run, dataset_fn=quick_dataset, progress=False
    )


def _driver(root: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TESTS / "fault_helpers.py"), str(root), str(workers)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------------- results table


def test_two_drivers_at_once_write_each_row_once(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(_sweep(tmp_path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(summary.ok for summary in results)
    assert sum(summary.done for summary in results) == len(expand(spec()))
    _assert_complete(tmp_path)


def test_a_table_cut_at_a_line_end_is_completed_by_the_next_launch(tmp_path, capsys):
    _sweep(tmp_path)
    table = results_path(tmp_path, "faults")
    lines = table.read_bytes().splitlines(keepends=True)
    table.write_bytes(b"".join(lines[: len(lines) // 2]))  # whole lines lost: a run's rows partly gone
    spec_file = tmp_path / "faults.toml"
    spec_file.write_text(SPEC)
    assert main(["experiment", "report", str(spec_file), "--root", str(tmp_path)]) == 2
    assert "lacks the rows of" in capsys.readouterr().err
    summary = _sweep(tmp_path)
    assert summary.ok and summary.done == 0
    _assert_complete(tmp_path)


def test_a_table_cut_mid_line_is_reported_then_repaired(tmp_path):
    _sweep(tmp_path)
    table = results_path(tmp_path, "faults")
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2 + 7])  # a crash in the middle of a line
    with pytest.raises(MarlkdError, match=r"results.csv: line \d+ is cut short .*marlkd experiment run"):
        load_results(tmp_path, spec())
    summary = _sweep(tmp_path)
    assert summary.ok
    _assert_complete(tmp_path)


def test_a_row_with_the_wrong_number_of_cells_is_reported(tmp_path):
    _sweep(tmp_path)
    table = results_path(tmp_path, "faults")
    with open(table, "a") as f:
        f.write("faults,some-run,1,2\n")
    with pytest.raises(MarlkdError, match="has 4 cells where the header has"):
        load_results(tmp_path, spec())


# ---------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from marlkd.config import EvalConfig, TrainConfig
    from marlkd.data import collect_random_dataset
    from marlkd.run_config import RunConfig

    directory = tmp_path_factory.mktemp("run")
    data = collect_random_dataset("grid-world", 4, directory / "gw.h5", seed=0)
    config = RunConfig(
        method="bc",
        data=str(data),
        out=str(directory / "run"),
        train=TrainConfig(steps=2, batch_size=4, warmup_steps=1),
        eval=EvalConfig(episodes=0),
    )
    marlkd.train(config, progress=False)
    return directory / "run"


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoints_are_one_clear_error(trained_run, tmp_path, keep):
    data = (trained_run / "checkpoint.pt").read_bytes()
    cut = tmp_path / "checkpoint.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="not a readable"):
        checkpoint.load(cut)


def test_a_crafted_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for payload in ({"algo": Payload()}, Payload(), [torch.ones(1), Payload()]):
        torch.save(payload, tmp_path / "evil.pt")
        with pytest.raises(CheckpointError, match="refused to load"):
            checkpoint.load(tmp_path / "evil.pt")
    assert not marker.exists()


# ---------------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_a_driver_killed_at_random_points_leaves_no_orphan_and_no_duplicate(tmp_path):
    rng = random.Random(18)
    for _ in range(2):
        driver = _driver(tmp_path, workers=2)
        time.sleep(rng.uniform(1.0, 3.0))  # spawned workers take about a second to start
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        pids = {
            int(line) for path in (tmp_path / "runs").rglob("pids.txt") for line in path.read_text().split()
        }
        deadline = time.monotonic() + 5.0
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)], "workers outlived their driver"
    final = _driver(tmp_path, workers=2)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    _assert_complete(tmp_path)


@pytest.mark.slow
def test_a_worker_killed_while_serving_several_runs_is_replaced_and_no_run_is_lost(tmp_path):
    summary = run_sweep(
        spec(),
        tmp_path,
        workers=2,
        runs_per_worker=16,
        run_fn=crashing_run,
        dataset_fn=quick_dataset,
        progress=False,
        group_seeds=False,
    )
    assert summary.ok and summary.done == 6
    _assert_complete(tmp_path)  # the killed run resumed after its step 5; the others lost nothing
    runs_of: Counter = Counter()
    for path in (tmp_path / "runs").rglob("pids.txt"):
        for pid in set(path.read_text().split()):
            runs_of[pid] += 1
    assert max(runs_of.values()) >= 2  # a worker served several runs
    killed = next(run for run in expand(spec()) if run.method == "idt" and run.seed == 1)
    killed_dir = run_dir_for(tmp_path, killed)
    killer = (killed_dir / "killed").read_text().strip()
    lines = (killed_dir / "steps.txt").read_text().splitlines()
    assert {line.split()[1] for line in lines[:5]} == {killer} and killer not in lines[5]
    assert not _alive(int(killer))


@pytest.mark.slow
def test_two_driver_processes_at_once(tmp_path):
    drivers = [_driver(tmp_path, workers=1) for _ in range(2)]
    for driver in drivers:
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 0, err
    _assert_complete(tmp_path)


@pytest.mark.slow
def test_training_killed_at_random_points_resumes_to_the_same_weights(tmp_path):
    from marlkd.config import EvalConfig, TrainConfig
    from marlkd.data import collect_random_dataset
    from marlkd.run_config import RunConfig

    data = collect_random_dataset("grid-world", 6, tmp_path / "gw.h5", seed=1)
    args = ["--data", str(data), "--steps", "80", "--batch-size", "8", "--checkpoint-every", "10"]
    args += ["--log-every", "1", "--eval-episodes", "0", "--quiet", "--warmup-steps", "1"]
    train = TrainConfig(steps=80, batch_size=8, checkpoint_every=10, log_every=1, warmup_steps=1)

    def config(out: Path) -> RunConfig:  # what the command line above makes
        return RunConfig(method="bc", data=str(data), out=str(out), train=train, eval=EvalConfig(episodes=0))

    marlkd.train(config(tmp_path / "straight"), progress=False)
    rng = random.Random(7)
    for _ in range(2):
        command = [sys.executable, "-m", "marlkd", "train", "bc", "--out", str(tmp_path / "killed"), *args]
        killed = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = tmp_path / "killed" / "metrics.csv"
        before = metrics.stat().st_mtime_ns if metrics.exists() else 0
        deadline = time.monotonic() + 60
        while killed.poll() is None and time.monotonic() < deadline:  # until training has begun
            if metrics.exists() and metrics.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # then a random point of it
        killed.kill()
        killed.wait()
    marlkd.train(config(tmp_path / "killed"), progress=False)
    a = checkpoint.load(tmp_path / "straight" / "checkpoint.pt")["algo"]["model"]
    b = checkpoint.load(tmp_path / "killed" / "checkpoint.pt")["algo"]["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    with open(tmp_path / "killed" / "metrics.csv", newline="") as f:
        rows = Counter((row["step"], row["metric"]) for row in csv.DictReader(f))
    assert max(rows.values()) == 1 and {int(step) for step, _ in rows} == set(range(1, 81))
    assert not list((tmp_path / "killed").glob(".*.tmp*"))
