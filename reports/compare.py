"""Compare two runs cell by cell: per metric improved, regressed, unchanged or inconclusive.

Cells match on their identity (:class:`~edgebench.bench.contracts.identity.CellId`: model, recipe, backend,
precision, batch, target). Latency is judged from every stored
sample, made robust to what a noisy board does to them:

- **Autocorrelation.** Samples come in bursts (a busy neighbour, a frequency change), so they are not
  independent draws and a test on all of them gives p-values far too small. Each cell's samples, in the
  order they were measured, are cut into contiguous blocks and the test works on the block medians:
  Mann-Whitney U on them (``scipy.stats.mannwhitneyu``) and a percentile bootstrap of the ratio of medians
  (``scipy.stats.bootstrap``, each side resampled on its own, fixed seed).
- **Processes.** A cell measured in several worker processes (``measure.processes``) has its blocks cut
  within each process, never across two, and the interval resamples processes, then blocks within them
  (the two-stage bootstrap and small-sample interval of :mod:`edgebench.reports.stats`): one process's
  mode then widens the interval instead of faking a change. Cells of one process keep the plain bootstrap.
- **A minimum effect.** A regression needs significance (p < alpha) *and* the whole bootstrap interval of
  the median ratio above ``1 + min_effect``; unchanged needs the interval inside ``1 ± min_effect``;
  anything else is inconclusive (e.g. significant but maybe smaller than the minimum).
- **Run-to-run noise.** Two runs of the same cell differ by more than their samples say (the process lands
  on another core, the board is warmer, a neighbour woke up): on a shared 2-core VM the same cell moved
  by 50% between two uncontended runs while each run's own interval was a few percent wide. So the
  change must also exceed ``noise_z`` standard deviations of run-to-run noise, where the run-to-run
  standard deviation (robust, of log median latency) comes from the cell's earlier clean runs on the
  same environment in the store. With at least ``min_history`` of them the head is measured against
  their median (one run's spread plus the median's, sd x sqrt(1 + 1/n)), so a base run that happened to
  be fast or slow does not decide; with fewer, head against base (sd x sqrt(2)) with the sd at least
  ``prior_noise`` (3%, a quiet dedicated board) and at least the spread that the comparison's other
  cells show between the two runs (:func:`pooled_noise`: a night where every cell moved by tens of
  percent both ways is noise, one cell moving alone is not).
- **Disturbed cells.** A cell flagged contended or throttled in either run is inconclusive, never a
  regression.
- **Summarised runs.** A run whose raw samples ``edgebench gc`` dropped keeps each cell's stored p50, but
  there is nothing to test or resample: such a cell's latency is inconclusive ("samples of run X were
  dropped by edgebench gc"), never a regression or an improvement. Accuracy, memory and size come from
  the stored summaries and are judged as always.

Accuracy is judged by a tolerance in percentage points, memory (peak RSS) and artifact size by relative
thresholds with an absolute floor. All results are plain dataclasses; ``reports/verdict.py`` renders them.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgebench.bench.contracts.flags import texts
from edgebench.bench.contracts.identity import CellFields, CellId
from edgebench.bench.store import CellRecord, RunRecord
from edgebench.reports import stats as rstats

IMPROVED, REGRESSED, UNCHANGED, INCONCLUSIVE = "improved", "regressed", "unchanged", "inconclusive"
MAX_BLOCKS = 30
MIN_BLOCK = 10
MIN_BLOCKS = 6


@dataclass
class Thresholds:
    """What counts as a change. Latency ratios are head / base (above 1 is slower)."""

    min_effect: float = 0.05
    alpha: float = 0.01
    level: float = 0.95
    noise_z: float = 3.0  # run-to-run bar, in standard deviations of the difference of two runs
    prior_noise: float = 0.03  # run-to-run sd of log latency assumed until the history says otherwise
    min_history: int = 4  # earlier clean runs of a cell needed to trust its own run-to-run estimate
    history_runs: int = 20  # how many earlier runs to look at for it
    accuracy_tolerance_pts: float = 0.5
    memory_threshold: float = 0.10
    memory_floor_mib: float = 4.0
    size_threshold: float = 0.02
    include_disturbed: bool = False  # judge contended/throttled cells anyway (not recommended)
    n_resamples: int = 4000

    def band(self) -> tuple[float, float]:
        return 1.0 - self.min_effect, 1.0 + self.min_effect


@dataclass
class MetricVerdict:
    metric: str  # latency | accuracy | memory | size
    verdict: str
    base: float | None = None
    head: float | None = None
    ratio: float | None = None  # head / base
    delta: float | None = None  # head - base (points for accuracy, MiB for memory, bytes for size)
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    unit: str = ""
    reason: str = ""


@dataclass
class CellComparison(CellFields):
    status: str  # compared | failed-in-head | failed-in-base | only-in-base | only-in-head | not-measured
    verdict: str
    metrics: list[MetricVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    since: dict[str, Any] | None = None  # where a latency step began, from the history (see reports/history.py)

    def metric(self, name: str) -> MetricVerdict | None:
        return next((m for m in self.metrics if m.metric == name), None)


@dataclass
class RunRef:
    id: str
    created_at: str
    git_commit: str | None
    label: str  # how it was named: a run id, latest, or "baseline NAME"

    @classmethod
    def of(cls, run: RunRecord, label: str) -> RunRef:
        return cls(run.id, run.created_at.isoformat(), run.git_commit, label)


@dataclass
class Comparison:
    base: RunRef
    head: RunRef
    thresholds: Thresholds
    cells: list[CellComparison]
    environment: list[dict[str, Any]] = field(default_factory=list)  # per target: fields that differ (reports/environment.py)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE)}
        for c in self.cells:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == REGRESSED]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        return data


# -- latency ---------------------------------------------------------------------------------

def blocks(samples: np.ndarray) -> list[np.ndarray]:
    """Contiguous blocks of at least ``MIN_BLOCK`` samples, at most ``MAX_BLOCKS`` of them."""
    n = samples.size
    k = min(MAX_BLOCKS, n // MIN_BLOCK)
    return np.array_split(samples, k) if k > 0 else []


def block_medians(samples_ns: list[int] | np.ndarray) -> np.ndarray:
    x = np.asarray(samples_ns, dtype=np.float64)
    return np.array([float(np.median(b)) for b in blocks(x)])


def process_block_medians(samples_ns: list[int] | np.ndarray, process_samples: list[int] | None) -> tuple[np.ndarray, list[int]]:
    """Block medians with blocks inside each worker process (at most ``MAX_BLOCKS`` in all), and how many
    blocks each process gave; one process: :func:`block_medians` and no counts."""
    x = np.asarray(samples_ns, dtype=np.float64)
    if rstats.processes_of(x.size, process_samples) < 2:
        return block_medians(x), []
    per = max(1, MAX_BLOCKS // len(process_samples))
    medians: list[float] = []
    counts: list[int] = []
    for part in np.split(x, np.cumsum(process_samples)[:-1]):
        k = max(1, min(per, part.size // MIN_BLOCK))
        medians += [float(np.median(b)) for b in np.array_split(part, k)]
        counts.append(k)
    return np.asarray(medians), counts


def _process_interval(bb: np.ndarray, b_counts: list[int], hb: np.ndarray, h_counts: list[int], th: Thresholds, key: str) -> tuple[float, float]:
    """Interval of the head/base ratio of block medians, resampling processes then blocks (a side of one
    process resamples its blocks, each its own group)."""
    def side(values: np.ndarray, counts: list[int], name: str) -> rstats.Resampled:
        groups = counts or [1] * values.size
        return rstats.hierarchical_replicates(values, "median", groups, n_resamples=th.n_resamples, seed=rstats.seed_for(key, name))
    ci = rstats.interval(side(bb, b_counts, "base"), side(hb, h_counts, "head"), th.level)
    return ci.low, ci.high


def _seed(key: str) -> int:
    return zlib.crc32(key.encode())


def _median_ratio(b: np.ndarray, h: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(h, axis=axis) / np.median(b, axis=axis)


def run_noise(p50s: list[float]) -> float | None:
    """Robust standard deviation of log(p50) across runs (MAD x 1.4826; the plain one when the MAD is 0)."""
    if len(p50s) < 2:
        return None
    logs = np.log(np.asarray(p50s, dtype=np.float64))
    mad = float(np.median(np.abs(logs - np.median(logs)))) * 1.4826
    return mad if mad > 0 else float(np.std(logs, ddof=1))


def latency_verdict(base_ns: list[int], head_ns: list[int], th: Thresholds, key: str = "",
                    disturbed: str | None = None, history_p50: list[float] | None = None,
                    pooled: tuple[float, int] | None = None,
                    processes: tuple[list[int] | None, list[int] | None] = (None, None)) -> MetricVerdict:
    """Judge the median latency of head against base (see the module docstring for the rules);
    ``processes``: each side's samples per worker process (CellResult.process_samples)."""
    from scipy import stats

    b, h = np.asarray(base_ns, dtype=np.float64), np.asarray(head_ns, dtype=np.float64)
    mv = MetricVerdict("latency", INCONCLUSIVE, unit="ms")
    if b.size == 0 or h.size == 0:
        mv.reason = "no latency samples stored in " + ("either run" if b.size == h.size else ("base" if b.size == 0 else "head"))
        return mv
    mv.base, mv.head = float(np.median(b)) / 1e6, float(np.median(h)) / 1e6
    mv.ratio = mv.head / mv.base
    (bb, b_counts), (hb, h_counts) = process_block_medians(b, processes[0]), process_block_medians(h, processes[1])
    if min(bb.size, hb.size) < MIN_BLOCKS:
        mv.reason = f"too few samples to judge ({b.size} and {h.size}; needs {MIN_BLOCKS * MIN_BLOCK} each)"
        return mv
    mv.p_value = float(stats.mannwhitneyu(hb, bb, alternative="two-sided").pvalue)
    if b_counts or h_counts:
        mv.ci_low, mv.ci_high = _process_interval(bb, b_counts, hb, h_counts, th, key)
    else:
        boot = stats.bootstrap((bb, hb), _median_ratio, vectorized=True, paired=False, n_resamples=th.n_resamples,
                               confidence_level=th.level, method="percentile", random_state=np.random.default_rng(_seed(key)))
        mv.ci_low, mv.ci_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    change = f"{abs(mv.ratio - 1):.1%} {'slower' if mv.ratio > 1 else 'faster'}"
    ci = f"{th.level:.0%} CI {mv.ci_low:.3f}-{mv.ci_high:.3f}"
    if disturbed and not th.include_disturbed:
        mv.reason = f"{disturbed}; median {change} ({ci}) not judged"
        return mv
    lo, hi = th.band()
    significant = mv.p_value < th.alpha
    if lo < mv.ci_low and mv.ci_high < hi:
        mv.verdict, mv.reason = UNCHANGED, f"median {change}, {ci} within ±{th.min_effect:.0%}"
        return mv
    beyond = (mv.ci_low > hi) or (mv.ci_high < lo)
    if not (significant and beyond):
        why = f"p = {mv.p_value:.2g}" + ("" if significant else f" >= {th.alpha:g}")
        mv.reason = f"median {change}, {ci}, {why}: cannot tell a {th.min_effect:.0%} change from noise"
        return mv
    bar, source = noise_bar(th, history_p50, pooled)
    noise = f"run-to-run noise ±{math.exp(bar) - 1:.1%} ({th.noise_z:g} sd; {source})"
    # With enough history, the step is measured from the centre of the cell's earlier runs, not from the
    # one base run, which may itself sit at either end of its run-to-run spread.
    centre = float(np.median(history_p50)) if history_p50 and len(history_p50) >= th.min_history else None
    step = mv.head / centre if centre else mv.ratio
    against = f" (vs the median of {len(history_p50)} earlier runs: {abs(step - 1):.1%} {'slower' if step > 1 else 'faster'})" if centre else ""
    if abs(math.log(step)) <= bar or (step > 1) != (mv.ratio > 1):
        mv.reason = f"median {change}, {ci}, p = {mv.p_value:.2g}, but within this cell's {noise}{against}"
        return mv
    mv.verdict = REGRESSED if mv.ratio > 1 else IMPROVED
    mv.reason = f"median {change}, {ci}, p = {mv.p_value:.2g}, beyond {noise}{against}"
    return mv


