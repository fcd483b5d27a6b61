"""The per-cell device monitor: a cool-down gate before the cell, then a background timeline of
temperature, CPU clocks, other processes' CPU share, input power and throttling while it runs.

    monitor = DeviceMonitor(MonitorSettings(thermal_limit_c=60, cooldown_max_s=120, idle_s=2))
    monitor.cooldown()          # bounded wait until the board is below 60 C
    monitor.start()             # samples in the background; with idle_s, 2 s of idle rows first
    monitor.mark("load"); ...; monitor.mark("measure"); ...; monitor.mark("evaluate"); ...
    report = monitor.stop()     # DeviceReport: timeline, throttled + reasons, idle/measure power

Each interval reads a few sysfs files and /proc/stat (no process iteration); vcgencmd, which spawns a
process per call, runs on the slow interval; tegrastats runs as one child process for the whole cell.
Device side: standard library, plus pynvml where it is installed.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgebench.targets import parsers, sensors

SAMPLERS = ("thermal", "cpufreq", "cpu", "vcgencmd", "tegrastats", "nvml")
UNMARKED = "unmarked"


@dataclass
class MonitorSettings:
    """What the monitor samples and how often; the gates it applies before and during a cell."""

    samplers: list[str] = field(default_factory=lambda: ["auto"])  # "auto" = whatever this machine has
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


class _Tegrastats:
    """One ``tegrastats --interval MS`` child whose lines a reader thread parses; killed on stop."""

    def __init__(self, path: str, interval_ms: int) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._latest: tuple[int, parsers.TegraSample] | None = None
        self.proc = subprocess.Popen([path, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="edgebench-tegrastats", daemon=True)
        self._thread.start()
        atexit.register(self.stop)  # a worker that dies must not leave tegrastats running

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sample = parsers.parse_tegrastats(line)
            with self._lock:
                self._seq += 1
                self._latest = (self._seq, sample)

    def latest(self) -> tuple[int, parsers.TegraSample] | None:
        with self._lock:
            return self._latest

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2)
        self._thread.join(timeout=2)
        atexit.unregister(self.stop)


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
        self._t0: float | None = None
        self._cooldown: dict[str, Any] | None = None
        self._tegra: _Tegrastats | None = None
        self._tegra_seen = 0
        self._rail: str | None = None
        self._nvml: sensors.NvmlReader | None = None
        self._capping: list[tuple[Path, str]] = []
        self._ceiling: dict[str, float] = {}
        self._prev_cpu: tuple[float, float, float] | None = None
        self._next_slow = 0.0
        self._pi: dict[str, Any] = {}
        self._pi_start_history: int | None = None
        self.status = self._resolve()

    # --- what this machine has ---------------------------------------------------------------

    def _resolve(self) -> dict[str, str]:
        asked = list(self.settings.samplers)
        names = list(SAMPLERS) if "auto" in asked else []
        names += [n for n in asked if n != "auto" and n not in names]
        return {name: self._available(name) for name in names}

    def _available(self, name: str) -> str:
        if name == "thermal":
            zones = sensors.thermal_zones(self.root)
            return "ok" if isinstance(zones, dict) else zones
        if name == "cpufreq":
            mhz = sensors.cpu_cur_mhz(self.root)
            return "ok" if isinstance(mhz, dict) else mhz
        if name == "cpu":
            ok = sensors.proc_stat_busy_total(self.root) is not None
            return "ok" if ok else sensors.na(f"cannot read {self.root / 'proc/stat'}")
        if name == "vcgencmd":
            return "ok" if sensors.which("vcgencmd") else sensors.na("vcgencmd not found")
        if name == "tegrastats":
            return "ok" if sensors.which("tegrastats") else sensors.na("tegrastats not found")
        if name == "nvml":
            self._nvml = sensors.NvmlReader()
            if self._nvml.error:
                error, self._nvml = self._nvml.error, None
                return error
            return "ok"
        return sensors.na(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")

    def _on(self, name: str) -> bool:
        return self.status.get(name) == "ok"

    # --- cool-down -----------------------------------------------------------------------------

    def _temperature(self) -> tuple[float | None, str | None]:
        """The hottest real sensor now: thermal zones, else vcgencmd, else the GPUs (NVML)."""
        if self._temp_reader is not None:
            return self._temp_reader(), "temp_reader"
        zones = sensors.thermal_zones(self.root)
        if isinstance(zones, dict) and sensors.max_temperature(zones) is not None:
            return sensors.max_temperature(zones), "thermal"
        reply = sensors.vcgencmd("measure_temp") if sensors.which("vcgencmd") else None
        if reply and not sensors.is_na(reply):
            try:
                return parsers.parse_measure_temp(reply), "vcgencmd"
            except ValueError:
                pass
        gpus = sensors.nvml_gpus()
        temps = [g["temp_c"] for g in gpus if isinstance(g.get("temp_c"), (int, float))] if isinstance(gpus, list) else []
        return (max(temps), "nvml") if temps else (None, None)

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
        """Start the background sampling (and tegrastats); with ``idle_s``, sample that long in phase
        "idle" before returning, so the report has an idle power baseline."""
        s = self.settings
        self._t0 = time.monotonic()
        if self._on("tegrastats"):
            try:
                self._tegra = _Tegrastats(sensors.which("tegrastats") or "tegrastats", max(1, int(s.interval_s * 1000)))
            except OSError as exc:
                self.status["tegrastats"] = sensors.na(f"could not start tegrastats: {exc}")
        if self._on("thermal"):
            self._capping = [(d, sensors._read(d / "type")) for d in sensors.capping_cooling_devices(self.root)]
        if self._on("cpufreq"):
            self._ceiling = sensors.cpu_max_mhz(self.root)
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="edgebench-device-monitor", daemon=True)
        self._thread.start()
        if s.idle_s > 0:
            self.mark("idle")
            time.sleep(s.idle_s)
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
        if self._on("thermal"):
            zones = sensors.thermal_zones(self.root)
            if isinstance(zones, dict):
                row["temps"] = {k: round(v, 1) for k, v in zones.items()}
                row["temp_c"] = sensors.max_temperature(zones)
            capped = {}
            for path, kind in self._capping:
                try:
                    state = int(sensors._read(path / "cur_state"))
                except (OSError, ValueError):
                    continue
                if state > 0:
                    capped[kind] = state
            if capped:
                row["capped"] = capped
                why += [sensors.cooling_reason(k, v) for k, v in capped.items()]
        if self._on("cpufreq"):
            mhz = sensors.cpu_cur_mhz(self.root)
            if isinstance(mhz, dict):
                row["cpu_mhz"] = {k: round(v) for k, v in mhz.items()}
            if self._ceiling:
                now_max = sensors.cpu_max_mhz(self.root)
                lowered = {k: v for k, v in now_max.items() if k in self._ceiling and v < self._ceiling[k]}
                if lowered:
                    row["cpu_max_mhz"] = {k: round(v) for k, v in lowered.items()}
                    why += [f"cpu ceiling {k} lowered from {self._ceiling[k]:.0f} to {v:.0f} MHz during the cell"
                            for k, v in lowered.items()]
        if self._on("cpu"):
            row["other_cpu"] = self._other_cpu()
        if self._on("vcgencmd") and now >= self._next_slow:
            self._next_slow = now + self.settings.slow_interval_s
            self._read_pi(need_temp=row["temp_c"] is None)
            row["pi"] = dict(self._pi)
        if self._on("vcgencmd"):
            why += self._pi_reasons()
            if row["temp_c"] is None and isinstance(self._pi.get("temp_c"), float):
                row["temp_c"] = self._pi["temp_c"]
        if self._tegra is not None:
            latest = self._tegra.latest()
            if latest is not None and latest[0] != self._tegra_seen:
                self._tegra_seen = latest[0]
                total = parsers.total_input_power_mw(latest[1])
                if total is not None:
                    self._rail = self._rail or total[0]
                    row["power_mw"] = total[1]
                if latest[1].gr3d_pct is not None:
                    row["gr3d_pct"] = latest[1].gr3d_pct
        if self._nvml is not None:
            gpus = self._nvml.sample()
            row["gpu"] = [{k: g[k] for k in ("temp_c", "sm_mhz", "power_mw")} for g in gpus]
            why += [f"nvml: {r}" for g in gpus for r in g["throttling"]]
            if row["temp_c"] is None:
                temps = [g["temp_c"] for g in gpus if g["temp_c"] is not None]
                row["temp_c"] = float(max(temps)) if temps else None
        limit = self.settings.throttle_temp_c
        if limit is not None and row["temp_c"] is not None and row["temp_c"] > limit:
            why.append(f"temperature {row['temp_c']:.1f} C above throttle threshold {limit:.1f} C")
        if why:
            row["throttled"] = True
            row["why"] = why
        with self._lock:
            self._rows.append(row)

    def _other_cpu(self) -> float | None:
        """Share of all CPUs busy with other processes since the last sample: /proc/stat busy time
        minus this process's own (os.times(), the same tick-based accounting), over total time."""
        stat = sensors.proc_stat_busy_total(self.root)
        t = os.times()
        own = t.user + t.system
        prev, self._prev_cpu = self._prev_cpu, (stat[0], stat[1], own) if stat else None
        if stat is None or prev is None:
            return None
        total = stat[1] - prev[1]
        if total <= 0:
            return None
        return round(max(stat[0] - prev[0] - (own - prev[2]), 0.0) / total, 4)

    def _read_pi(self, need_temp: bool) -> None:
        # The temperature is read only where no thermal zone gives it (a Pi has cpu-thermal), to keep
        # the process spawns per slow interval at two.
        calls = [("throttled", ("get_throttled",), parsers.parse_get_throttled),
                 ("arm_mhz", ("measure_clock", "arm"), parsers.parse_measure_clock)]
        if need_temp:
            calls.append(("temp_c", ("measure_temp",), parsers.parse_measure_temp))
        for key, args, parse in calls:
            reply = sensors.vcgencmd(*args)
            try:
                value = parse(reply) if not sensors.is_na(reply) else None
            except ValueError:
                value = None
            if isinstance(value, parsers.ThrottleState):
                if self._pi_start_history is None:
                    self._pi_start_history = value.raw & parsers.PI_HISTORY_MASK
                self._pi["throttled"] = hex(value.raw)
            elif value is not None:
                self._pi[key] = round(value, 1)

    def _pi_reasons(self) -> list[str]:
        """Bits 0-3 set now, and sticky bits 16-19 that were clear when the cell started (so the limit
        was hit during the cell even if it is gone by the next read)."""
        raw = self._pi.get("throttled")
        if raw is None:
            return []
        state = parsers.ThrottleState(int(raw, 16))
        out = state.reasons(history=False)
        new = (state.raw & parsers.PI_HISTORY_MASK) & ~(self._pi_start_history or 0)
        for bit, text in parsers.PI_HISTORY_BITS.items():
            if new >> (bit + parsers.PI_HISTORY_SHIFT) & 1:
                out.append(f"pi: {text} occurred during the run")
        return out

    # --- the report ----------------------------------------------------------------------------

    def stop(self) -> DeviceReport:
        """Stop sampling (and tegrastats), take a last row and summarise."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.interval_s + self.settings.slow_interval_s + 10)
        if self._t0 is not None:
            self._sample()
        if self._tegra is not None:
            self._tegra.stop()
        if self._nvml is not None:
            self._nvml.close()
        return self._report()

    def _report(self) -> DeviceReport:
        rows = list(self._rows)
        temps = [r["temp_c"] for r in rows if r["temp_c"] is not None]
        source = None
        if temps:
            source = "thermal" if any("temps" in r for r in rows) else "vcgencmd" if any("pi" in r for r in rows) else "nvml"
        reasons: list[str] = []
        max_state: dict[str, int] = {}
        for r in rows:
            for k, v in r.get("capped", {}).items():
                max_state[k] = max(v, max_state.get(k, 0))
            for w in r.get("why", []):
                if not w.startswith(("temperature ", "cpufreq ", "devfreq ", "cpu ceiling ")) and w not in reasons:
                    reasons.append(w)
        reasons += [sensors.cooling_reason(k, v) for k, v in max_state.items()]
        lowest: dict[str, float] = {}
        for r in rows:
            for k, v in r.get("cpu_max_mhz", {}).items():
                lowest[k] = min(v, lowest.get(k, v))
        reasons += [f"cpu ceiling {k} lowered from {self._ceiling[k]:.0f} to {v:.0f} MHz during the cell" for k, v in lowest.items()]
        limit = self.settings.throttle_temp_c
        if limit is not None and temps and max(temps) > limit:
            reasons.append(f"temperature {max(temps):.1f} C above throttle threshold {limit:.1f} C")

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
            throttle_reasons=reasons,
            power_rail=self._rail,
            idle_power_mw=power("idle") if self._rail else None,
            measure_power_mw=power("measure") if self._rail else None,
            measure_other_cpu=_mean(measure_cpu),
            cooldown=self._cooldown,
        )
