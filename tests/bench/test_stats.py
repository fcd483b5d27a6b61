"""Latency statistics and top-k accuracy (bench/stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.bench.stats import summarize, topk_accuracy


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