def noise_bar(th: Thresholds, history_p50: list[float] | None, pooled: tuple[float, int] | None = None) -> tuple[float, str]:
    """The bar on |log ratio| that run-to-run noise sets, and where its estimate came from.

    ``pooled`` = (sd, cells): the run-to-run sd seen across the other cells of this very comparison
    (:func:`pooled_noise`); while a cell's own history is short, the bar is never below it, so a night
    on which every cell moved by tens of percent in both directions flags none of them.
    """
    n = len(history_p50 or [])
    est = run_noise(history_p50) if n >= 2 else None
    if n < th.min_history and pooled is not None and pooled[0] > max(th.prior_noise, est or 0.0):
        return th.noise_z * math.sqrt(2) * pooled[0], f"spread of this comparison's {pooled[1]} cells; {n} earlier runs of this cell"
    if est is not None and n >= th.min_history:
        # head vs the median of n earlier runs: the spread of one run plus the centre's own uncertainty
        return th.noise_z * math.sqrt(1 + 1 / n) * est, f"from {n} earlier runs"
    elif est is not None:
        sd, source = max(th.prior_noise, est), f"{n} earlier runs, at least the {th.prior_noise:.0%} prior"
    else:
        sd, source = th.prior_noise, f"{th.prior_noise:.0%} prior: no earlier runs of this cell"
    return th.noise_z * math.sqrt(2) * sd, source


