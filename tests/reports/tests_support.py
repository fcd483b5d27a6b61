"""Synthetic latency series for the regression tests: AR(1) log-noise (autocorrelated, as on a real board)."""

from __future__ import annotations

import numpy as np

from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Contention, MemoryStats
from edgebench.bench.stats import summarize
from edgebench.bench.store import CellRecord


def ar1_samples(median_ms: float, n: int, seed: int, phi: float = 0.6, sd: float = 0.05) -> list[int]:
    """``n`` latencies (ns) around ``median_ms`` with AR(1) noise of coefficient ``phi`` on the log scale."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, sd * np.sqrt(1 - phi ** 2), n)
    z = np.empty(n)
    z[0] = rng.normal(0, sd)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + e[i]
    return [int(v) for v in median_ms * 1e6 * np.exp(z)]


def cell_with(samples: list[int], recipe: str = "dense", batch: int = 1, target: str = "local", contended: bool = False,
              flags: list[Flag] | None = None, threads: int = 2, top1: float = 0.98, rss: float = 70.0, size: int = 112_451) -> CellRecord:
    key = f"small_cnn/{recipe}/onnxruntime/fp32/b{batch}/{target}"
    result = CellResult("ok", samples_ns=list(samples), latency=summarize(samples, batch) if samples else None,
                        memory=MemoryStats(rss - 14, rss, 14.0, None, None, None, 0.01, 10), accuracy=Accuracy(360, top1, 1.0),
                        contention=Contention(0.3 if contended else 0.01, 0.5, 2, contended), flags=list(flags or []))
    return CellRecord(key, "small_cnn", recipe, "onnxruntime", "fp32", batch, target, "ok", options={"threads": threads},
                      facts={"artifact": {"size_bytes": size}}, result=result)
