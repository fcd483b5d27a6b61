"""Is one latency distribution really faster than another? Bootstrap confidence intervals of ratios that
include the variance between worker processes.

**Why processes.** A process's whole life can sit in a faster or slower mode (address-space layout, memory
placement, the core it landed on): on the 2-core VM edgebench is developed on, the same cell's p90 moved
about +-35% between runs while an interval resampling one process's samples as independent draws was
+-1% wide, so two cells running the very same computation "differed" in 19 of 20 comparisons. The
samples of one process cannot show that variance; only several processes can (``measure.processes``,
whose per-process sample counts the store keeps in ``CellResult.process_samples``).

**The method: a two-stage (hierarchical) bootstrap, then a small-sample interval.** For each cell, one
replicate draws the cell's ``P`` processes with replacement, then draws as many samples as the chosen
processes measured, with replacement, from the samples of the chosen processes (each chosen as often as it
was drawn), and computes the statistic on them. Stage 2 is done exactly without building resamples: the
``k``-th smallest of ``N`` draws from a (weighted) empirical distribution is its ``ceil(N*U)``-th value
with ``U ~ Beta(k, N + 1 - k)``, and the weighted rank is found by a vectorised bisection over the merged,
sorted samples; the mean's stage 2 is the normal distribution the central limit theorem gives. Two
sample stages count the within-process noise twice, a conservative error. With few processes, the
spread of the replicates underestimates the between-process variance by ``(P-1)/P`` and its estimate has
only ``P - 1`` degrees of freedom, so a percentile interval would be far too narrow (with 3 processes per
cell, about 1 A/A pair in 5 would "win"). The interval of the ratio is therefore Student's: log ratio of
the point estimates +- ``t(level, df) x se``, where ``se^2`` is the sum over the two cells of the
variance of the log replicates times ``P/(P-1)``, and ``df`` is Welch-Satterthwaite's with ``P - 1`` per
cell. On synthetic cells whose processes differ, this keeps A/A false wins under 5%, where the pooled
i.i.d. interval calls most of them (tests/reports/test_report_stats.py).

**One process.** There is no between-process information. The samples are cut into up to
``PSEUDO_BLOCKS`` contiguous blocks, resampled as if they were processes, which takes autocorrelation
(bursts, drifts) into account but not a process's mode; such an interval is shown, and
:attr:`RatioCI.decisive` is False: the recommendation never calls a win on it ("not enough processes").

Each cell is resampled on its own (two cells are separate processes measured at different times, so
there is no pairing), with a seed derived from the cell key and the statistic: the same stored run always
gives the same intervals, whoever asks (``edgebench recommend`` or the HTML report). Cost: about 3 ms per
cell and statistic at 5 000 samples and 20 ms at 100 000 (sorting and the per-group rank table); the four
objectives of a 30-cell, 900 000-sample report take 0.4 s of CPU with 3 processes per cell and 1.1 s with
one (10 pseudo-blocks), against 0.7 s for the pooled bootstrap before.

The pooled i.i.d. bootstrap of edgebench 0.2 (:func:`replicates`, :func:`pooled_compare`) is kept, for the
A/A trial (scripts/aa_trial.py) to show what it called.
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
MIN_PROCESSES = 2  # processes per cell needed before an interval carries between-process variance
PSEUDO_BLOCKS = 10  # contiguous blocks one process's samples are cut into
MIN_BLOCK = 10  # samples per pseudo-block at least


def seed_for(key: str, statistic: str) -> int:
    """A stable seed per (cell, statistic): independent of the order cells are compared in."""
    return zlib.crc32(f"{key}\0{statistic}".encode())


def order_rank(n: int, q: float) -> int:
    """The 1-based rank of the order statistic that estimates the ``q`` quantile of ``n`` samples."""
    return min(n, max(1, math.ceil(q * n)))


def point(samples: Sequence[float] | np.ndarray, statistic: str) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(x.mean()) if statistic == "mean" else float(np.percentile(x, STATISTICS[statistic] * 100))


# -- processes and pseudo-processes ------------------------------------------------------------

def processes_of(n: int, process_samples: Sequence[int] | None) -> int:
    """How many real worker processes ``n`` samples come from (1 when the counts are absent or do not add up)."""
    counts = list(process_samples or [])
    return len(counts) if len(counts) >= 2 and all(c > 0 for c in counts) and sum(counts) == n else 1


def group_sizes(n: int, process_samples: Sequence[int] | None) -> list[int]:
    """The sizes of the groups resampled in stage 1: the processes, or for one process up to
    ``PSEUDO_BLOCKS`` contiguous blocks of at least ``MIN_BLOCK`` samples (one group below that)."""
    if processes_of(n, process_samples) >= 2:
        return list(process_samples or [])
    k = max(1, min(PSEUDO_BLOCKS, n // MIN_BLOCK))
    return [len(b) for b in np.array_split(np.arange(n), k)]


@dataclass
class Resampled:
    """A cell's bootstrap replicates of one statistic and what stands behind them."""

    statistic: str
    point: float  # the statistic of the pooled samples (what the tables show)
    reps: np.ndarray
    groups: int  # groups resampled in stage 1 (processes, or pseudo-blocks of one process)
    processes: int  # real worker processes