# -- accuracy, memory, size -----------------------------------------------------------------

def accuracy_verdict(base: float | None, head: float | None, th: Thresholds) -> MetricVerdict | None:
    """Top-1 in percentage points: beyond the tolerance either way is a change (it is deterministic per artifact)."""
    if base is None or head is None:
        return None
    delta = (head - base) * 100
    mv = MetricVerdict("accuracy", UNCHANGED, base * 100, head * 100, delta=delta, unit="% top-1")
    if delta < -th.accuracy_tolerance_pts:
        mv.verdict = REGRESSED
    elif delta > th.accuracy_tolerance_pts:
        mv.verdict = IMPROVED
    mv.reason = f"top-1 {delta:+.2f} pts (tolerance {th.accuracy_tolerance_pts:g})"
    return mv


def threshold_verdict(metric: str, base: float | None, head: float | None, rel: float, floor: float, unit: str) -> MetricVerdict | None:
    """Lower is better: a change needs both the relative threshold and the absolute floor."""
    if base is None or head is None or base <= 0:
        return None
    delta, ratio = head - base, head / base
    mv = MetricVerdict(metric, UNCHANGED, base, head, ratio=ratio, delta=delta, unit=unit)
    if ratio > 1 + rel and delta > floor:
        mv.verdict = REGRESSED
    elif ratio < 1 - rel and -delta > floor:
        mv.verdict = IMPROVED
    mv.reason = f"{ratio - 1:+.1%} ({delta:+.4g} {unit}; threshold {rel:.0%} and {floor:g} {unit})"
    return mv


