"""One cell measured by several worker processes, pooled into one result (``measure.processes``).

Why: one process's median is a draw, not the cell's. Address-space layout, memory placement and the
core a process lands on put some processes of the same cell in a slower or faster mode for their whole
life (pyperf spawns 20 processes per benchmark for this reason). On the 2-core VM edgebench is developed
on, one small cell's p50 came out at 0.033 ms in some runs and 0.050 ms in others; a regression check
comparing two single-process runs then sees a 1.5x "change" whenever the two draws differ. Pooling the
samples of N processes per cell puts several draws into every run, so runs differ less.

Each process keeps the full warm-up and gets 1/N of the measurement floors and caps; the samples are
concatenated in process order (the regression tests' blocks stay contiguous within a process).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from edgebench.bench.results import CellResult, Contention, MeasureSettings
from edgebench.bench.stats import summarize
from edgebench.bench.worker import variance_warning


def per_process(settings: MeasureSettings) -> MeasureSettings:
    """The floors and caps one of ``settings.processes`` workers measures to (warm-up unchanged)."""
    n = max(1, settings.processes)
    if n == 1:
        return settings
    return dataclasses.replace(settings, processes=1, min_runs=math.ceil(settings.min_runs / n), min_seconds=settings.min_seconds / n,
                               max_runs=math.ceil(settings.max_runs / n), max_seconds=settings.max_seconds / n)


def pool(parts: list[CellResult], batch: int, settings: MeasureSettings) -> CellResult:
    """One result from the results of the same cell's worker processes (all ``ok``)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    samples = [s for p in parts for s in p.samples_ns]
    latency = summarize(samples, batch)
    memory = max((p.memory for p in parts if p.memory is not None), key=lambda m: m.peak_rss_mib, default=None)
    energies = [p.energy_mj_per_inference for p in parts if p.energy_mj_per_inference is not None]
    pooled = dataclasses.replace(
        first,
        samples_ns=samples, latency=latency, memory=memory,
        warmup_runs=sum(p.warmup_runs or 0 for p in parts), warmup_s=sum(p.warmup_s or 0.0 for p in parts),
        worker_wall_s=sum(p.worker_wall_s or 0.0 for p in parts),
        contention=_contention([p.contention for p in parts if p.contention is not None]),
        device=_device([p.device for p in parts]),
        energy_mj_per_inference=sum(energies) / len(energies) if energies else None,
        processes=len(parts),
        process_p50_ms=[p.latency.p50_ms for p in parts if p.latency is not None],
    )
    pooled.warnings = _warnings(parts, latency.cov, settings)
    return pooled


def _contention(parts: list[Contention]) -> Contention | None:
    """The worst process decides: a cell is contended if any of its processes was."""
    if not parts:
        return None
    others = [c.other_cpu_share for c in parts if c.other_cpu_share is not None]
    own = [c.own_cpu_share for c in parts if c.own_cpu_share is not None]
    steal = [c.steal_share for c in parts if c.steal_share is not None]
    return Contention(max(others) if others else None, sum(own) / len(own) if own else None, parts[0].logical_cpus,
                      any(c.contended for c in parts), max(steal) if steal else None)


def _device(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The first process's device report, with every process's timeline and the worst state of any."""
    reports = [d for d in parts if d]
    if not reports:
        return None
    out = dict(reports[0])
    out["timeline"] = [{**row, "process": i} for i, d in enumerate(reports) for row in d.get("timeline", [])]
    out["throttled"] = any(d.get("throttled") for d in reports)
    out["throttle_reasons"] = list(dict.fromkeys(r for d in reports for r in d.get("throttle_reasons") or []))
    temps = [d["temp_max_c"] for d in reports if d.get("temp_max_c") is not None]
    out["temp_max_c"] = max(temps) if temps else None
    out["temp_end_c"] = reports[-1].get("temp_end_c")
    return out


def _warnings(parts: list[CellResult], cov: float, settings: MeasureSettings) -> list[str]:
    """Each process's warnings once, with the variance warning recomputed on the pooled samples."""
    seen = [w for p in parts for w in p.warnings if not w.startswith("high variance")]
    out = list(dict.fromkeys(seen))
    if high := variance_warning(cov, settings):
        out.insert(0, high)
    p50 = [p.latency.p50_ms for p in parts if p.latency is not None]
    if len(p50) > 1 and min(p50) > 0 and max(p50) / min(p50) > 1 + settings.cov_warn * 2:
        out.append(f"processes disagree: per-process p50 {min(p50):.4g}-{max(p50):.4g} ms ({max(p50) / min(p50):.2f}x)")
    return out
