"""Latency statistics and top-k accuracy (bench/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.bench.stats import quartiles, summarize, topk_accuracy


@pytest.mark.parametrize("seed,n,batch", [(0, 1000, 1), (1, 37, 8), (2, 2, 4)])
def test_summarize_matches_numpy(seed, n, batch):
    rng = np.random.default_rng(seed)
    samples = [int(v) for v in rng.lognormal(mean=13.0, sigma=0.4, size=n)]  # ~0.4 ms, long tail
    s = summarize(samples, batch)
    ms = np.array(samples, dtype=np.float64) / 1e6
    assert s.n == n
    for q, got in zip((50, 90, 95, 99), (s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms)):
        assert got == pytest.approx(np.percentile(ms, q), rel=1e-12)
    assert s.min_ms == pytest.approx(ms.min(), rel=1e-12)
    assert s.max_ms == pytest.approx(ms.max(), rel=1e-12)
    assert s.mean_ms == pytest.approx(ms.mean(), rel=1e-12)
    assert s.std_ms == pytest.approx(np.std(ms, ddof=1), rel=1e-9)
    assert s.cov == pytest.approx(np.std(ms, ddof=1) / ms.mean(), rel=1e-9)
    total_s = sum(samples) / 1e9
    assert s.throughput_ips == pytest.approx(batch * n / total_s, rel=1e-9)


def test_summarize_hand_computed():
    # 1, 2, 3, 4 ms at batch 2: mean 2.5, sample std sqrt(5/3), median 2.5, 8 items in 10 ms
    s = summarize([1_000_000, 4_000_000, 2_000_000, 3_000_000], 2)
    assert (s.min_ms, s.max_ms, s.mean_ms, s.p50_ms) == pytest.approx((1.0, 4.0, 2.5, 2.5))
    assert s.std_ms == pytest.approx((5 / 3) ** 0.5)
    assert s.cov == pytest.approx((5 / 3) ** 0.5 / 2.5)
    assert s.throughput_ips == pytest.approx(800.0)
    # numpy's linear method: position 0.9 * (n - 1) = 2.7, between the sorted 3 ms and 4 ms -> 3.7
    assert s.p90_ms == pytest.approx(3.7)


def test_single_sample_has_zero_spread():
    s = summarize([5_000_000], 1)
    assert s.n == 1 and s.std_ms == 0.0 and s.cov == 0.0
    assert s.p50_ms == s.p99_ms == s.min_ms == s.max_ms == pytest.approx(5.0)
    assert s.throughput_ips == pytest.approx(200.0)


@pytest.mark.parametrize("empty", [[], np.array([], dtype=np.int64)])
def test_empty_samples_raise(empty):
    with pytest.raises(ValueError):
        summarize(empty, 1)


def test_topk_accuracy_hand_made():
    logits = np.array([
        [0.1, 0.7, 0.2, 0.0],   # ranking: 1, 2, 0, 3
        [0.9, 0.05, 0.03, 0.02],  # ranking: 0, 1, 2, 3
        [0.2, 0.3, 0.1, 0.4],   # ranking: 3, 1, 0, 2
    ])
    labels = np.array([2, 0, 0])
    # top-1: row0 predicts 1 (label 2) no; row1 predicts 0 yes; row2 predicts 3 (label 0) no -> 1/3
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    # top-2: row0 {1,2} yes; row1 {0,1} yes; row2 {3,1} no -> 2/3
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    # top-3: row2 {3,1,0} yes -> 3/3
    assert topk_accuracy(logits, labels, 3) == pytest.approx(1.0)


def test_topk_accuracy_negative_logits_and_k_beyond_classes():
    logits = np.array([[-3.0, -1.0, -2.0], [-0.5, -4.0, -0.1]])
    labels = np.array([1, 0])
    # row0 best is 1 (yes); row1 best is 2 (label 0, no)
    assert topk_accuracy(logits, labels, 1) == pytest.approx(0.5)
    assert topk_accuracy(logits, labels, 5) == pytest.approx(1.0)


# -- robust dispersion and outliers ------------------------------------------------------------

def _pytest_benchmark_quartiles(data):
    """pytest-benchmark 5's own quartile code (utils.py), copied as the oracle."""
    import statistics

    n = len(data)
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 101, 1000])
def test_quartiles_are_pytest_benchmarks(n):
    data = sorted(np.random.default_rng(n).lognormal(0, 1, n).tolist())
    assert quartiles(np.asarray(data)) == pytest.approx(_pytest_benchmark_quartiles(data), rel=1e-12)