# -- cells -----------------------------------------------------------------------------------

def coordinates(cell: CellRecord) -> CellId:
    """What a cell is matched on across runs: its identity."""
    return CellId.of(cell)


def disturbance(cell: CellRecord) -> str | None:
    """Why a cell's latency cannot be trusted (contended or throttled while measuring), or None."""
    r = cell.result
    if r is None:
        return None
    if r.contention is not None and r.contention.contended:
        share = r.contention.other_cpu_share
        return "contended" + (f" (other processes used {share:.0%} of the CPU)" if share is not None else "")
    throttled = texts(r.flags, "throttled")
    if throttled:
        return throttled[0]
    if (r.device or {}).get("throttled"):  # the device report, where no flag was recorded for it
        return "throttled"
    return None


def _peak_rss(cell: CellRecord) -> float | None:
    return cell.result.memory.peak_rss_mib if cell.result and cell.result.memory else None


def _top1(cell: CellRecord) -> float | None:
    return cell.result.accuracy.top1 if cell.result and cell.result.accuracy else None


def _size(cell: CellRecord) -> float | None:
    v = cell.facts.get("artifact", {}).get("size_bytes")
    return float(v) if v is not None else None


def _option_notes(base: CellRecord, head: CellRecord) -> list[str]:
    keys = sorted(set(base.options) | set(head.options))
    return [f"option {k}: {base.options.get(k)!r} -> {head.options.get(k)!r}" for k in keys if base.options.get(k) != head.options.get(k)]


def summarised_latency(base: CellRecord, head: CellRecord, dropped: list[str]) -> MetricVerdict:
    """The latency of a pair where a side's samples were dropped (``dropped``: which, in words): the stored
    medians and their ratio, for the record, and inconclusive: no test, no interval."""
    b, h = (c.result.latency.p50_ms if c.result and c.result.latency else None for c in (base, head))
    mv = MetricVerdict("latency", INCONCLUSIVE, b, h, unit="ms")
    change = ""
    if b and h:
        mv.ratio = h / b
        change = f"; stored medians {abs(mv.ratio - 1):.1%} {'slower' if mv.ratio > 1 else 'faster'}, not judged"
    mv.reason = "; ".join(dropped) + change
    return mv


