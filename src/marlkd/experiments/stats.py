"""Robust statistics of run scores, as rliable computes them: the interquartile mean, percentile
confidence intervals by a stratified bootstrap, per-cell summaries, and Kendall's tau for rankings.
Pure functions of NumPy arrays (no results table, no files)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def iqm(values: Any, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the values left after cutting ``int(0.25 n)`` from each end of
    the sorted values along ``axis`` (``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM)."""
    array = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = array.shape[axis]
    if n == 0:
        raise ValueError("the IQM of no values is undefined")
    cut = int(0.25 * n)
    return np.take(array, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(
    tasks: Sequence[Any],
    statistic: Callable[[np.ndarray], np.ndarray] = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` over all runs of all tasks, by a bootstrap that
    resamples runs with replacement within each task (rliable's ``StratifiedBootstrap``).

    Args:
        tasks: one 1-D array of run scores per task (the runs of a task may differ in number).
        statistic: maps ``(reps, runs)`` to ``(reps,)`` along the last axis; default :func:`iqm`.
        reps: bootstrap resamples.
        confidence: the interval's coverage.
        seed: seeds the resampling (the same inputs give the same interval).
    """
    arrays = [np.asarray(task, dtype=float).ravel() for task in tasks]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        raise ValueError("no scores to bootstrap")
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays], axis=1)
    stats = statistic(resampled)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _rliable_ci(
    tasks: Sequence[np.ndarray], reps: int, confidence: float, seed: int
) -> tuple[float, float] | None:
    """The same interval computed by the ``rliable`` package, when it is installed and the tasks have
    equal numbers of runs (its score matrices are runs x tasks)."""
    if len({len(t) for t in tasks}) != 1:
        return None
    try:
        from rliable import library as rly
        from rliable import metrics as rly_metrics
    except ImportError:
        return None
    scores = np.stack([np.asarray(t, dtype=float) for t in tasks], axis=1)  # (runs, tasks)
    saved = np.random.get_state()
    np.random.seed(seed)  # rliable resamples with NumPy's global generator
    try:
        _, intervals = rly.get_interval_estimates(
            {"x": scores},
            lambda s: np.array([rly_metrics.aggregate_iqm(s)]),
            reps=reps,
            confidence_interval_size=confidence,
        )
    finally:
        np.random.set_state(saved)
    return float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


@dataclass(frozen=True)
class CellStats:
    """Summary of one table cell's runs: mean, sample std (ddof 1; 0 for one run), count, IQM and its
    bootstrap confidence interval."""

    mean: float
    std: float
    n: int
    iqm: float
    ci_low: float
    ci_high: float


def cell_stats(
    values: Any, *, reps: int = 2000, confidence: float = 0.95, seed: int = 0, use_rliable: bool = False
) -> CellStats:
    """:class:`CellStats` of one cell's run values (NaNs dropped)."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return CellStats(math.nan, math.nan, 0, math.nan, math.nan, math.nan)
    interval = _rliable_ci([array], reps, confidence, seed) if use_rliable else None
    if interval is None:
        interval = stratified_bootstrap_ci([array], reps=reps, confidence=confidence, seed=seed)
    std = float(array.std(ddof=1)) if n > 1 else 0.0
    return CellStats(float(array.mean()), std, n, float(iqm(array)), *interval)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of paired values (as ``scipy.stats.kendalltau`` computes it): (concordant -
    discordant pairs) / sqrt((pairs not tied in x) (pairs not tied in y)); NaN for fewer than two pairs or
    when one side is all ties."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs paired values, got {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    untied = (concordant + discordant + tied_x) * (concordant + discordant + tied_y)
    return (concordant - discordant) / math.sqrt(untied) if untied else math.nan


def ranks(values: Sequence[float]) -> list[int]:
    """Competition ranks, 1 for the highest value (equal values share the better rank)."""
    return [1 + sum(other > value for other in values) for value in values]


def probability_of_improvement(x: Any, y: Any) -> float:
    """P(X > Y) for a run X drawn from ``x`` and a run Y from ``y``, ties counted half (rliable's
    probability of improvement on one task: the Mann-Whitney U statistic over ``len(x) * len(y)``)."""
    a = np.asarray(x, dtype=float).ravel()[:, None]
    b = np.asarray(y, dtype=float).ravel()[None, :]
    if a.size == 0 or b.size == 0:
        raise ValueError("the probability of improvement needs runs on both sides")
    return float(((a > b) + 0.5 * (a == b)).mean())


def two_sample_bootstrap_ci(
    x: Any,
    y: Any,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(x_resampled (reps, n), y_resampled (reps, m)) -> (reps,)``, the
    runs of ``x`` and of ``y`` resampled with replacement independently (two strata, as rliable does for
    the probability of improvement)."""
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("a two-sample bootstrap needs runs on both sides")
    rng = np.random.default_rng(seed)
    stats = statistic(a[rng.integers(0, a.size, (reps, a.size))], b[rng.integers(0, b.size, (reps, b.size))])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def improvement_stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`probability_of_improvement` of each resample: ``(reps, n)``, ``(reps, m)`` -> ``(reps,)``."""
    wins = x[:, :, None] > y[:, None, :]
    ties = x[:, :, None] == y[:, None, :]
    return (wins + 0.5 * ties).mean(axis=(1, 2))


def mean_difference_stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Difference of means of each resample: ``(reps, n)``, ``(reps, m)`` -> ``(reps,)``."""
    return x.mean(axis=1) - y.mean(axis=1)
