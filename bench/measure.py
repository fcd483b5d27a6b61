"""Measurement primitives that run inside the worker: the timing loop, memory sampling, CPU contention.

Only the standard library, numpy and psutil are used, so a board needs nothing else.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from edgebench.bench.contracts.results import Contention, MeasureSettings, MemoryStats

MIB = 1024 * 1024


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one): the default thread count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class TimedRuns:
    warmup_runs: int
    warmup_s: float
    samples_ns: list[int]
    stopped_by_cap: str | None = None


def time_runs(fn: Callable[[], object], settings: MeasureSettings, self_timed: bool = False) -> TimedRuns:
    """Warm up, then time ``fn`` until both the count floor and the time floor are met.

    ``self_timed``: ``fn`` returns its own duration in nanoseconds (a GPU session's CUDA events around
    work it launched asynchronously), which becomes the sample; the floors still run on the host clock.

    Like LiteRT's benchmark_model and trtexec, both a run count and a duration must be reached, so a
    fast model gets many samples and a slow one still gets its minimum count, bounded by the caps.
    The garbage collector is paused while timing (as ``timeit`` does) so a collection in the
    harness does not land in a model's sample.
    """
    warm_start = time.perf_counter()
    warm_runs = 0
    while warm_runs < settings.warmup_runs or time.perf_counter() - warm_start < settings.warmup_seconds:
        fn()
        warm_runs += 1
        if time.perf_counter() - warm_start > settings.max_seconds:
            break
    warmup_s = time.perf_counter() - warm_start

    samples: list[int] = []
    cap = None
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        min_ns = int(settings.min_seconds * 1e9)
        max_ns = int(settings.max_seconds * 1e9)
        while True:
            t0 = clock()
            own = fn()
            t1 = clock()
            samples.append(int(own) if self_timed else t1 - t0)  # type: ignore[call-overload]
            elapsed = t1 - start
            if len(samples) >= settings.min_runs and elapsed >= min_ns:
                break
            if len(samples) >= settings.max_runs:
                cap = f"stopped at max_runs={settings.max_runs}"
                break
            if elapsed >= max_ns:
                cap = f"stopped at max_seconds={settings.max_seconds} after {len(samples)} runs"
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return TimedRuns(warm_runs, warmup_s, samples, cap)


def _rss_bytes_fast() -> int:
    # /proc/self/statm is one short read (~20 us); psutil's USS walks page tables (~3 ms with torch
    # loaded), so RSS is what the 10 ms loop reads and USS is sampled less often.
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int | None:
    """The kernel's own high-water mark of this process's RSS (VmHWM), exact, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemorySampler:
    """Samples this process's RSS (and, less often, USS) on a background thread."""

    rss_interval_s: float = 0.01
    uss_interval_s: float = 0.1
    timeline: list[list[float]] = field(default_factory=list)  # [t_s, rss_mib, uss_mib or -1]

    def __post_init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._has_statm = os.path.exists("/proc/self/statm")
        # VmHWM is the process's lifetime peak; reset it so a peak from before sampling (an import,
        # a freed buffer) is not reported as this cell's. Where the reset is refused, stats() only
        # trusts a VmHWM that grew while sampling.
        self._hwm_reset = _reset_peak_rss()
        self._hwm_at_start = peak_rss_bytes()
        self.baseline_rss = self._rss()
        self.baseline_uss = self._uss()

    def _rss(self) -> int:
        return _rss_bytes_fast() if self._has_statm else self._proc.memory_info().rss

    def _uss(self) -> int | None:
        try:
            return self._proc.memory_full_info().uss
        except (psutil.AccessDenied, AttributeError, NotImplementedError):
            return None

    def sample(self, with_uss: bool = False) -> None:
        uss = self._uss() if with_uss else None
        self.timeline.append([time.perf_counter() - self._t0, self._rss() / MIB, -1.0 if uss is None else uss / MIB])

    def _loop(self) -> None:
        next_uss = 0.0
        while not self._stop.wait(self.rss_interval_s):
            now = time.perf_counter()
            with_uss = now >= next_uss
            if with_uss:
                next_uss = now + self.uss_interval_s
            self.sample(with_uss)

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._loop, name="edgebench-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample(with_uss=True)

    def stats(self) -> MemoryStats:
        rss = [row[1] for row in self.timeline]
        uss = [row[2] for row in self.timeline if row[2] >= 0]
        hwm = peak_rss_bytes()
        trusted = hwm is not None and (self._hwm_reset or hwm != self._hwm_at_start)
        peak_rss = max(([hwm / MIB] if trusted else []) + rss + [self.baseline_rss / MIB])
        base_rss = self.baseline_rss / MIB
        base_uss = self.baseline_uss / MIB if self.baseline_uss is not None else None
        peak_uss = max(uss) if uss else None
        return MemoryStats(
            baseline_rss_mib=base_rss,
            peak_rss_mib=peak_rss,
            peak_rss_delta_mib=peak_rss - base_rss,
            peak_uss_mib=peak_uss,
            peak_uss_delta_mib=(peak_uss - base_uss) if peak_uss is not None and base_uss is not None else None,
            baseline_uss_mib=base_uss,
            sample_interval_s=self.rss_interval_s,
            n_samples=len(self.timeline),
        )


