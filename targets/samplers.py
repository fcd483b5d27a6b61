"""What the device monitor can read during a cell: one :class:`Sampler` per source, registered in
:data:`SAMPLERS` by name (a profile's ``samplers:`` list names them; ``auto`` = every one this
machine has).

A board with a new sensor is one sampler class here (and a parser in parsers.py if it reads a
tool's text) plus its test; the monitor (targets/monitor.py) needs no change::

    @SAMPLERS.register
    class Ina219(Sampler):
        name, order = "ina219", 70
        def check(self) -> str: ...                       # "ok", or "not available: why"
        def sample(self, row, now) -> list[str]: ...      # fill row keys, return throttle reasons

Each interval reads a few sysfs files and /proc/stat (no process iteration); vcgencmd, which spawns a
process per call, runs on the slow interval; tegrastats runs as one child process for the whole cell.
Device side: standard library, plus pynvml where it is installed.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgebench.bench.contracts.registry import Registry
from edgebench.targets import parsers, sensors

if TYPE_CHECKING:  # the monitor imports this module
    from edgebench.targets.monitor import MonitorSettings

AUTO = "auto"  # every registered sampler this machine has


class Sampler:
    """One source of device state, created per cell by the monitor.

    ``check`` says whether this machine has it; ``start`` may start something for the cell (raising
    OSError marks the sampler not available); ``sample`` fills its keys of one timeline row and returns
    the throttle reasons it saw there; ``report_reasons`` summarises the cell where a row's reasons are
    states (a cooling device's depth) rather than events; ``stop`` releases what ``start`` took.
    """

    name: ClassVar[str]
    order: ClassVar[int]  # rows are filled in this order: a later sampler's temperature only fills a row no earlier one did
    temp_key: ClassVar[str | None] = None  # the row key present where this sampler read temperatures (DeviceReport.temp_source)
    summarises: ClassVar[bool] = False  # its row reasons are summarised by report_reasons instead of listed as they come

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        self.root = root
        self.settings = settings
        self.power_rail: str | None = None  # the input rail this sampler reads power from, once it has

    def check(self) -> str:
        """``"ok"``, or ``"not available: <why>"``."""
        return "ok"

    def start(self) -> None:
        """Called once before the first row."""

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        """Fill this sampler's keys of ``row``; return the throttle reasons seen in it."""
        return []

    def report_reasons(self, rows: list[dict[str, Any]]) -> list[str]:
        """The cell's throttle reasons from this sampler's row keys (only where ``summarises``)."""
        return []

    def stop(self) -> None:
        """Called once after the last row."""

    @staticmethod
    def temperature(root: Path) -> float | None:
        """The hottest reading now, for the cool-down gate (nothing started, any profile); None: no reading."""
        return None


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


def in_order() -> list[type[Sampler]]:
    """Every registered sampler in sampling order (``auto``'s list)."""
    return sorted((cls for _, cls in SAMPLERS.items()), key=lambda cls: cls.order)


def _ok(value: object) -> str:
    """A reader's answer as a status: ok for values, the reason for a "not available" string."""
    return value if isinstance(value, str) else "ok"


@SAMPLERS.register
class Thermal(Sampler):
    """Thermal zones (the hottest real one is the row's temperature) and the cooling devices that cap a clock."""

    name, order, temp_key, summarises = "thermal", 10, "temps", True

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self._capping: list[tuple[Path, str]] = []

    def check(self) -> str:
        return _ok(sensors.thermal_zones(self.root))

    def start(self) -> None:
        self._capping = [(d, sensors._read(d / "type")) for d in sensors.capping_cooling_devices(self.root)]

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
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
        return [sensors.cooling_reason(k, v) for k, v in capped.items()]

    def report_reasons(self, rows: list[dict[str, Any]]) -> list[str]:
        deepest: dict[str, int] = {}  # the deepest state each device reached
        for r in rows:
            for k, v in r.get("capped", {}).items():
                deepest[k] = max(v, deepest.get(k, 0))
        return [sensors.cooling_reason(k, v) for k, v in deepest.items()]

    @staticmethod
    def temperature(root: Path) -> float | None:
        zones = sensors.thermal_zones(root)
        return sensors.max_temperature(zones) if isinstance(zones, dict) else None


@SAMPLERS.register
class Cpufreq(Sampler):
    """Current CPU clock per policy, and a policy ceiling (scaling_max_freq) lowered during the cell."""

    name, order, summarises = "cpufreq", 20, True

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self._ceiling: dict[str, float] = {}

    def check(self) -> str:
        return _ok(sensors.cpu_cur_mhz(self.root))

    def start(self) -> None:
        self._ceiling = sensors.cpu_max_mhz(self.root)

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        mhz = sensors.cpu_cur_mhz(self.root)
        if isinstance(mhz, dict):
            row["cpu_mhz"] = {k: round(v) for k, v in mhz.items()}
        if not self._ceiling:
            return []
        now_max = sensors.cpu_max_mhz(self.root)
        lowered = {k: v for k, v in now_max.items() if k in self._ceiling and v < self._ceiling[k]}
        if lowered:
            row["cpu_max_mhz"] = {k: round(v) for k, v in lowered.items()}
        return [self._lowered(k, v) for k, v in lowered.items()]

    def report_reasons(self, rows: list[dict[str, Any]]) -> list[str]:
        lowest: dict[str, float] = {}
        for r in rows:
            for k, v in r.get("cpu_max_mhz", {}).items():
                lowest[k] = min(v, lowest.get(k, v))
        return [self._lowered(k, v) for k, v in lowest.items()]

    def _lowered(self, policy: str, mhz: float) -> str:
        return f"cpu ceiling {policy} lowered from {self._ceiling[policy]:.0f} to {mhz:.0f} MHz during the cell"


@SAMPLERS.register
class Cpu(Sampler):
    """Other processes' share of all CPUs over each interval (the row's other_cpu)."""

    name, order = "cpu", 30

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self._prev: tuple[float, float, float] | None = None

    def check(self) -> str:
        ok = sensors.proc_stat_busy_total(self.root) is not None
        return "ok" if ok else sensors.na(f"cannot read {self.root / 'proc/stat'}")

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        row["other_cpu"] = self._other_cpu()
        return []

    def _other_cpu(self) -> float | None:
        """Share of all CPUs busy with other processes since the last sample: /proc/stat busy time
        minus this process's own (os.times(), the same tick-based accounting), over total time."""
        stat = sensors.proc_stat_busy_total(self.root)
        t = os.times()
        own = t.user + t.system
        prev, self._prev = self._prev, (stat[0], stat[1], own) if stat else None
        if stat is None or prev is None:
            return None
        total = stat[1] - prev[1]
        if total <= 0:
            return None
        return round(max(stat[0] - prev[0] - (own - prev[2]), 0.0) / total, 4)


@SAMPLERS.register
class Vcgencmd(Sampler):
    """Raspberry Pi firmware: throttle bits, ARM clock, and the temperature where no thermal zone gives it."""

    name, order, temp_key = "vcgencmd", 40, "pi"

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self._next_slow = 0.0
        self._pi: dict[str, Any] = {}
        self._start_history: int | None = None

    def check(self) -> str:
        return "ok" if sensors.which("vcgencmd") else sensors.na("vcgencmd not found")

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        if now >= self._next_slow:  # each call spawns a process: only every slow_interval_s
            self._next_slow = now + self.settings.slow_interval_s
            self._read(need_temp=row["temp_c"] is None)
            row["pi"] = dict(self._pi)
        if row["temp_c"] is None and isinstance(self._pi.get("temp_c"), float):
            row["temp_c"] = self._pi["temp_c"]
        return self._reasons()

    def _read(self, need_temp: bool) -> None:
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
                if self._start_history is None:
                    self._start_history = value.raw & parsers.PI_HISTORY_MASK
                self._pi["throttled"] = hex(value.raw)
            elif value is not None:
                self._pi[key] = round(value, 1)

    def _reasons(self) -> list[str]:
        """Bits 0-3 set now, and sticky bits 16-19 that were clear when the cell started (so the limit
        was hit during the cell even if it is gone by the next read)."""
        raw = self._pi.get("throttled")
        if raw is None:
            return []
        state = parsers.ThrottleState(int(raw, 16))
        out = state.reasons(history=False)
        new = (state.raw & parsers.PI_HISTORY_MASK) & ~(self._start_history or 0)
        for bit, text in parsers.PI_HISTORY_BITS.items():
            if new >> (bit + parsers.PI_HISTORY_SHIFT) & 1:
                out.append(f"pi: {text} occurred during the run")
        return out

    @staticmethod
    def temperature(root: Path) -> float | None:
        reply = sensors.vcgencmd("measure_temp") if sensors.which("vcgencmd") else None
        if not reply or sensors.is_na(reply):
            return None
        try:
            return parsers.parse_measure_temp(reply)
        except ValueError:
            return None


class TegrastatsChild:
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


@SAMPLERS.register
class Tegrastats(Sampler):
    """Jetson: total input power (on rows where tegrastats printed a new line) and GPU load."""

    name, order = "tegrastats", 50

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self.child: TegrastatsChild | None = None
        self._seen = 0

    def check(self) -> str:
        return "ok" if sensors.which("tegrastats") else sensors.na("tegrastats not found")

    def start(self) -> None:
        self.child = TegrastatsChild(sensors.which("tegrastats") or "tegrastats", max(1, int(self.settings.interval_s * 1000)))

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        latest = self.child.latest() if self.child is not None else None
        if latest is None or latest[0] == self._seen:
            return []
        self._seen = latest[0]
        total = parsers.total_input_power_mw(latest[1])
        if total is not None:
            self.power_rail = self.power_rail or total[0]
            row["power_mw"] = total[1]
        if latest[1].gr3d_pct is not None:
            row["gr3d_pct"] = latest[1].gr3d_pct
        return []

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@SAMPLERS.register
class Nvml(Sampler):
    """NVIDIA GPUs through NVML: temperature, SM clock, power and throttle reasons per GPU."""

    name, order, temp_key = "nvml", 60, "gpu"

    def __init__(self, root: Path, settings: MonitorSettings) -> None:
        super().__init__(root, settings)
        self._reader: sensors.NvmlReader | None = None

    def check(self) -> str:
        reader = sensors.NvmlReader()
        if reader.error:
            return reader.error
        self._reader = reader
        return "ok"

    def sample(self, row: dict[str, Any], now: float) -> list[str]:
        gpus = self._reader.sample() if self._reader is not None else []
        row["gpu"] = [{k: g[k] for k in ("temp_c", "sm_mhz", "power_mw")} for g in gpus]
        if row["temp_c"] is None:
            temps = [g["temp_c"] for g in gpus if g["temp_c"] is not None]
            row["temp_c"] = float(max(temps)) if temps else None
        return [f"nvml: {r}" for g in gpus for r in g["throttling"]]

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.close()

    @staticmethod
    def temperature(root: Path) -> float | None:
        gpus = sensors.nvml_gpus()
        temps = [g["temp_c"] for g in gpus if isinstance(g.get("temp_c"), (int, float))] if isinstance(gpus, list) else []
        return max(temps) if temps else None
