"""measure.processes: a cell measured by several worker processes, its samples pooled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgebench.bench.config import load_suite
from edgebench.bench.board import per_process, pool
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Contention, MeasureSettings, MemoryStats
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.stats import summarize


def part(median_ms: float, n: int, seed: int, *, rss: float = 70.0, contended: bool = False, throttled: bool = False,
         warnings: list[str] | None = None) -> CellResult:
    rng = np.random.default_rng(seed)
    samples = [int(v) for v in rng.lognormal(np.log(median_ms * 1e6), 0.01, n)]
    return CellResult("ok", evidence=Evidence("onnxruntime", providers=["cpu"]), load_s=0.01, warmup_runs=10, warmup_s=0.5, samples_ns=samples,
                      latency=summarize(samples, 1), memory=MemoryStats(rss - 10, rss, 10.0, None, None, None, 0.01, 5),
                      accuracy=Accuracy(360, 0.97, 1.0), contention=Contention(0.3 if contended else 0.01, 0.5, 2, contended),
                      flags=[Flag.from_data(w) for w in warnings or []], worker_wall_s=3.0,
                      device={"timeline": [{"t": 0.0, "phase": "measure"}], "throttled": throttled,
                              "throttle_reasons": ["pi: soft temperature limit active"] if throttled else [], "temp_max_c": 50.0 + seed})


def test_each_process_gets_its_share_of_the_floors_and_the_full_warm_up():
    s = MeasureSettings(warmup_runs=10, warmup_seconds=0.5, min_runs=100, min_seconds=2.0, max_runs=1000, max_seconds=60, processes=3)
    p = per_process(s)
    assert (p.min_runs, p.min_seconds, p.max_runs, p.max_seconds, p.processes) == (34, pytest.approx(2 / 3), 334, 20.0, 1)
    assert (p.warmup_runs, p.warmup_seconds) == (10, 0.5)
    assert per_process(MeasureSettings()) == MeasureSettings()


def test_pooling_concatenates_samples_and_keeps_the_worst_state():
    parts = [part(1.0, 100, 1), part(1.5, 100, 2, rss=90.0, contended=True, warnings=["high variance: CoV 9.0% > 5%"]),
             part(1.0, 100, 3, throttled=True)]
    pooled = pool(parts, 1, MeasureSettings(processes=3))
    assert pooled.samples_ns == parts[0].samples_ns + parts[1].samples_ns + parts[2].samples_ns
    assert pooled.latency == summarize(pooled.samples_ns, 1) and pooled.processes == 3
    assert pooled.process_p50_ms == [p.latency.p50_ms for p in parts]
    assert pooled.memory.peak_rss_mib == 90.0 and pooled.contention.contended is True and pooled.contention.other_cpu_share == 0.3
    assert pooled.device["throttled"] is True and pooled.device["throttle_reasons"] == ["pi: soft temperature limit active"]
    assert [r["process"] for r in pooled.device["timeline"]] == [0, 1, 2] and pooled.device["temp_max_c"] == 53.0
    assert (pooled.warmup_runs, pooled.worker_wall_s) == (30, 9.0)
    assert any(w.startswith("processes disagree: per-process p50") for w in pooled.warnings)
    variance = [w for w in pooled.warnings if w.startswith("high variance")]
    assert len(variance) == 1 and f"{pooled.latency.cov:.1%}" in variance[0]  # recomputed on the pooled samples


def test_agreeing_processes_raise_no_warning():
    pooled = pool([part(1.0, 200, 1), part(1.0, 200, 2)], 1, MeasureSettings(processes=2))
    assert pooled.warnings == [] and pooled.contention.contended is False and pooled.device["throttled"] is False


@pytest.mark.slow
def test_a_run_with_three_processes_per_cell(built, write_suite, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built.cache_root, home / "cache")
    suite = write_suite("s.yaml", {"models": ["small_cnn"], "backends": [{"name": "onnxruntime", "threads": 1}],
                                   "measure": {"warmup_runs": 3, "warmup_seconds": 0.0, "min_runs": 90, "min_seconds": 0.3, "processes": 3}})
    runner = Runner(Paths(home=home), log=lambda m: None)
    summary = runner.run(load_suite(suite))
    [cell] = runner.store.cells(summary.run_id)
    assert cell.status == "ok", cell.error
    r = cell.result
    assert r.processes == 3 and len(r.process_p50_ms) == 3 and len(r.samples_ns) >= 90
    assert r.warmup_runs >= 9 and r.accuracy.top1 > 0.5
    cells_dir = Paths(home=home).cells_dir(summary.run_id)
    assert sorted(p.name for p in cells_dir.glob("*-p?.result.json")) == [f"cell-0000-p{i}.result.json" for i in (1, 2, 3)]