def _multiplicities(rng: np.random.Generator, groups: int, n_resamples: int) -> np.ndarray:
    """Stage 1: how often each group is drawn, per replicate (``n_resamples`` x ``groups``)."""
    choice = rng.integers(0, groups, size=(n_resamples, groups))
    m = np.zeros((n_resamples, groups), dtype=np.int64)
    np.add.at(m, (np.repeat(np.arange(n_resamples), groups), choice.ravel()), 1)
    return m


def _weighted_order_stats(xs: np.ndarray, cum: np.ndarray, m: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Per replicate ``r``, the value of rank ``ranks[r]`` among the sorted samples ``xs`` when group ``j``
    counts ``m[r, j]`` times; ``cum[i, j]`` = samples of group ``j`` among ``xs[:i + 1]``. Bisection."""
    lo = np.zeros(len(ranks), dtype=np.int64)
    hi = np.full(len(ranks), xs.size - 1, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        enough = np.einsum("rg,rg->r", cum[mid], m) >= ranks
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    return xs[lo]


def hierarchical_replicates(samples: Sequence[float] | np.ndarray, statistic: str, process_samples: Sequence[int] | None = None,
                            n_resamples: int = QUANTILE_RESAMPLES, seed: int = 0) -> Resampled:
    """Replicates of ``statistic`` (median, p90, mean) from the two-stage bootstrap in the module doc."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to resample")
    sizes = np.asarray(group_sizes(x.size, process_samples), dtype=np.int64)
    g = sizes.size
    gid = np.repeat(np.arange(g), sizes)
    rng = np.random.default_rng(seed)
    m = _multiplicities(rng, g, n_resamples)
    totals = m @ sizes  # samples drawn in stage 2, per replicate
    if statistic == "mean":
        sums = np.bincount(gid, weights=x, minlength=g)
        squares = np.bincount(gid, weights=x * x, minlength=g)
        mean = (m @ sums) / totals
        var = np.maximum((m @ squares) / totals - mean ** 2, 0.0)
        reps = mean + rng.standard_normal(n_resamples) * np.sqrt(var / totals)
    else:
        order = np.argsort(x, kind="stable")
        xs = x[order]
        cum = np.zeros((x.size, g), dtype=np.int32)
        cum[np.arange(x.size), gid[order]] = 1
        np.cumsum(cum, axis=0, out=cum)
        k = np.clip(np.ceil(STATISTICS[statistic] * totals), 1, totals).astype(np.int64)
        u = rng.beta(k, totals + 1 - k)
        ranks = np.clip(np.ceil(totals * u), 1, totals).astype(np.int64)
        reps = _weighted_order_stats(xs, cum, m, ranks)
    return Resampled(statistic, point(x, statistic), reps, g, processes_of(x.size, process_samples))


def statistic_interval(samples: Sequence[float] | np.ndarray, statistic: str = "median", process_samples: Sequence[int] | None = None,
                       key: str = "", level: float = LEVEL) -> tuple[float, float, float]:
    """(point, low, high): one cell's statistic with the same Student interval as the ratios below (log
    scale, the replicates' variance x P/(P-1), P - 1 degrees of freedom; pseudo-blocks for one process)."""
    from scipy import stats as sps

    r = hierarchical_replicates(samples, statistic, process_samples, seed=seed_for(key, statistic))
    var, df = _side(r)
    crit = float(sps.t.ppf(1 - (1 - level) / 2, df)) if math.isfinite(df) else float(sps.norm.ppf(1 - (1 - level) / 2))
    se = math.sqrt(var)
    return r.point, r.point * _exp(-crit * se), r.point * _exp(crit * se)


# -- the interval of a ratio --------------------------------------------------------------------

@dataclass
class RatioCI:
    """``ratio`` = statistic(other) / statistic(best), with its interval at ``level``.

    Both are lower-is-better latencies, so a ratio above 1 means ``best`` is faster; the difference is
    real only when the whole interval lies above 1 (:attr:`separated`) *and* the interval carries the
    between-process variance of both cells (:attr:`decisive`).
    """

    statistic: str
    ratio: float
    low: float
    high: float
    level: float = LEVEL
    processes: tuple[int, int] = (1, 1)  # worker processes behind (best, other)

    @property
    def includes_one(self) -> bool:
        return self.low <= 1.0 <= self.high

    @property
    def separated(self) -> bool:
        """The other candidate is slower beyond the interval (the whole interval above 1)."""
        return self.low > 1.0

    @property
    def below(self) -> bool:
        """The other candidate is faster beyond the interval (the whole interval below 1)."""
        return self.high < 1.0

    @property
    def decisive(self) -> bool:
        """Both cells were measured in at least ``MIN_PROCESSES`` processes: the interval includes the
        variance between processes, so it can decide a win."""
        return min(self.processes) >= MIN_PROCESSES

    def describe(self) -> str:
        text = f"{self.statistic} ratio {self.ratio:.3f} [{self.level:.0%} CI {self.low:.3f}-{self.high:.3f}]"
        return text if self.decisive else text + f" ({'/'.join(map(str, self.processes))} processes)"


