"""Export a stored run in pytest-benchmark's JSON format (5.x), so ``pytest-benchmark compare`` and the tools
built on its files read edgebench results.

One benchmark per measured cell: ``name`` is the cell key, ``group`` the model / batch / target (so
``compare --group-by group`` lines up recipes and backends), ``params`` the cell's coordinates. Stats are
in seconds per batch, computed from every stored sample with pytest-benchmark's own definitions (its
quartile method, Tukey fences, ``outliers`` as "stddev;iqr" counts: bench/stats.py computes them, the same
functions that fill each cell's LatencyStats, so the export and the report agree). pytest-benchmark itself is
not needed to write the file.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.stats import TUKEY, outlier_counts, quartiles
from edgebench.bench.store import CellRecord, RunRecord, Store

FORMAT_VERSION = "5.3.1"  # the pytest-benchmark version whose file layout this writes


def stats(seconds: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for per-round times in seconds."""
    data = sorted(seconds)
    n = len(data)
    mean = statistics.fmean(data)
    sd = statistics.stdev(data) if n > 1 else 0.0
    arr = np.asarray(data)
    q1, q3 = quartiles(arr)
    iqr = q3 - q1
    total = sum(data)
    sd_out, iqr_out = outlier_counts(arr, mean, sd, q1, q3)
    return {
        "min": data[0], "max": data[-1], "mean": mean, "stddev": sd, "rounds": n, "median": statistics.median(data),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": sd_out, "outliers": f"{sd_out};{iqr_out}",
        "ld15iqr": data[bisect_left(data, q1 - TUKEY * iqr)] if n > 1 else data[0],
        "hd15iqr": data[bisect_right(data, q3 + TUKEY * iqr) - 1] if n > 1 else data[0],
        "ops": n / total if total else 0.0, "total": total, "iterations": 1,
    }


def _benchmark(cell: CellRecord, with_data: bool) -> dict[str, Any]:
    seconds = [v / 1e9 for v in cell.result.samples_ns]
    params = {"model": cell.model, "recipe": cell.recipe, "backend": cell.backend, "precision": cell.precision,
              "batch": cell.batch, "target": cell.target}
    extra = {"threads": cell.options.get("threads"), "batch_items": cell.batch,
             "contended": bool(cell.result.contention and cell.result.contention.contended)}
    if cell.result.accuracy:
        extra["top1"] = cell.result.accuracy.top1
    if cell.result.memory:
        extra["peak_rss_mib"] = cell.result.memory.peak_rss_mib
    st = stats(seconds)
    if with_data:
        st["data"] = seconds
    return {
        "group": f"{cell.model} b{cell.batch} {cell.target}",
        "name": cell.cell_key,
        "fullname": f"edgebench::{cell.cell_key}",
        "params": params,
        "param": "-".join(str(v) for v in params.values()),
        "extra_info": extra,
        "options": {"disable_gc": True, "timer": "perf_counter_ns", "min_rounds": st["rounds"], "max_time": None,
                    "min_time": None, "warmup": cell.result.warmup_runs or 0},
        "stats": st,
    }


def _machine_info(fp: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": fp.get("hostname", platform.node()), "processor": fp.get("cpu_model", ""), "machine": fp.get("machine", ""),
        "python_implementation": fp.get("python_implementation", ""), "python_version": fp.get("python", ""),
        "release": fp.get("kernel", ""), "system": "Linux", "cpu": {"brand_raw": fp.get("cpu_model", ""), "count": fp.get("logical_cpus")},
        "edgebench_fingerprint": fp,
    }


def document(run: RunRecord, cells: list[CellRecord], fingerprint: dict[str, Any], with_data: bool = False) -> dict[str, Any]:
    """The whole JSON document for one run (cells without samples are left out: nothing to time)."""
    commit = (run.git_commit or "").removesuffix("-dirty")
    return {
        "machine_info": _machine_info(fingerprint),
        "commit_info": {"id": commit or None, "time": run.created_at.isoformat(), "author_time": run.created_at.isoformat(),
                        "dirty": bool(run.git_commit and run.git_commit.endswith("-dirty")), "project": "edgebench",
                        "branch": None, "edgebench_run": run.id, "suite": run.suite_name},
        "benchmarks": [_benchmark(c, with_data) for c in cells if c.status == "ok" and c.result and c.result.samples_ns],
        "datetime": (run.finished_at or run.created_at or dt.datetime.now(dt.timezone.utc)).isoformat(),
        "version": FORMAT_VERSION,
    }


def export(store: Store, run_id: str, out: Path, with_data: bool = False) -> tuple[Path, int]:
    """Write ``out``; returns the path and the number of benchmarks in it. A run whose samples
    ``edgebench gc`` dropped is refused (one line): pytest-benchmark's statistics need every sample."""
    run = store.run(run_id)
    if run.samples_dropped_at is not None:
        raise EdgebenchError(f"run {run.id}: its samples were dropped by edgebench gc on {run.samples_dropped_at:%Y-%m-%d}, and a "
                             "pytest-benchmark export needs them; export a run whose samples are kept (edgebench gc --keep-last)")
    cells = store.cells(run.id)
    envs = store.environments(run.id)
    doc = document(run, cells, next(iter(envs.values()), {}), with_data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return out, len(doc["benchmarks"])
