"""Latency statistics from raw samples (numpy only: this runs on the device too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgebench.bench.contracts.results import LatencyStats

PERCENTILES = (50, 90, 95, 99)
TUKEY = 1.5  # Tukey's fences: an IQR outlier lies more than 1.5 IQR outside the quartiles (as pytest-benchmark counts)


def quartiles(data: np.ndarray) -> tuple[float, float]:
    """Q1 and Q3 of sorted ``data`` as pytest-benchmark computes them (Wikipedia methods 3 and 2 by
    parity), so edgebench's outlier counts and its pytest-benchmark export agree."""
    n = len(data)
    if n == 1:
        return float(data[0]), float(data[0])
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            return float(0.25 * data[k - 1] + 0.75 * data[k]), float(0.75 * data[3 * k] + 0.25 * data[3 * k + 1])
        return float(0.75 * data[k] + 0.25 * data[k + 1]), float(0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2])
    half = n // 2
    return float(np.median(data[:half])), float(np.median(data[half:]))


def outlier_counts(data: np.ndarray, mean: float, std: float, q1: float, q3: float) -> tuple[int, int]:
    """(samples more than 1 std from the mean, samples beyond Tukey's fences): pytest-benchmark's
    ``outliers`` "A;B"."""
    iqr = q3 - q1
    sd_out = int(np.count_nonzero((data < mean - std) | (data > mean + std)))
    iqr_out = int(np.count_nonzero((data < q1 - TUKEY * iqr) | (data > q3 + TUKEY * iqr)))
    return sd_out, iqr_out


def summarize(samples_ns: Sequence[int], batch: int) -> LatencyStats:
    """Summarise per-batch latencies given in nanoseconds.

    Percentiles use numpy's default (linear interpolation). CoV is the sample standard deviation
    (ddof=1) over the mean. The robust dispersion is IQR / median (``iqr_ratio``; quartiles by
    pytest-benchmark's method) with the median absolute deviation beside it: a few slow samples in a
    long tail move the CoV by orders of magnitude and these hardly at all. Throughput is items per
    second over the measured time, so it counts every item of every batch and nothing of the gaps
    between runs.
    """
    if len(samples_ns) == 0:
        raise ValueError("no latency samples to summarise")
    ms = np.sort(np.asarray(samples_ns, dtype=np.float64) / 1e6)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    q1, q3 = quartiles(ms)
    sd_out, iqr_out = outlier_counts(ms, mean, std, q1, q3)
    return LatencyStats(
        n=int(ms.size),
        min_ms=float(ms[0]),
        mean_ms=mean,
        std_ms=std,
        cov=std / mean if mean > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=float(ms[-1]),
        throughput_ips=batch * ms.size / (ms.sum() / 1e3),
        q1_ms=q1,
        q3_ms=q3,
        iqr_ratio=(q3 - q1) / p50 if p50 > 0 else 0.0,
        mad_ms=float(np.median(np.abs(ms - p50))),
        stddev_outliers=sd_out,
        iqr_outliers=iqr_out,
    )


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits."""
    top = np.argpartition(-logits, kth=min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))
