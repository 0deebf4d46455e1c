"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, from this folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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