def compare_cell(base: CellRecord, head: CellRecord, th: Thresholds, history_p50: list[float] | None = None,
                 pooled: tuple[float, int] | None = None, runs: tuple[str | None, str | None] = (None, None)) -> CellComparison:
    """Every metric of one matched cell, and the cell's verdict (regressed if any metric regressed).
    ``runs``: the base and head run ids, named when a side's samples were dropped by ``edgebench gc``."""
    out = CellComparison(head.cell_key, *coordinates(head).parts(), status="compared", verdict=UNCHANGED, notes=_option_notes(base, head))
    if head.status != "ok":
        out.status, out.verdict = ("failed-in-head", REGRESSED) if base.status == "ok" and head.status == "failed" else ("not-measured", INCONCLUSIVE)
        out.notes.append(f"head {head.status}: {head.error}")
        return out
    if base.status != "ok":
        out.status, out.verdict = "failed-in-base" if base.status == "failed" else "not-measured", INCONCLUSIVE
        out.notes.append(f"base {base.status}: {base.error}")
        return out
    reasons = [f"{side}: {d}" for side, d in (("base", disturbance(base)), ("head", disturbance(head))) if d]
    dropped = [f"samples of run {run or side} were dropped by edgebench gc"
               for side, run, cell in (("base", runs[0], base), ("head", runs[1], head)) if cell.samples_dropped]
    if dropped:
        lat = summarised_latency(base, head, dropped)
    else:
        lat = latency_verdict(base.result.samples_ns, head.result.samples_ns, th, key=head.cell_key,
                              disturbed="; ".join(reasons) or None, history_p50=history_p50, pooled=pooled,
                              processes=(base.result.process_samples, head.result.process_samples))
    metrics = [lat, accuracy_verdict(_top1(base), _top1(head), th),
               threshold_verdict("memory", _peak_rss(base), _peak_rss(head), th.memory_threshold, th.memory_floor_mib, "MiB"),
               threshold_verdict("size", _size(base), _size(head), th.size_threshold, 0.0, "bytes")]
    out.metrics = [m for m in metrics if m is not None]
    out.verdict = overall([m.verdict for m in out.metrics])
    return out


def overall(verdicts: list[str]) -> str:
    """Regressed beats everything; then an inconclusive latency; then improved; else unchanged."""
    for v in (REGRESSED, INCONCLUSIVE, IMPROVED):
        if v in verdicts:
            return v
    return UNCHANGED


MIN_POOLED = 4  # cells needed to estimate run-to-run noise from one comparison


def pooled_noise(pairs: list[tuple[CellRecord, CellRecord]]) -> tuple[float, int] | None:
    """Run-to-run sd of log median latency estimated across the cells of one comparison.

    Each undisturbed pair gives log(head p50 / base p50); without a change these scatter with sd
    sqrt(2) x the run-to-run sd. The MAD around their median is robust to the few cells that really
    changed, and to a shift of the whole machine (which moves the median, not the spread).
    """
    logs = [math.log(h.result.latency.p50_ms / b.result.latency.p50_ms) for b, h in pairs
            if b.status == h.status == "ok" and b.result and h.result and b.result.latency and h.result.latency
            and not disturbance(b) and not disturbance(h)]
    if len(logs) < MIN_POOLED:
        return None
    arr = np.asarray(logs)
    return float(np.median(np.abs(arr - np.median(arr)))) * 1.4826 / math.sqrt(2), len(logs)


def compare_cells(base_cells: list[CellRecord], head_cells: list[CellRecord], th: Thresholds,
                  history: dict[CellId, list[float]] | None = None, runs: tuple[str | None, str | None] = (None, None)) -> list[CellComparison]:
    """Match cells by identity and compare each pair; cells on one side only are listed as such.
    ``history``: each head cell's p50 in its earlier clean runs, by identity; ``runs``: the base and head run ids."""
    base_by = {coordinates(c): c for c in base_cells}
    head_by = {coordinates(c): c for c in head_cells}
    pooled = pooled_noise([(base_by[k], h) for k, h in head_by.items() if k in base_by])
    out = []
    for k, head in head_by.items():
        base = base_by.get(k)
        if base is None:
            out.append(CellComparison(head.cell_key, *k.parts(), status="only-in-head", verdict=INCONCLUSIVE, notes=["new cell: nothing to compare with"]))
            continue
        out.append(compare_cell(base, head, th, (history or {}).get(k), pooled, runs))
    for k, base in base_by.items():
        if k not in head_by:
            out.append(CellComparison(base.cell_key, *k.parts(), status="only-in-base", verdict=INCONCLUSIVE, notes=["not in the head run"]))
    return out
