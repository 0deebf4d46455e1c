"""A run's ``metrics.csv``: tidy rows of ``step, wall_time_s, metric, value``, one per metric and logged
step, written the same way by the training loop of every offline method, by seeds trained as members and
by online PPO (which :mod:`marlkd.training` and :mod:`marlkd.ppo` both use, so it depends on neither)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from marlkd import atomic

METRICS = "metrics.csv"
HEADER = ["step", "wall_time_s", "metric", "value"]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.csv rows after ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] if rows else [HEADER]
    for row in rows[1:]:
        if len(row) == 4 and row[0].isdigit() and int(row[0]) <= step:
            keep.append(row)
    if len(keep) == len(rows):
        return
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)


class MetricsLog:
    """Appends tidy metric rows to metrics.csv and scalars to TensorBoard (and to W&B when given a
    :class:`marlkd.tracking.WandbLogger`, which its owner finishes).

    ``resume_step``: the step the run restarts from; rows logged after it (by the interrupted attempt) are
    dropped from metrics.csv and TensorBoard, so every step appears once (0: a fresh start, earlier rows
    dropped). ``tensorboard=False`` writes metrics.csv alone."""

    def __init__(
        self, run_dir: Path, resume_step: int = 0, wandb: Any = None, tensorboard: bool = True
    ) -> None:
        self.wandb = wandb
        self.path = run_dir / METRICS
        _truncate_metrics(self.path, resume_step)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(HEADER)
        self.tb = None
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # tensorboard is a dependency; tolerate its absence in stripped installs
            pass

    def log(self, step: int, wall_time: float, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.writerow([step, f"{wall_time:.3f}", key, f"{value:.6g}"])
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(step, metrics)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
