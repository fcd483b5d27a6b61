"""Bootstrap intervals of latency ratios (reports/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.reports import stats


def test_exact_quantile_bootstrap_matches_plain_resampling():
    x = np.random.default_rng(1).lognormal(0, 0.3, 301)
    fast = stats.quantile_replicates(x, 0.9, n_resamples=20000, seed=3)
    rng = np.random.default_rng(4)
    k = stats.order_rank(x.size, 0.9)
    slow = np.sort(x[rng.integers(0, x.size, size=(20000, x.size))], axis=1)[:, k - 1]
    # the same distribution: mean, spread and the interval's ends agree to within Monte-Carlo error
    assert fast.mean() == pytest.approx(slow.mean(), rel=0.01)
    assert fast.std() == pytest.approx(slow.std(), rel=0.08)
    assert np.quantile(fast, [0.025, 0.975]) == pytest.approx(np.quantile(slow, [0.025, 0.975]), rel=0.02)
    assert set(np.unique(fast)) <= set(x)  # replicates are order statistics of the sample


def test_replicates_are_deterministic_per_key_and_statistic():
    x = np.arange(1, 500, dtype=float)
    a = stats.replicates(x, "median", "cell-a")
    assert np.array_equal(a, stats.replicates(x, "median", "cell-a"))
    assert not np.array_equal(a, stats.replicates(x, "median", "cell-b"))
    m = stats.replicates(x, "mean", "cell-a")
    assert np.array_equal(m, stats.replicates(x, "mean", "cell-a")) and m.size == stats.MEAN_RESAMPLES
    assert m.mean() == pytest.approx(x.mean(), rel=0.01)


@pytest.mark.parametrize("statistic", ["median", "p90", "mean"])
def test_identical_distributions_tie(statistic):
    x = np.random.default_rng(0).lognormal(np.log(2.0), 0.05, 800)
    ci = stats.compare(x, x.copy(), statistic, "a", "b")
    assert ci.ratio == pytest.approx(1.0)
    assert ci.includes_one and not ci.separated


@pytest.mark.parametrize("statistic", ["median", "p90", "mean"])
def test_same_distribution_different_draws_tie(statistic):
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(np.log(2.0), 0.05, 800), rng.lognormal(np.log(2.0), 0.05, 800)
    assert stats.compare(a, b, statistic, "a", "b").includes_one


@pytest.mark.parametrize("statistic", ["median", "p90", "mean"])
def test_clearly_separated_distributions_win_with_the_right_ratio(statistic):
    rng = np.random.default_rng(6)
    fast, slow = rng.lognormal(np.log(1.0), 0.03, 600), rng.lognormal(np.log(2.0), 0.03, 600)
    ci = stats.compare(fast, slow, statistic, "fast", "slow")
    assert ci.ratio == pytest.approx(2.0, rel=0.03)
    assert ci.separated and 1.9 < ci.low <= ci.ratio <= ci.high < 2.1
    # and the other way round the best would be the slower one: the interval lies below 1
    rev = stats.compare(slow, fast, statistic, "slow", "fast")
    assert rev.high < 1 and not rev.separated


def test_a_small_real_difference_with_wide_noise_is_a_tie():
    rng = np.random.default_rng(8)
    a, b = rng.lognormal(np.log(1.00), 0.4, 60), rng.lognormal(np.log(1.03), 0.4, 60)
    assert stats.compare(a, b, "median", "a", "b").includes_one


def test_large_cells_are_cheap():
    x = np.random.default_rng(9).lognormal(0, 0.2, 200_000)
    reps = stats.quantile_replicates(x, 0.5)
    assert reps.size == stats.QUANTILE_RESAMPLES and abs(np.median(reps) - np.median(x)) < 0.01


def test_mean_of_a_large_cell_uses_the_normal_approximation():
    x = np.random.default_rng(10).lognormal(0, 0.3, stats.MEAN_EXACT_MAX + 1)
    reps = stats.mean_replicates(x, seed=1)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert reps.mean() == pytest.approx(x.mean(), abs=0.2 * se)
    assert reps.std() == pytest.approx(se, rel=0.1)
