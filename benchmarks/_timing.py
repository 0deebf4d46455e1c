"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, from this folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(step: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``step``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
