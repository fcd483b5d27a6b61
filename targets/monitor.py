"""The per-cell device monitor: a cool-down gate before the cell, then a background timeline of
temperature, CPU clocks, other processes' CPU share, input power and throttling while it runs.

    monitor = DeviceMonitor(MonitorSettings(thermal_limit_c=60, cooldown_max_s=120, idle_s=2))
    monitor.cooldown()          # bounded wait until the board is below 60 C
    monitor.start()             # samples in the background; with idle_s, 2 s of idle rows first
    monitor.mark("load"); ...; monitor.mark("measure"); ...; monitor.mark("evaluate"); ...
    report = monitor.stop()     # DeviceReport: timeline, throttled + reasons, idle/measure power

What is read comes from the samplers (targets/samplers.py, one class per source); this module only
schedules them, applies the profile's gates and summarises. Device side: standard library only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgebench.targets import sensors
from edgebench.targets.samplers import AUTO, SAMPLERS, Sampler, in_order

UNMARKED = "unmarked"


@dataclass
class MonitorSettings:
    """What the monitor samples and how often; the gates it applies before and during a cell."""

    samplers: list[str] = field(default_factory=lambda: [AUTO])  # "auto" = whatever this machine has
    interval_s: float = 0.25  # thermal / cpufreq / cpu / nvml / tegrastats
    slow_interval_s: float = 1.0  # vcgencmd: each call spawns a process, keep it rare
    thermal_limit_c: float | None = None  # cool-down target before the cell
    cooldown_max_s: float = 0.0  # 0 = no cool-down gate
    cooldown_poll_s: float = 1.0
    idle_s: float = 0.0  # idle sampling inside start(), the baseline for energy; 0 = skip
    throttle_temp_c: float | None = None  # above this the cell counts as throttled (e.g. a Jetson trip point)


@dataclass
class DeviceReport:
    """What the monitor saw during one cell. ``timeline`` rows: t (s since start), phase, temp_c (the
    hottest real zone), other_cpu (share of all CPUs used by other processes over the interval),
    power_mw (total input rail, only on rows where tegrastats printed a new line), throttled, and where
    sampled: temps, cpu_mhz, pi, gpu, capped, why."""

    samplers: dict[str, str] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    interval_s: float = 0.0
    duration_s: float = 0.0
    temp_source: str | None = None  # thermal / vcgencmd / nvml
    temp_start_c: float | None = None
    temp_max_c: float | None = None
    temp_end_c: float | None = None
    throttled: bool = False
    throttle_reasons: list[str] = field(default_factory=list)
    power_rail: str | None = None
    idle_power_mw: float | None = None
    measure_power_mw: float | None = None
    measure_other_cpu: float | None = None
    cooldown: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceReport:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def energy_per_inference_mj(report: DeviceReport | dict[str, Any], mean_latency_s: float, batch: int) -> float | None:
    """Energy above idle per inference: (measure - idle power) x mean batch latency / batch, in mJ
    (mW x s = mJ). None where there is no input rail or no idle or measure power sample. A value below
    zero is returned as it is: it means the difference is inside the rail's noise."""
    if isinstance(report, dict):
        report = DeviceReport.from_dict(report)
    if report.power_rail is None or report.idle_power_mw is None or report.measure_power_mw is None or batch <= 0:
        return None
    return (report.measure_power_mw - report.idle_power_mw) * mean_latency_s / batch


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class DeviceMonitor:
    """Cool-down gate, background sampling with phase marks, and a DeviceReport at the end.

    ``root`` points the sysfs/procfs readers elsewhere (tests); ``temp_reader`` replaces the cool-down's
    temperature source (tests, or a board with an external sensor)."""

    def __init__(self, settings: MonitorSettings | None = None, *, root: Path = sensors.ROOT,
                 temp_reader: Callable[[], float | None] | None = None) -> None:
        self.settings = settings or MonitorSettings()
        self.root = root
        self._temp_reader = temp_reader
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase = UNMARKED
        self._phases: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._events: dict[str, None] = {}  # throttle reasons listed as they came (an ordered set)
        self._t0: float | None = None
        self._cooldown: dict[str, Any] | None = None
        self._active: list[Sampler] = []
        self.status = self._resolve()

    # --- what this machine has ---------------------------------------------------------------

    def _resolve(self) -> dict[str, str]:
        """{asked sampler: "ok" or why not}; the available ones become active, in sampling order."""
        asked = list(self.settings.samplers)
        names = [cls.name for cls in in_order()] if AUTO in asked else []
        names += [n for n in asked if n != AUTO and n not in names]
        status = {}
        for name in names:
            if name not in SAMPLERS:
                status[name] = sensors.na(SAMPLERS.unknown(name))
                continue
            sampler = SAMPLERS.get(name)(self.root, self.settings)
            status[name] = sampler.check()
            if status[name] == "ok":
                self._active.append(sampler)
        self._active.sort(key=lambda s: s.order)
        return status

    def sampler(self, name: str) -> Sampler | None:
        """The active sampler called ``name`` (None where it is off or not available)."""
        return next((s for s in self._active if s.name == name), None)

    # --- cool-down -----------------------------------------------------------------------------

    def _temperature(self) -> tuple[float | None, str | None]:
        """The hottest real sensor now, from the first sampler in sampling order that has a reading
        (thermal zones, else vcgencmd, else the GPUs), whatever the profile samples."""
        if self._temp_reader is not None:
            return self._temp_reader(), "temp_reader"
        for cls in in_order():
            temp = cls.temperature(self.root)
            if temp is not None:
                return temp, cls.name
        return None, None

    def cooldown(self) -> dict[str, Any]:
        """Wait, at most ``cooldown_max_s``, until the hottest sensor is below ``thermal_limit_c``.

        Returns {waited_s, start_c, end_c, limit_c, reached, source} or {skipped: reason}; the result
        also goes into the report, so a cell measured on a hot board says so."""
        s = self.settings
        if s.thermal_limit_c is None:
            result: dict[str, Any] = {"skipped": "no thermal_limit_c set"}
        elif s.cooldown_max_s <= 0:
            result = {"skipped": "cooldown_max_s is 0"}
        else:
            temp, source = self._temperature()
            if temp is None:
                result = {"skipped": "no temperature sensor on this machine"}
            else:
                start, start_c = time.monotonic(), temp
                while temp is not None and temp >= s.thermal_limit_c:
                    left = s.cooldown_max_s - (time.monotonic() - start)
                    if left <= 0:
                        break
                    time.sleep(min(s.cooldown_poll_s, left))
                    temp, _ = self._temperature()
                result = {"waited_s": round(time.monotonic() - start, 3), "start_c": start_c, "end_c": temp,
                          "limit_c": s.thermal_limit_c, "reached": temp is not None and temp < s.thermal_limit_c,
                          "source": source}
        self._cooldown = result
        return result

    # --- sampling ------------------------------------------------------------------------------

    def start(self) -> DeviceMonitor:
        """Start the samplers and the background sampling; with ``idle_s``, sample that long in phase
        "idle" before returning, so the report has an idle power baseline."""
        self._t0 = time.monotonic()
        for sampler in list(self._active):
            try:
                sampler.start()
            except OSError as exc:  # a tool that will not start is a fact about the board, not a failed cell
                self.status[sampler.name] = sensors.na(f"could not start {sampler.name}: {exc}")
                self._active.remove(sampler)
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="edgebench-device-monitor", daemon=True)
        self._thread.start()
        if self.settings.idle_s > 0:
            self.mark("idle")
            time.sleep(self.settings.idle_s)
            self.mark(UNMARKED)
        return self

    def mark(self, phase: str) -> None:
        """Start a phase ("idle", "load", "measure", "evaluate", ...): rows from now on carry it."""
        with self._lock:
            self._phase = phase
            self._phases.append({"t": round(time.monotonic() - (self._t0 or time.monotonic()), 3), "phase": phase})

    def _loop(self) -> None:
        interval = self.settings.interval_s
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._sample()
            next_at += interval
            if next_at < time.monotonic():  # a slow sample (vcgencmd) skips ticks instead of bursting
                next_at = time.monotonic() + interval

    def _sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            phase = self._phase
        row: dict[str, Any] = {"t": round(now - (self._t0 or now), 3), "phase": phase, "temp_c": None,
                               "other_cpu": None, "power_mw": None, "throttled": False}
        why: list[str] = []
        events: list[str] = []
        for sampler in self._active:
            reasons = sampler.sample(row, now)
            why += reasons
            if not sampler.summarises:
                events += reasons
        limit = self.settings.throttle_temp_c
        if limit is not None and row["temp_c"] is not None and row["temp_c"] > limit:
            why.append(f"temperature {row['temp_c']:.1f} C above throttle threshold {limit:.1f} C")
        if why:
            row["throttled"] = True
            row["why"] = why
        with self._lock:
            self._rows.append(row)
            self._events.update(dict.fromkeys(events))

    # --- the report ----------------------------------------------------------------------------

    def stop(self) -> DeviceReport:
        """Stop sampling (and the samplers: tegrastats, NVML), take a last row and summarise."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.interval_s + self.settings.slow_interval_s + 10)
        if self._t0 is not None:
            self._sample()
        for sampler in self._active:
            sampler.stop()
        return self._report()

    def _reasons(self, rows: list[dict[str, Any]], temps: list[float]) -> list[str]:
        """Events in the order they came, then each sampler's summary of its states, then the threshold."""
        reasons = list(self._events)
        for sampler in self._active:
            reasons += sampler.report_reasons(rows)
        limit = self.settings.throttle_temp_c
        if limit is not None and temps and max(temps) > limit:
            reasons.append(f"temperature {max(temps):.1f} C above throttle threshold {limit:.1f} C")
        return reasons

    def _report(self) -> DeviceReport:
        rows = list(self._rows)
        temps = [r["temp_c"] for r in rows if r["temp_c"] is not None]
        source = next((s.name for s in self._active if s.temp_key and any(s.temp_key in r for r in rows)), None) if temps else None
        rail = next((s.power_rail for s in self._active if s.power_rail), None)

        def power(phase: str) -> float | None:
            return _mean([r["power_mw"] for r in rows if r["phase"] == phase and r["power_mw"] is not None])

        measure_cpu = [r["other_cpu"] for r in rows if r["phase"] == "measure" and r["other_cpu"] is not None]
        return DeviceReport(
            samplers=dict(self.status),
            timeline=rows,
            phases=list(self._phases),
            interval_s=self.settings.interval_s,
            duration_s=round(time.monotonic() - self._t0, 3) if self._t0 is not None else 0.0,
            temp_source=source,
            temp_start_c=temps[0] if temps else None,
            temp_max_c=max(temps) if temps else None,
            temp_end_c=temps[-1] if temps else None,
            throttled=any(r["throttled"] for r in rows),
            throttle_reasons=self._reasons(rows, temps),
            power_rail=rail,
            idle_power_mw=power("idle") if rail else None,
            measure_power_mw=power("measure") if rail else None,
            measure_other_cpu=_mean(measure_cpu),
            cooldown=self._cooldown,
        )