def _exp(x: float) -> float:
    """``exp`` that says infinity instead of raising: samples spread over many decades (a 30 s hang among
    20 us samples) give an interval with no upper end, which ties, rather than a crashed report."""
    return math.exp(x) if x < 709.0 else math.inf


def _side(r: Resampled) -> tuple[float, float]:
    """(variance of the log replicates corrected for few groups, its degrees of freedom)."""
    logs = np.log(np.maximum(r.reps, np.finfo(float).tiny))
    var = float(np.var(logs, ddof=1)) if logs.size > 1 else 0.0
    if r.groups < 2:
        return var, math.inf
    return var * r.groups / (r.groups - 1), float(r.groups - 1)


def interval(best: Resampled, other: Resampled, level: float = LEVEL) -> RatioCI:
    """The ratio other/best of the pooled points, with the Student interval of the module doc."""
    from scipy import stats as sps

    ratio = other.point / best.point if best.point else math.inf
    (va, da), (vb, db) = _side(best), _side(other)
    se = math.sqrt(va + vb)
    denom = (va * va / da if math.isfinite(da) else 0.0) + (vb * vb / db if math.isfinite(db) else 0.0)
    df = (va + vb) ** 2 / denom if denom > 0 else math.inf
    crit = float(sps.t.ppf(1 - (1 - level) / 2, df)) if math.isfinite(df) else float(sps.norm.ppf(1 - (1 - level) / 2))
    centre = math.log(ratio) if 0 < ratio < math.inf else 0.0
    low, high = _exp(centre - crit * se), _exp(centre + crit * se)
    return RatioCI(best.statistic, ratio, low, high, level, (best.processes, other.processes))


class Bootstrapper:
    """Caches each cell's replicates so a report computes them once however many comparisons it makes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, float], Resampled] = {}

    def reps(self, key: str, samples: np.ndarray, statistic: str, scale: float = 1.0, process_samples: Sequence[int] | None = None) -> Resampled:
        ck = (key, statistic, scale)
        if ck not in self._cache:
            self._cache[ck] = hierarchical_replicates(samples, statistic, process_samples, seed=seed_for(key, statistic))
        return self._cache[ck]

    def compare(self, best_key: str, best: np.ndarray, other_key: str, other: np.ndarray, statistic: str,
                scale: tuple[float, float] = (1.0, 1.0), processes: tuple[Sequence[int] | None, Sequence[int] | None] = (None, None)) -> RatioCI:
        """Compare two sample arrays (already scaled, e.g. per item); ``scale`` only keys the cache;
        ``processes``: each side's samples per worker process (None or empty: one process)."""
        return interval(self.reps(best_key, best, statistic, scale[0], processes[0]), self.reps(other_key, other, statistic, scale[1], processes[1]))


def compare(best: Sequence[float], other: Sequence[float], statistic: str = "median", best_key: str = "a", other_key: str = "b",
            best_processes: Sequence[int] | None = None, other_processes: Sequence[int] | None = None) -> RatioCI:
    """One-off comparison of two sample sets (tests, notebooks, scripts/aa_trial.py)."""
    return Bootstrapper().compare(best_key, np.asarray(best, dtype=np.float64), other_key, np.asarray(other, dtype=np.float64),
                                  statistic, processes=(best_processes, other_processes))


# -- the pooled i.i.d. bootstrap of edgebench 0.2 (the old rule, for the A/A trial) ---------------

def quantile_replicates(samples: Sequence[float] | np.ndarray, q: float, n_resamples: int = QUANTILE_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Pooled i.i.d. bootstrap replicates of the ``q`` quantile (the order statistic of rank ``ceil(q*n)``),
    by the Beta trick, ignoring processes."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("no samples to resample")
    k = order_rank(n, q)
    u = np.random.default_rng(seed).beta(k, n + 1 - k, size=n_resamples)
    idx = np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)
    return x[idx]


def mean_replicates(samples: Sequence[float] | np.ndarray, n_resamples: int = MEAN_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Pooled i.i.d. bootstrap replicates of the mean, by plain resampling with replacement."""
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
    """Pooled i.i.d. replicates (the old rule)."""
    seed = seed_for(key, statistic)
    if statistic == "mean":
        return mean_replicates(samples, seed=seed)
    return quantile_replicates(samples, STATISTICS[statistic], seed=seed)


def pooled_compare(best: Sequence[float], other: Sequence[float], statistic: str = "median", best_key: str = "a", other_key: str = "b") -> RatioCI:
    """The old rule's interval: every sample an independent draw, percentile interval of the ratio."""
    a, b = np.asarray(best, dtype=np.float64), np.asarray(other, dtype=np.float64)
    ratios = replicates(b, statistic, other_key) / replicates(a, statistic, best_key)
    low, high = np.quantile(ratios, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return RatioCI(statistic, point(b, statistic) / point(a, statistic), float(low), float(high), LEVEL, (1, 1))
