"""Is one latency distribution really faster than another? Bootstrap confidence intervals of ratios.

Each cell's samples are resampled on their own (two cells are separate processes measured at different
times, so there is no pairing), with a seed derived from the cell key and the statistic: the same stored
run always gives the same intervals, whoever asks (``edgebench recommend`` or the HTML report).

Quantiles (median, p90) are bootstrapped exactly without building resamples: a resample of ``n`` draws
from the sorted sample ``x(1) <= ... <= x(n)`` is ``x(ceil(n*U_j))`` with ``U_j`` uniform, so its
``k``-th smallest value is ``x(ceil(n*U_(k)))``, and the ``k``-th smallest of ``n`` uniforms follows
``Beta(k, n + 1 - k)``. That makes a few thousand replicates of a 100 000-sample cell cost microseconds.
The mean has no such shortcut: it is resampled directly, in chunks, with fewer replicates, and above
``MEAN_EXACT_MAX`` samples its bootstrap distribution is taken as the normal one the central limit theorem
gives (mean, standard error), which at that size it matches to well within the Monte-Carlo error.

Samples are treated as independent draws. Bursts of contention make neighbouring samples correlated, so
on a busy machine these intervals are too narrow rather than too wide: cells flagged ``contended`` should
be re-measured before a small margin is trusted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
QUANTILE_RESAMPLES = 4000
MEAN_RESAMPLES = 1000
MEAN_EXACT_MAX = 20_000
_CHUNK_ELEMENTS = 4_000_000  # bounds memory when resampling for the mean

STATISTICS = {"median": 0.5, "p90": 0.9}  # quantile statistics; "mean" is the other one


def seed_for(key: str, statistic: str) -> int:
    """A stable seed per (cell, statistic): independent of the order cells are compared in."""
    return zlib.crc32(f"{key}\0{statistic}".encode())


def order_rank(n: int, q: float) -> int:
    """The 1-based rank of the order statistic that estimates the ``q`` quantile of ``n`` samples."""
    return min(n, max(1, math.ceil(q * n)))


def quantile_replicates(samples: Sequence[float] | np.ndarray, q: float, n_resamples: int = QUANTILE_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the ``q`` quantile (as the order statistic of rank ``ceil(q*n)``)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("no samples to resample")
    k = order_rank(n, q)
    u = np.random.default_rng(seed).beta(k, n + 1 - k, size=n_resamples)
    idx = np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)
    return x[idx]


def mean_replicates(samples: Sequence[float] | np.ndarray, n_resamples: int = MEAN_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the mean, by plain resampling with replacement."""
    x = np.asarray(samples, dtype=np.float64)
    n = x.size
    if n == 0:
        raise ValueError("no samples to resample")
    rng = np.random.default_rng(seed)
    if n > MEAN_EXACT_MAX:
        return rng.normal(float(x.mean()), float(x.std(ddof=1)) / np.sqrt(n), size=n_resamples)
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        out[start:start + b] = x[rng.integers(0, n, size=(b, n))].mean(axis=1)
    return out


def replicates(samples: Sequence[float] | np.ndarray, statistic: str, key: str = "") -> np.ndarray:
    seed = seed_for(key, statistic)
    if statistic == "mean":
        return mean_replicates(samples, seed=seed)
    return quantile_replicates(samples, STATISTICS[statistic], seed=seed)


def point(samples: Sequence[float] | np.ndarray, statistic: str) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(x.mean()) if statistic == "mean" else float(np.percentile(x, STATISTICS[statistic] * 100))


@dataclass
class RatioCI:
    """``ratio`` = statistic(other) / statistic(best), with a percentile bootstrap interval.

    Both are lower-is-better latencies, so a ratio above 1 means ``best`` is faster; the difference is
    real only when the whole interval lies above 1.
    """

    statistic: str
    ratio: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def includes_one(self) -> bool:
        return self.low <= 1.0 <= self.high

    @property
    def separated(self) -> bool:
        """The other candidate is slower beyond doubt (the whole interval above 1)."""
        return self.low > 1.0

    def describe(self) -> str:
        return f"{self.statistic} ratio {self.ratio:.3f} [{self.level:.0%} CI {self.low:.3f}-{self.high:.3f}]"


def ratio_ci(best: np.ndarray, other: np.ndarray, best_reps: np.ndarray, other_reps: np.ndarray, statistic: str, level: float = LEVEL) -> RatioCI:
    """Interval of the ratio from independently drawn replicates of each side."""
    ratios = other_reps / best_reps
    alpha = (1 - level) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return RatioCI(statistic, point(other, statistic) / point(best, statistic), float(low), float(high), level)


class Bootstrapper:
    """Caches each cell's replicates so a report computes them once however many comparisons it makes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, float], np.ndarray] = {}

    def reps(self, key: str, samples: np.ndarray, statistic: str, scale: float = 1.0) -> np.ndarray:
        ck = (key, statistic, scale)
        if ck not in self._cache:
            self._cache[ck] = replicates(samples, statistic, key)
        return self._cache[ck]

    def compare(self, best_key: str, best: np.ndarray, other_key: str, other: np.ndarray, statistic: str, scale: tuple[float, float] = (1.0, 1.0)) -> RatioCI:
        """Compare two sample arrays (already scaled, e.g. per item); ``scale`` only keys the cache."""
        return ratio_ci(best, other, self.reps(best_key, best, statistic, scale[0]), self.reps(other_key, other, statistic, scale[1]), statistic)


def compare(best: Sequence[float], other: Sequence[float], statistic: str = "median", best_key: str = "a", other_key: str = "b") -> RatioCI:
    """One-off comparison of two sample sets (tests, notebooks)."""
    a, b = np.asarray(best, dtype=np.float64), np.asarray(other, dtype=np.float64)
    return ratio_ci(a, b, replicates(a, statistic, best_key), replicates(b, statistic, other_key), statistic)
