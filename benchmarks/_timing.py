"""Timing and the training update shared by the benchmark scripts (run as ``python benchmarks/<script>.py``,
from this folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def median_time(
    step: Callable[[], object], repeats: int, warmup: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median time in seconds of ``repeats`` calls of ``step``, after ``warmup`` untimed calls. ``clock``:
    wall time by default; ``time.process_time`` counts this process's CPU time only (on a machine shared
    with other work, the time the step itself costs)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = clock()
        step()
        times.append(clock() - t0)
    return statistics.median(times)


def cpu_autocast(dtype: torch.dtype | None) -> torch.autocast:
    """CPU autocast to ``dtype`` (bf16), or a context that changes nothing when ``dtype`` is None."""
    return torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)


def action_loss_update(logits: torch.Tensor, actions: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """One update on the cross-entropy of action ``logits (..., A)`` (in fp32) against ``actions (...)``."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), actions.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
