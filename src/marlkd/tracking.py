"""Optional Weights & Biases logging, beside metrics.csv and TensorBoard.

Turned on by ``marlkd train --wandb`` (or ``experiment run --wandb``), by ``train(..., wandb=True)``, or by
the environment variable ``MARLKD_WANDB=1`` (which sweep workers inherit). Needs the ``wandb`` package
(``pip install 'marlkd[wandb]'``). W&B's own environment variables apply as usual: ``WANDB_MODE``
(``offline`` writes the run under the run directory for a later ``wandb sync``; ``disabled`` logs nothing),
``WANDB_PROJECT`` (default ``marlkd``), ``WANDB_ENTITY``, ``WANDB_API_KEY``.

One marlkd run directory is one W&B run: its id is kept in ``<run dir>/wandb_id`` so that a resumed run
continues the same W&B run. Metrics are logged against the update count (``update``), the same step
metrics.csv records; the final results go to the run's summary.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marlkd.errors import ConfigError

ENV_FLAG = "MARLKD_WANDB"
ID_FILE = "wandb_id"
DEFAULT_PROJECT = "marlkd"


def wanted(flag: bool | None = None) -> bool:
    """Whether to log to W&B: ``flag`` if given, else the environment variable ``MARLKD_WANDB``."""
    if flag is not None:
        return flag
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(
            "W&B logging (--wandb or MARLKD_WANDB=1) needs the wandb package: pip install 'marlkd[wandb]'"
        ) from exc
    return wandb


def check_available() -> None:
    """Raise :class:`ConfigError` now (before any training) if the ``wandb`` package is missing."""
    _import_wandb()


class WandbLogger:
    """One W&B run for one marlkd run directory (resumed with it)."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], name: str | None = None) -> None:
        wandb = _import_wandb()
        id_path = run_dir / ID_FILE
        if id_path.is_file():
            run_id = id_path.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            id_path.write_text(run_id + "\n")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
            dir=str(run_dir),
            id=run_id,
            name=name or run_dir.name,
            config=dict(config),
            resume="allow",
            reinit="create_new",
        )
        self.run.define_metric("update")
        self.run.define_metric("*", step_metric="update")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({"update": step, **metrics})

    def summary(self, results: Mapping[str, Any]) -> None:
        """Scalars of the final results (return, training time, ...) into the run's summary."""
        for key, value in results.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                self.run.summary[key] = value

    def close(self) -> None:
        self.run.finish()
