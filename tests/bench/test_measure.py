"""Measurement primitives (bench/measure.py): the timing loop's floors and caps, memory sampling,
CPU contention. Nothing here asserts how fast the machine is; only floors, counts and comparisons."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from edgebench.bench import measure
from edgebench.bench.measure import MIB, ContentionMeter, MemorySampler, time_runs
from edgebench.bench.contracts.results import MeasureSettings


def settings(**kw) -> MeasureSettings:
    base = {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 1, "min_seconds": 0.0}
    base.update(kw)
    return MeasureSettings(**base)


@pytest.fixture
def fake_clock(monkeypatch):
    """measure.time with a perf_counter_ns that advances exactly 1 ms per call (perf_counter stays real)."""
    state = {"ns": 0}

    def perf_counter_ns() -> int:
        state["ns"] += 1_000_000
        return state["ns"]

    fake = types.SimpleNamespace(perf_counter=time.perf_counter, perf_counter_ns=perf_counter_ns, sleep=time.sleep)
    monkeypatch.setattr(measure, "time", fake)
    return state


# -- time_runs with a deterministic clock ------------------------------------------------------

def test_time_floor_extends_past_count_floor_exactly(fake_clock):
    # start=1ms; sample k spans 1 ms and ends at (2k+1) ms, so elapsed = 2k ms; 100 ms -> k = 50
    out = time_runs(lambda: None, settings(min_runs=5, min_seconds=0.1))
    assert len(out.samples_ns) == 50
    assert set(out.samples_ns) == {1_000_000}
    assert out.stopped_by_cap is None


def test_count_floor_extends_past_time_floor_exactly(fake_clock):
    out = time_runs(lambda: None, settings(min_runs=30, min_seconds=0.01))
    assert len(out.samples_ns) == 30
    assert out.stopped_by_cap is None


def test_max_runs_cap_stops_and_says_so(fake_clock):
    out = time_runs(lambda: None, settings(min_runs=100, min_seconds=0.0, max_runs=7))
    assert len(out.samples_ns) == 7
    assert out.stopped_by_cap is not None and "max_runs=7" in out.stopped_by_cap


def test_max_seconds_cap_stops_and_says_so(fake_clock):
    # elapsed = 2k ms reaches 20 ms at k = 10, long before the 1 s floor
    out = time_runs(lambda: None, settings(min_runs=1, min_seconds=1.0, max_seconds=0.02))
    assert len(out.samples_ns) == 10
    assert out.stopped_by_cap is not None and "max_seconds=0.02" in out.stopped_by_cap


# -- time_runs with real time --------------------------------------------------------------------

def test_time_floor_with_a_sleeping_fn():
    t0 = time.perf_counter()
    out = time_runs(lambda: time.sleep(0.001), settings(min_runs=5, min_seconds=0.1))
    wall = time.perf_counter() - t0
    assert wall >= 0.1
    assert len(out.samples_ns) > 5  # the count floor alone would stop at 5
    assert len(out.samples_ns) <= 100  # every sample sleeps at least 1 ms
    assert all(s >= 1_000_000 for s in out.samples_ns)
    # the samples cover (nearly all of) the time floor; the gaps between them are microseconds
    assert sum(out.samples_ns) >= 0.08e9
    assert out.stopped_by_cap is None


def test_count_floor_with_a_sleeping_fn():
    out = time_runs(lambda: time.sleep(0.001), settings(min_runs=30, min_seconds=0.0))
    assert len(out.samples_ns) == 30


def test_warmup_count_floor_is_respected():
    calls = []
    out = time_runs(lambda: calls.append(1), settings(warmup_runs=7, warmup_seconds=0.0, min_runs=3))
    assert out.warmup_runs == 7
    assert len(calls) == 7 + len(out.samples_ns) == 10


def test_warmup_time_floor_is_respected():
    out = time_runs(lambda: time.sleep(0.001), settings(warmup_runs=1, warmup_seconds=0.05, min_runs=2))
    assert out.warmup_s >= 0.05
    assert out.warmup_runs > 1


def test_gc_is_paused_while_timing_and_restored():
    seen = []
    assert gc.isenabled()
    time_runs(lambda: seen.append(gc.isenabled()), settings(warmup_runs=0, min_runs=5))
    assert seen == [False] * 5
    assert gc.isenabled()


# -- memory --------------------------------------------------------------------------------------

def test_memory_sampler_sees_a_200_mib_allocation():
    sampler = MemorySampler(rss_interval_s=0.005, uss_interval_s=0.05).start()
    try:
        time.sleep(0.05)
        block = np.ones(200 * MIB // 8)  # writes every page
        time.sleep(0.3)
        block.sum()
        del block
    finally:
        sampler.stop()
    stats = sampler.stats()
    assert stats.peak_rss_delta_mib >= 150
    assert stats.peak_rss_mib >= stats.baseline_rss_mib + 150
    # the background thread itself saw it (not only the kernel's high-water mark)
    sampled_peak = max(row[1] for row in sampler.timeline)
    assert sampled_peak - stats.baseline_rss_mib >= 150
    assert stats.n_samples == len(sampler.timeline) >= 10
    times = [row[0] for row in sampler.timeline]
    assert times == sorted(times)
    assert any(row[2] >= 0 for row in sampler.timeline)  # USS read at least once


def test_memory_sampler_ignores_a_peak_from_before_it_started():
    code = (
        "import json, time, numpy as np\n"
        "from edgebench.bench.measure import MemorySampler, MIB\n"
        "block = np.ones(300 * MIB // 8); del block\n"
        "s = MemorySampler().start(); time.sleep(0.1); s.stop()\n"
        "print(json.dumps(s.stats().peak_rss_delta_mib))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) < 50


# -- contention ------------------------------------------------------------------------------

BURN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 2.5:\n    pass\n"


def _measure_sleep(seconds: float = 1.0):
    meter = ContentionMeter(threshold=0.05)
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def _measure_with_burner():
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        time.sleep(0.3)  # let it get past interpreter start-up
        return _measure_sleep(1.0)
    finally:
        child.kill()
        child.wait()


def test_contention_meter_sees_a_busy_process():
    c = _measure_with_burner()
    assert c.contended is True
    assert c.other_cpu_share is not None and c.other_cpu_share > 0.2
    assert c.logical_cpus >= 1
    # this process slept: it is not the one using the CPU
    assert c.own_cpu_share is not None and c.own_cpu_share < c.other_cpu_share


def test_contention_meter_burner_is_clearly_above_idle():
    # the machine is shared, so idle is not ~0; compare the two, retrying a noisy pair
    pairs = []
    for _ in range(3):
        idle = _measure_sleep(1.0).other_cpu_share
        busy = _measure_with_burner().other_cpu_share
        pairs.append((idle, busy))
        if busy - idle >= 0.15:
            return
    pytest.fail(f"a busy child never raised other_cpu_share clearly above idle: {pairs}")


def test_contention_meter_counts_own_cpu_as_own():
    meter = ContentionMeter(threshold=0.05)
    meter.start()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.5:
        pass
    c = meter.stop()
    assert c.own_cpu_share is not None and c.own_cpu_share > 0.2 / c.logical_cpus
