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
        if idle > 0.8:  # the premise: room for a burner to show; a saturated shared machine has none
            pytest.skip(f"premise not met: other processes already used {idle:.0%} of the CPU with nothing started here")
        busy = _measure_with_burner().other_cpu_share
        pairs.append((idle, busy))
        if busy - idle >= 0.15:
            return
    pytest.fail(f"a busy child never raised other_cpu_share clearly above idle: {pairs}")


def test_contention_meter_counts_own_cpu_as_own():
    # spin until this process has used 0.3 s of CPU (bounded): on a shared, busy machine 0.5 s of wall
    # time may give it much less, and the premise is that it did work, not that it got a core
    meter = ContentionMeter(threshold=0.05)
    meter.start()
    t, cpu0 = time.perf_counter(), time.process_time()
    while time.process_time() - cpu0 < 0.3 and time.perf_counter() - t < 10:
        pass
    used, wall = time.process_time() - cpu0, time.perf_counter() - t
    c = meter.stop()
    assert c.own_cpu_share is not None
    assert c.own_cpu_share == pytest.approx(used / (wall * c.logical_cpus), rel=0.3, abs=0.02)


# -- the quiet gate (wait_for_quiet) ----------------------------------------------------------

class FakeMachine:
    """A /proc/stat reader, own-CPU reader, clock and sleep for wait_for_quiet: each sleep advances time
    and charges other processes the next share of ``others`` (of 2 cores), this process ``own_s``."""

    def __init__(self, others: list[float], own_s: float = 0.0, cpus: int = 2) -> None:
        self.others, self.own_s, self.cpus = list(others), own_s, cpus
        self.now = self.busy = self.total = self.own_total = 0.0
        self.sleeps: list[float] = []

    def read(self):
        return self.busy, self.total, 0.0

    def own(self):
        return self.own_total

    def clock(self):
        return self.now

    def sleep(self, s):
        share = self.others.pop(0) if self.others else 0.0
        self.sleeps.append(s)
        self.now += s
        self.total += s * self.cpus
        self.own_total += self.own_s
        self.busy += share * s * self.cpus + self.own_s

    def wait(self, threshold=0.05, max_wait_s=2.0, window_s=0.2):
        return measure.wait_for_quiet(threshold, max_wait_s, window_s, read=self.read, own=self.own, clock=self.clock,
                                      sleep=self.sleep, cpus=self.cpus)


def test_quiet_gate_passes_at_once_on_a_quiet_machine():
    m = FakeMachine([0.01])
    q = m.wait()
    assert q.quiet is True and q.waited_s == pytest.approx(0.2) and q.other_cpu_share == pytest.approx(0.01)
    assert m.sleeps == [0.2]


def test_quiet_gate_waits_until_the_others_stop():
    m = FakeMachine([0.9, 0.6, 0.3, 0.02])
    q = m.wait()
    assert q.quiet is True and q.waited_s == pytest.approx(0.8) and q.other_cpu_share == pytest.approx(0.02)


def test_quiet_gate_is_bounded_on_a_machine_that_stays_busy():
    m = FakeMachine([0.5] * 100)
    q = m.wait(max_wait_s=1.0)
    assert q.quiet is False and q.other_cpu_share == pytest.approx(0.5)
    assert q.waited_s <= 1.0 and len(m.sleeps) == 5  # five 0.2 s looks fit in 1 s, never a sixth


def test_quiet_gate_does_not_count_this_process_as_other_load():
    m = FakeMachine([0.0], own_s=0.3)  # this process used 0.3 of the 0.4 core-seconds: its own work, not contention
    q = m.wait()
    assert q.quiet is True and q.other_cpu_share == pytest.approx(0.0)


def test_quiet_gate_off_and_without_proc_stat():
    m = FakeMachine([0.9])
    assert m.wait(max_wait_s=0) == measure.QuietWait(0.0, None, None) and m.sleeps == []
    q = measure.wait_for_quiet(0.05, 1.0, 0.2, read=lambda: None, own=lambda: 0.0, clock=m.clock, sleep=m.sleep, cpus=2)
    assert q.quiet is None and q.other_cpu_share is None


def test_quiet_gate_on_the_real_machine_sees_a_burner():
    """The real /proc/stat: with a CPU burner beside it the gate does not pass within 0.6 s."""
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        time.sleep(0.3)
        q = measure.wait_for_quiet(0.05, 0.6)
    finally:
        child.kill()
        child.wait()
    assert q.quiet is False and q.other_cpu_share > 0.2 and q.waited_s <= 0.6 + 0.1
