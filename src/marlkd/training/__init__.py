"""The one training loop behind every method: build, update, log, checkpoint, resume, evaluate.

A run directory holds ``config.json`` (with the dataset's absolute path and checksum), ``metrics.csv``
(tidy: step, wall_time_s, metric, value), TensorBoard events under ``tb/``, ``checkpoint.pt`` (written
atomically, read without running code: :mod:`marlkd.checkpoint`) and, once finished, ``results.json``
(with the target return used and the code revision). Giving the same command again resumes a killed run
from its last checkpoint (metrics logged after that checkpoint are dropped, so no step appears twice),
returns a finished run's results without redoing it, re-evaluates it when only evaluation settings
changed, and extends it when ``train.steps`` grew. A lock (``.lock``) keeps two processes from training
one run directory at once; ``marlkd eval RUN`` writes ``eval.json``.

The package: :mod:`~marlkd.training.loop` (the loop, and a trained run loaded back),
:mod:`~marlkd.training.run_dir` (the run directory's files, the checkpoint's content, how a config given
again relates to the run there), :mod:`~marlkd.training.device` (the device and the memory check); every
name is importable from ``marlkd.training``.
"""

from marlkd.training.device import check_memory, estimate_memory, resolve_device
from marlkd.training.loop import (
    build_algorithm,
    data_metrics,
    evaluate_run,
    load_policy,
    load_run,
    load_training_dataset,
    run_evaluation,
    seed_everything,
    train,
)
from marlkd.training.run_dir import CHECKPOINT, CONFIG, EVAL, LOCK_FILE, RESULTS, read_run_config

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "EVAL",
    "LOCK_FILE",
    "RESULTS",
    "build_algorithm",
    "check_memory",
    "data_metrics",
    "estimate_memory",
    "evaluate_run",
    "load_policy",
    "load_run",
    "load_training_dataset",
    "read_run_config",
    "resolve_device",
    "run_evaluation",
    "seed_everything",
    "train",
]
