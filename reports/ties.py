"""The one tie rule of the recommendation, and its wording: what ``edgebench recommend``, report.md,
report.html and report.json all apply and print.

The best beats a candidate only when the interval of every ratio compared (candidate / best of the
objective's statistics: p90 and median, or mean and median per item; :mod:`edgebench.reports.stats`)
lies wholly above 1 *and* both cells were measured in at least ``MIN_PROCESSES`` worker processes, so
that the intervals include the variance between processes. Anything else is a tie: an interval that
includes 1 or lies below it (the statistics then point different ways), or a cell of one process ("not
enough processes to call a win").

One process shows nothing of the variance between processes, so its interval (contiguous blocks,
:mod:`~edgebench.reports.stats`) cannot decide a small margin. It still decides a margin no process mode
makes: a comparison involving a one-process cell is a win when every interval lies wholly above
``ONE_PROCESS_MARGIN`` (2x). On the 2-core VM edgebench is developed on, one cell's median moved 1.5x
between processes (bench/board.py), and in four stored default runs measured with one process per cell,
the 40 same-computation pairs (dense vs l1-unstructured-50) came out at most 1.71x apart. Old stores and
suites with ``measure.processes: 1`` still get a win for a runtime that is beyond doubt 2x faster, and
nothing closer.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgebench.reports.stats import MIN_PROCESSES, RatioCI

ONE_PROCESS_MARGIN = 2.0


def rule(statistics: Sequence[str] = ("p90", "median")) -> str:
    """The rule in words, for the statistics an objective compares."""
    return (f"a win needs the 95% interval of every latency ratio compared ({' and '.join(statistics)}; the interval resamples "
            f"worker processes, then samples) wholly above 1, with both cells measured in at least {MIN_PROCESSES} processes "
            f"(a cell of one process: wholly above {ONE_PROCESS_MARGIN:g}, beyond any process-to-process swing); otherwise it is a tie "
            "(an interval that includes 1 or lies below it, statistics that point different ways, or too few processes)")


def tie_reason(cis: list[RatioCI]) -> str | None:
    """The rule applied to a candidate's intervals against the best: None when the best beats it, else
    why they tie."""
    open_ = [ci for ci in cis if not ci.separated]
    if open_:
        below = [ci.statistic for ci in open_ if ci.below]
        parts = [f"{ci.statistic} interval {'below' if ci.below else 'includes'} 1" for ci in open_]
        return "; ".join(parts) + ("" if not below or len(below) == len(cis) else " (the statistics point different ways)")
    thin = _short_of_processes(cis)
    if thin:
        procs = "/".join(map(str, thin[0].processes))
        return (f"not enough processes to call a win ({procs} worker processes; an interval needs {MIN_PROCESSES} per cell "
                f"to include between-process variance, or to lie above {ONE_PROCESS_MARGIN:g})")
    return None


def _short_of_processes(cis: list[RatioCI]) -> list[RatioCI]:
    """The intervals too few processes keep from deciding (one-process cells, not beyond the margin)."""
    return [ci for ci in cis if not ci.decisive and ci.low <= ONE_PROCESS_MARGIN]


def too_few_processes(cis: list[RatioCI]) -> bool:
    """Whether the intervals would call a win but for too few worker processes: every interval wholly
    above 1, and one of them from a cell of one process, not beyond the margin."""
    return all(ci.separated for ci in cis) and bool(_short_of_processes(cis))


def disagreement(cis: list[RatioCI]) -> str | None:
    """The ratios in words when the statistics compared point different ways (one ratio above 1 and
    another below, or one interval wholly above 1 and another not); else None."""
    if len(cis) < 2:
        return None
    sides = {ci.ratio > 1 for ci in cis if ci.ratio != 1}
    if len(sides) < 2 and len({ci.separated for ci in cis}) < 2:
        return None
    return ", ".join(f"{ci.statistic} {ci.ratio:.3f} [{ci.low:.3f}-{ci.high:.3f}]" for ci in cis)
