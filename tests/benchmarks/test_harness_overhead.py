"""Harness benchmarks (``make bench``): does edgebench's own machinery bias what it measures?

Each benchmark prints a ratio. Timing goals live here, not in unit tests, because this machine is
shared and noisy; the ratios compare two measurements taken back to back in the same process.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from edgebench.backends import base
from edgebench.bench.measure import ContentionMeter, MemorySampler, time_runs
from edgebench.bench.contracts.results import MeasureSettings

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def ort_session(tmp_path_factory: pytest.TempPathFactory):
    from edgebench.models import recipes
    from edgebench.models.cache import Cache
    from edgebench.bench.prepare import Preparer

    cache = Cache(tmp_path_factory.mktemp("bench-cache"))
    prep = Preparer(cache, log=lambda m: None)
    art = prep.artifact("small_cnn", recipes.load("dense"), "onnxruntime", "fp32")
    inputs = np.load(prep.dense("small_cnn").dir / "eval.npz")["inputs"]
    session = base.get("onnxruntime").load(Path(art.dir / "model.onnx"), "fp32", {"threads": 1})
    return session, np.ascontiguousarray(inputs[:1])


def _median_ms(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def _load_note() -> str:
    meter = ContentionMeter()
    meter.start()
    import time

    time.sleep(0.5)
    c = meter.stop()
    return f"other processes used {c.other_cpu_share:.1%} of the CPU just before" if c.other_cpu_share is not None else "CPU load unknown"


def test_harness_loop_vs_pytest_benchmark(benchmark, ort_session) -> None:
    """edgebench's timing loop vs pytest-benchmark's timer on the same ONNX Runtime session."""
    session, x = ort_session
    benchmark.pedantic(session.run, args=(x,), rounds=2000, iterations=1, warmup_rounds=50)
    reference_ms = benchmark.stats.stats.median * 1e3
    timed = time_runs(lambda: session.run(x), MeasureSettings(min_runs=2000, min_seconds=1.0))
    ours_ms = _median_ms(timed.samples_ns)
    ratio = ours_ms / reference_ms
    benchmark.extra_info.update(edgebench_median_ms=ours_ms, pytest_benchmark_median_ms=reference_ms, ratio=ratio)
    print(f"\n[harness vs pytest-benchmark] median {ours_ms * 1e3:.1f} us vs {reference_ms * 1e3:.1f} us: ratio {ratio:.3f} ({_load_note()})")


def test_memory_sampler_overhead(benchmark, ort_session) -> None:
    """Latency with the 10 ms RSS / 100 ms USS sampler running vs without it, alternated 5 times."""
    session, x = ort_session
    settings = MeasureSettings(min_runs=500, min_seconds=0.5)
    on, off = [], []
    for _ in range(5):
        sampler = MemorySampler().start()
        on.append(_median_ms(time_runs(lambda: session.run(x), settings).samples_ns))
        sampler.stop()
        off.append(_median_ms(time_runs(lambda: session.run(x), settings).samples_ns))
    benchmark.pedantic(session.run, args=(x,), rounds=200, iterations=1)
    ratio = statistics.median(on) / statistics.median(off)
    benchmark.extra_info.update(sampler_on_ms=on, sampler_off_ms=off, ratio=ratio)
    print(f"\n[memory sampler] median p50 with sampler {statistics.median(on) * 1e3:.1f} us, without {statistics.median(off) * 1e3:.1f} us: ratio {ratio:.3f} ({_load_note()})")


def test_worker_process_overhead(benchmark, ort_session, tmp_path: Path) -> None:
    """Wall time of one cell in a child worker beyond the time spent measuring (start-up, import, eval)."""
    from edgebench.targets.transport import run_worker
    from edgebench.bench.worker import CellSpec
    from edgebench.models import recipes
    from edgebench.models.cache import Cache
    from edgebench.bench.prepare import Preparer

    prep = Preparer(Cache(tmp_path / "cache"), log=lambda m: None)
    art = prep.artifact("small_cnn", recipes.load("dense"), "onnxruntime", "fp32")
    spec = CellSpec("bench/cell", "onnxruntime", "fp32", str(art.dir / "model.onnx"), 1, str(prep.dense("small_cnn").dir / "eval.npz"),
                    {"threads": 1}, MeasureSettings(warmup_runs=1, warmup_seconds=0, min_runs=10, min_seconds=0))

    def one() -> float:
        out = run_worker(spec, tmp_path / "cells", 120)
        assert out.result.status == "ok", out.result.error
        return out.result.worker_wall_s

    walls = [one() for _ in range(3)]
    benchmark.pedantic(one, rounds=3, iterations=1)
    print(f"\n[worker] in-worker wall per minimal cell (load + eval of 360 images, no import time): median {statistics.median(walls) * 1e3:.0f} ms; "
          f"whole child incl. interpreter start: median {benchmark.stats.stats.median * 1e3:.0f} ms ({_load_note()})")