def _proc_stat_busy_total() -> tuple[float, float, float] | None:
    """(busy, total, steal) CPU seconds over all cores since boot, from /proc/stat's first line.

    Steal (time a hypervisor gave this VM's CPUs to someone else) is part of busy, so it counts as
    other load; it is also returned alone because its fix differs (another machine, not a quieter one).
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    steal = fields[7] if len(fields) > 7 else 0
    return (total - idle) / hz, total / hz, steal / hz


def _own_cpu_s() -> float:
    """CPU seconds this process has used (user + system, all threads)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _shares(before: tuple[float, float, float], after: tuple[float, float, float], own_s: float, wall_s: float,
            cpus: int) -> tuple[float, float, float]:
    """(other, own, steal) shares of all cores between two /proc/stat readings."""
    busy = after[0] - before[0]
    capacity = max(after[1] - before[1], wall_s * cpus * 0.5)  # jiffy totals, guarded against a zero span
    return max(busy - own_s, 0.0) / capacity, own_s / capacity, max(after[2] - before[2], 0.0) / capacity


class ContentionMeter:
    """CPU time spent by processes other than this one between ``start`` and ``stop``."""

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold

    def start(self) -> None:
        self._wall0 = time.perf_counter()
        self._sys0 = _proc_stat_busy_total()
        self._own0 = _own_cpu_s()

    def stop(self) -> Contention:
        wall = time.perf_counter() - self._wall0
        sys1 = _proc_stat_busy_total()
        own = _own_cpu_s() - self._own0
        cpus = psutil.cpu_count() or 1
        if self._sys0 is None or sys1 is None or wall <= 0:
            return Contention(None, own / wall / cpus if wall > 0 else None, cpus, False)
        other, own_share, steal = _shares(self._sys0, sys1, own, wall, cpus)
        return Contention(other, own_share, cpus, other > self.threshold, steal_share=steal)


@dataclass
class QuietWait:
    """What the quiet gate saw: seconds spent in it, whether the machine got quiet (None: no /proc/stat
    or the gate is off), and other processes' CPU share in its last window."""

    waited_s: float
    quiet: bool | None
    other_cpu_share: float | None


QUIET_WINDOW_S = 0.2  # one look: 0.2 s x 2 cores = 40 jiffies, so the 5% threshold is 2 jiffies of others' work


def wait_for_quiet(threshold: float, max_wait_s: float, window_s: float = QUIET_WINDOW_S,
                   read: Callable[[], tuple[float, float, float] | None] = _proc_stat_busy_total,
                   own: Callable[[], float] = _own_cpu_s, clock: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], None] = time.sleep, cpus: int | None = None) -> QuietWait:
    """Look at other processes' CPU share over windows of ``window_s`` until one is at or below
    ``threshold``, for at most ``max_wait_s`` (bounded: a busy machine costs a wait, never the run).

    It runs in the worker, on the target, so it sees the target's load over SSH as well as locally.
    ``read``/``own``/``clock``/``sleep`` are /proc/stat, this process's CPU time and time itself,
    replaceable so the loop can be tested without a machine to make busy.
    """
    if max_wait_s <= 0:
        return QuietWait(0.0, None, None)
    cpus = cpus or psutil.cpu_count() or 1
    start = clock()
    while True:
        t0, before, own0 = clock(), read(), own()
        sleep(window_s)
        t1, after, own1 = clock(), read(), own()
        if before is None or after is None:
            return QuietWait(t1 - start, None, None)
        other = _shares(before, after, own1 - own0, t1 - t0, cpus)[0]
        if other <= threshold:
            return QuietWait(t1 - start, True, other)
        if t1 - start + window_s > max_wait_s:
            return QuietWait(t1 - start, False, other)
