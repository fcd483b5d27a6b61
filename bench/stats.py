"""Latency statistics from raw samples (numpy only: this runs on the device too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgebench.bench.contracts.results import LatencyStats

PERCENTILES = (50, 90, 95, 99)


def summarize(samples_ns: Sequence[int], batch: int) -> LatencyStats:
    """Summarise per-batch latencies given in nanoseconds.

    Percentiles use numpy's default (linear interpolation). CoV is the sample standard deviation
    (ddof=1) over the mean. Throughput is items per second over the measured time, so it counts
    every item of every batch and nothing of the gaps between runs.
    """
    if len(samples_ns) == 0:
        raise ValueError("no latency samples to summarise")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    return LatencyStats(
        n=int(ms.size),
        min_ms=float(ms.min()),
        mean_ms=mean,
        std_ms=std,
        cov=std / mean if mean > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=float(ms.max()),
        throughput_ips=batch * ms.size / (ms.sum() / 1e3),
    )


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits."""
    top = np.argpartition(-logits, kth=min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))