def test_dispersion_and_outliers_hand_computed():
    # 1..8 ms and one 100 ms sample: quartiles (n odd, n % 4 == 1, k = 2) 0.25*2 + 0.75*3 = 2.75 and
    # 0.75*7 + 0.25*8 = 7.25; median 5; IQR/median 0.9; |x - 5| = 4 3 2 1 0 1 2 3 95, so MAD = 2
    s = summarize([v * 1_000_000 for v in (1, 2, 3, 4, 5, 6, 7, 8, 100)], 1)
    assert (s.q1_ms, s.q3_ms, s.p50_ms) == pytest.approx((2.75, 7.25, 5.0))
    assert s.iqr_ms == pytest.approx(4.5) and s.iqr_ratio == pytest.approx(0.9) and s.mad_ms == pytest.approx(2.0)
    # Tukey fences 2.75 - 6.75 .. 7.25 + 6.75 = 14: only 100 is beyond; mean 15.1, std 31.5: only 100 beyond 1 std
    assert (s.stddev_outliers, s.iqr_outliers, s.outliers) == (1, 1, "1;1")


def test_a_long_tail_moves_the_cov_but_not_the_robust_ratio():
    """The default suite's complaint: a few slow samples put every cell's CoV far above 5%. A stable
    cell (1% spread) with 1% of its samples 50x slower: CoV above 100%, IQR/median and MAD near 1%."""
    rng = np.random.default_rng(7)
    ms = rng.normal(0.5, 0.005, 2000)
    ms[::100] = 25.0
    s = summarize([int(v * 1e6) for v in ms], 1)
    assert s.cov > 1.0
    assert s.iqr_ratio < 0.03 and s.mad_ms / s.p50_ms < 0.02
    assert s.iqr_outliers >= 20


def test_single_sample_robust_fields():
    s = summarize([5_000_000], 1)
    assert (s.iqr_ratio, s.mad_ms, s.outliers) == (0.0, 0.0, "0;0")


def test_stats_stored_before_robust_fields_read_back():
    from edgebench.bench.contracts.results import CellResult

    old = {"status": "ok", "latency": {"n": 1, "min_ms": 1.0, "mean_ms": 1.0, "std_ms": 0.0, "cov": 0.0, "p50_ms": 1.0,
                                       "p90_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0, "throughput_ips": 1000.0},
           "contention": {"other_cpu_share": 0.01, "own_cpu_share": 0.5, "logical_cpus": 2, "contended": False}}
    r = CellResult.from_dict(old)
    assert r.latency.iqr_ratio is None and r.latency.outliers is None and r.latency.iqr_ms is None
    assert r.contention.attempts == 1 and r.contention.attempt_other_shares == [] and r.contention.quiet is None


@pytest.mark.parametrize("n", [2, 5, 6, 7, 8, 101, 1000])
def test_outliers_and_quartiles_match_pytest_benchmark_itself(n):
    """The cell's LatencyStats say what `pytest-benchmark compare` would say of the same samples."""
    Stats = pytest.importorskip("pytest_benchmark.stats").Stats
    samples = [int(v) for v in np.random.default_rng(n).lognormal(13.0, 0.5, n)]
    theirs = Stats()
    for v in samples:
        theirs.update(v / 1e6)  # in ms, as LatencyStats is
    s = summarize(samples, 1)
    assert s.outliers == theirs.outliers
    assert (s.q1_ms, s.q3_ms) == pytest.approx((theirs.q1, theirs.q3), rel=1e-9)
    assert s.iqr_ratio == pytest.approx(theirs.iqr / theirs.median, rel=1e-9)
