"""Exact values of the report's statistics on hand-built score matrices (runs x tasks, as rliable's own
tests build them): every expected number below is worked out by hand in the comment beside it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marlkd.experiments.stats import cell_stats, iqm, kendall_tau, ranks, stratified_bootstrap_ci

# 4 runs x 3 tasks
SCORES = np.array(
    [
        [1.0, 10.0, 0.0],
        [2.0, 20.0, 4.0],
        [3.0, 30.0, 8.0],
        [4.0, 40.0, 100.0],
    ]
)


def test_iqm_of_each_task_column() -> None:
    # 4 runs: int(0.25 * 4) = 1 cut from each end, the mean of the middle two
    assert iqm(SCORES, axis=0).tolist() == [2.5, 25.0, 6.0]
    # per run across tasks: 3 values, nothing cut, the plain mean
    assert iqm(SCORES, axis=1).tolist() == [11.0 / 3, 26.0 / 3, 41.0 / 3, 144.0 / 3]


def test_iqm_over_all_runs_of_all_tasks() -> None:
    # 12 scores sorted: 0 1 2 3 4 4 8 10 20 30 40 100; cut 3 from each end -> 3 4 4 8 10 20, mean 49/6
    assert iqm(SCORES.ravel()) == pytest.approx(49 / 6, abs=0, rel=1e-15)
    with pytest.raises(ValueError, match="no values"):
        iqm([])


def test_interval_is_the_percentile_of_the_statistic_over_resamples() -> None:
    # a statistic that ignores the data and numbers the resamples 0..100: the 50% interval is exactly
    # their 25th and 75th percentiles; the statistic sees (reps, all runs of all tasks)
    shapes = []

    def numbered(resampled: np.ndarray) -> np.ndarray:
        shapes.append(resampled.shape)
        return np.arange(resampled.shape[0], dtype=float)

    tasks = [SCORES[:, 0], SCORES[:3, 1]]
    assert stratified_bootstrap_ci(tasks, numbered, reps=101, confidence=0.5) == (25.0, 75.0)
    assert shapes == [(101, 7)]


def test_bootstrap_resamples_within_each_task() -> None:
    # one run per task: every stratified resample is the tasks' own values, so the mean is always
    # (1 + 5) / 2 = 3 and the interval is a point; resampling across tasks would spread it over [1, 5]
    low, high = stratified_bootstrap_ci([[1.0], [5.0]], lambda m: m.mean(axis=-1), reps=200)
    assert (low, high) == (3.0, 3.0)
    # a constant task gives a constant IQM
    assert stratified_bootstrap_ci([np.full(4, 7.0), np.full(2, 7.0)], reps=50) == (7.0, 7.0)
    # tasks with no runs are skipped; no runs at all is an error
    assert stratified_bootstrap_ci([[], [2.0]], reps=10) == (2.0, 2.0)
    with pytest.raises(ValueError, match="no scores"):
        stratified_bootstrap_ci([[], []])


def test_bootstrap_interval_lies_within_the_scores_and_is_seeded() -> None:
    tasks = [SCORES[:, j] for j in range(3)]
    low, high = stratified_bootstrap_ci(tasks, reps=300, seed=1)
    assert 0.0 <= low <= iqm(SCORES.ravel()) <= high <= 100.0
    assert stratified_bootstrap_ci(tasks, reps=300, seed=1) == (low, high)


def test_cell_stats_by_hand() -> None:
    stats = cell_stats([4.0, float("nan"), 1.0, 3.0, 2.0], reps=20)  # NaN dropped: 1 2 3 4
    assert (stats.mean, stats.n, stats.iqm) == (2.5, 4, 2.5)
    assert stats.std == pytest.approx(math.sqrt(5 / 3), rel=1e-15)  # squares 2.25+0.25+0.25+2.25 over 3
    single = cell_stats([6.0])
    assert (single.mean, single.std, single.n, single.iqm, single.ci_low, single.ci_high) == (
        6.0,
        0.0,
        1,
        6.0,
        6.0,
        6.0,
    )
    empty = cell_stats([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.ci_high)


def test_kendall_tau_and_ranks_by_hand() -> None:
    # 4 items, 6 pairs: (1,2)(1,3)(1,4)(2,3)(2,4) concordant, (3,4) discordant: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(4 / 6, rel=1e-15)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    # tau-b = (C - D) / sqrt((C + D + Tx)(C + D + Ty)); x = 1 1 2, y = 1 2 3: pair (1,2) is tied in x
    # only (Tx = 1), (1,3) and (2,3) are concordant (C = 2): 2 / sqrt(3 * 2)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6), rel=1e-15)
    assert math.isnan(kendall_tau([1], [2])) and math.isnan(kendall_tau([1, 1], [1, 2]))
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1, 2], [1])
    assert ranks([3.0, 5.0, 3.0, 1.0]) == [2, 1, 2, 4]  # competition ranks, ties share the better one


def test_probability_of_improvement_counts_ties_half() -> None:
    from marlkd.experiments.stats import improvement_stat, probability_of_improvement

    # pairs (1,2) loss, (2,2) tie, (3,2) win: (0 + 0.5 + 1) / 3
    assert probability_of_improvement([1.0, 2.0, 3.0], [2.0]) == 0.5
    assert probability_of_improvement([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert probability_of_improvement([1.0], [1.0]) == 0.5
    # 2 x 2 pairs: 5>4 win, 5>6 loss, 1>4 loss, 1>6 loss -> 1/4
    assert probability_of_improvement([5.0, 1.0], [4.0, 6.0]) == 0.25
    resampled = improvement_stat(np.array([[5.0, 1.0], [3.0, 3.0]]), np.array([[4.0, 6.0], [3.0, 2.0]]))
    assert resampled.tolist() == [0.25, 0.75]  # second row: ties 3=3 twice, wins 3>2 twice -> (1 + 2) / 4
    with pytest.raises(ValueError, match="both sides"):
        probability_of_improvement([], [1.0])


def test_two_sample_interval_of_constant_samples_is_a_point() -> None:
    from marlkd.experiments.stats import mean_difference_stat, two_sample_bootstrap_ci

    assert two_sample_bootstrap_ci([3.0] * 4, [1.0] * 5, mean_difference_stat) == (2.0, 2.0)
    low, high = two_sample_bootstrap_ci([0.0, 1.0, 2.0, 3.0], [0.0] * 3, mean_difference_stat, seed=1)
    assert 0.0 <= low < 1.5 < high <= 3.0  # the difference of means (1.5) lies inside
