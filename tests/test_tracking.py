"""Optional W&B logging: a run logs its metrics against the update count in offline mode, a resumed run
continues the same W&B run, and a missing package is one clear error before anything is written."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest

from marlkd import tracking
from marlkd.config import EvalConfig, TrainConfig
from marlkd.errors import ConfigError
from marlkd.run_config import RunConfig
from marlkd.training import train


def _config(data: Path, out: Path, steps: int) -> RunConfig:
    return RunConfig(
        method="bc",
        data=str(data),
        out=str(out),
        train=TrainConfig(steps=steps, batch_size=4, log_every=1, checkpoint_every=2, warmup_steps=0),
        eval=EvalConfig(episodes=0),
    )


def test_flag_and_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracking.ENV_FLAG, raising=False)
    assert not tracking.wanted() and tracking.wanted(True)
    monkeypatch.setenv(tracking.ENV_FLAG, "1")
    assert tracking.wanted() and not tracking.wanted(False)


def test_missing_wandb_fails_before_training(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_wandb(name: str, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"needs the wandb package: pip install 'marlkd\[wandb\]'"):
        train(_config(tiny_dataset, tmp_path / "run", 2), progress=False, wandb=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_offline_run_logs_metrics_and_resumes_the_same_run(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv(tracking.ENV_FLAG, "1")  # the way sweep workers are told
    run = tmp_path / "run"
    train(_config(tiny_dataset, run, 3), progress=False)
    run_id = (run / tracking.ID_FILE).read_text().strip()
    # a resumed run directory continues the same W&B run
    again = tracking.WandbLogger(run, {"method": "bc"})
    assert again.run.id == run_id
    again.close()
    wandb.teardown()  # the W&B service writes its files after finish(); wait for it
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 2  # the run and its continuation, under one id
    record = next(offline[0].glob("*.wandb")).read_bytes()
    assert b"loss/action" in record and b"update" in record
