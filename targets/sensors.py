"""Readers of the live system: thermal zones, cooling devices, cpufreq, /proc/stat, vcgencmd, Jetson
tools and NVML.

Each reader returns real values or a string starting with ``"not available"`` that says why (a file
that is not there, a permission, a tool that is not installed). Nothing is estimated. File readers take
a ``root`` so tests can point them at a fake sysfs tree; every subprocess has a timeout and a missing
binary is a reason, not an exception. Device side: standard library only (``pynvml`` is imported lazily
where it is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from edgebench.targets import parsers

NA = "not available"
ROOT = Path("/")
THERMAL = "sys/class/thermal"
CPUFREQ = "sys/devices/system/cpu/cpufreq"

# Zones whose reading is a fixed placeholder, not a measurement: NVIDIA documents that Jetson's
# PMIC-Die zone always reads 100 C (balena-os/balena-jetson#142 cites the forum answer). They stay in
# the readings but never count towards the maximum temperature (cool-down, throttle threshold).
PLACEHOLDER_ZONE_PREFIXES = ("PMIC",)

# Cooling devices whose non-zero state lowers a clock: cpufreq caps the CPU, devfreq a GPU/EMC.
# Fans (pwm-fan) and other coolers also have states but do not slow anything down.
CAPPING_COOLING_TYPES = ("cpufreq", "devfreq")

SUBPROCESS_TIMEOUT_S = 5.0


def na(reason: str) -> str:
    """``"not available: <reason>"``."""
    return f"{NA}: {reason}"


def is_na(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(NA)


def _read(path: Path) -> str:
    """The file's text, stripped; raises OSError (PermissionError included) for the caller to word."""
    return path.read_text(errors="replace").strip().strip("\x00")


def _why(exc: OSError, path: Path) -> str:
    if isinstance(exc, PermissionError):
        return na(f"permission denied reading {path}")
    if isinstance(exc, FileNotFoundError):
        return na(f"{path} does not exist")
    return na(f"{path}: {exc.strerror or exc}")


# --- thermal ----------------------------------------------------------------------------------


def thermal_zones(root: Path = ROOT) -> dict[str, float] | str:
    """{zone type: deg C} for every ``/sys/class/thermal/thermal_zone*``. A type that repeats gets the
    zone's name appended (``"cpu-thermal#thermal_zone3"``); zones reading -256 C (absent sensor) or that
    cannot be read are left out. Not available when there are no zones or none can be read."""
    base = root / THERMAL
    zones = _numbered(base, "thermal_zone")
    if not zones:
        return na(f"no thermal zones under {base}")
    out: dict[str, float] = {}
    first_error = None
    for z in zones:
        try:
            kind = _read(z / "type") or z.name
            value = int(_read(z / "temp")) / 1000
        except (OSError, ValueError) as exc:
            first_error = first_error or (_why(exc, z) if isinstance(exc, OSError) else na(f"{z}/temp is not a number"))
            continue
        if value == parsers.ABSENT_SENSOR_C:
            continue
        out[kind if kind not in out else f"{kind}#{z.name}"] = value
    return out if out else (first_error or na(f"no readable thermal zone under {base}"))


def _zone_number(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else -1


def _numbered(base: Path, prefix: str) -> list[Path]:
    """``base/prefix*`` in numeric order (thermal_zone2 before thermal_zone10); none if ``base`` is missing."""
    return sorted(base.glob(f"{prefix}*"), key=lambda p: _zone_number(p.name)) if base.is_dir() else []


def max_temperature(zones: dict[str, float]) -> float | None:
    """The hottest zone, placeholder zones (PMIC-Die) excluded; None if none is left."""
    values = [v for k, v in zones.items() if not k.startswith(PLACEHOLDER_ZONE_PREFIXES)]
    return max(values) if values else None


def cooling_devices(root: Path = ROOT) -> list[dict[str, Any]] | str:
    """Every ``/sys/class/thermal/cooling_device*`` as {name, type, cur_state, max_state}."""
    base = root / THERMAL
    devs = _numbered(base, "cooling_device")
    if not devs:
        return na(f"no cooling devices under {base}")
    out = []
    for d in devs:
        try:
            out.append({"name": d.name, "type": _read(d / "type"), "cur_state": int(_read(d / "cur_state")),
                        "max_state": int(_read(d / "max_state"))})
        except (OSError, ValueError):
            continue  # one unreadable device (some need root) does not hide the others
    return out if out else na(f"no readable cooling device under {base}")


def capping_cooling_devices(root: Path = ROOT) -> list[Path]:
    """The cooling devices that cap a clock (cpufreq/devfreq types): the monitor polls only these."""
    base = root / THERMAL
    out = []
    for d in _numbered(base, "cooling_device"):
        try:
            kind = _read(d / "type")
        except OSError:
            continue
        if any(t in kind for t in CAPPING_COOLING_TYPES):
            out.append(d)
    return out


def capped(devices: list[dict[str, Any]]) -> dict[str, int]:
    """{type: cur_state} for capping cooling devices whose state is above 0 (the clock is held down)."""
    return {d["type"]: d["cur_state"] for d in devices
            if d["cur_state"] > 0 and any(t in d["type"] for t in CAPPING_COOLING_TYPES)}


def cooling_reason(kind: str, state: int) -> str:
    """``"cpufreq cooling device cpufreq-cpu0 at state 2"``."""
    family = next((t for t in CAPPING_COOLING_TYPES if t in kind), "cooling")
    return f"{family} cooling device {kind} at state {state}"


# --- cpufreq and CPU time -----------------------------------------------------------------------


def _khz_to_mhz(path: Path) -> float | str:
    try:
        text = _read(path)
    except OSError as exc:
        return _why(exc, path)
    return int(text) / 1000 if text.isdigit() else na(f"{path} is not a number")


def cpufreq_policies(root: Path = ROOT) -> list[dict[str, Any]] | str:
    """Per cpufreq policy (a cluster on big.LITTLE): cpus, governor and cur/min/max/cpuinfo_max MHz.

    ``max_mhz`` is the current ceiling (scaling_max_freq, lowered by nvpmodel or a thermal cap);
    ``cpuinfo_max_mhz`` is what the silicon allows."""
    base = root / CPUFREQ
    policies = _numbered(base, "policy")
    if not policies:
        return na(f"no cpufreq policies under {base}")
    out = []
    for p in policies:
        try:
            governor = _read(p / "scaling_governor")
        except OSError as exc:
            governor = _why(exc, p / "scaling_governor")
        try:
            cpus = _read(p / "affected_cpus")
        except OSError as exc:
            cpus = _why(exc, p / "affected_cpus")
        out.append({"policy": p.name, "cpus": cpus, "governor": governor,
                    "cur_mhz": _khz_to_mhz(p / "scaling_cur_freq"), "min_mhz": _khz_to_mhz(p / "scaling_min_freq"),
                    "max_mhz": _khz_to_mhz(p / "scaling_max_freq"),
                    "cpuinfo_max_mhz": _khz_to_mhz(p / "cpuinfo_max_freq")})
    return out


def cpu_cur_mhz(root: Path = ROOT) -> dict[str, float] | str:
    """{policy: current MHz}: one short read per policy, cheap enough for every monitor interval.

    On a Raspberry Pi this is what the kernel asked for; the firmware may run the ARM slower when it
    throttles (raspberrypi/linux#2986), which only ``vcgencmd measure_clock arm`` shows."""
    base = root / CPUFREQ
    policies = _numbered(base, "policy")
    if not policies:
        return na(f"no cpufreq policies under {base}")
    out = {}
    for p in policies:
        value = _khz_to_mhz(p / "scaling_cur_freq")
        if not is_na(value):
            out[p.name] = value
    return out if out else na(f"no readable scaling_cur_freq under {base}")


def cpu_max_mhz(root: Path = ROOT) -> dict[str, float]:
    """{policy: scaling_max_freq MHz}, the ceiling the kernel lets each cluster reach now. A thermal or
    power cap that works through cpufreq QoS lowers it; a ceiling lower than at the start of a cell
    means the cell was capped."""
    base = root / CPUFREQ
    out = {}
    for p in _numbered(base, "policy"):
        value = _khz_to_mhz(p / "scaling_max_freq")
        if not is_na(value):
            out[p.name] = value
    return out


def proc_stat_busy_total(root: Path = ROOT) -> tuple[float, float] | None:
    """(busy, total) CPU seconds over all cores since boot from /proc/stat's first line.

    Busy is everything but idle and iowait, so steal (time the hypervisor gave to another guest) is
    busy: from this process's point of view it is load that is not its own."""
    try:
        with open(root / "proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / hz, total / hz


def load_average() -> list[float] | str:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return na("os.getloadavg() is not supported here")


# --- subprocesses -------------------------------------------------------------------------------


def which(name: str) -> str | None:
    """The tool's path on PATH or in the places boards install it but PATH may miss (/usr/bin,
    /usr/sbin, /opt/vc/bin for old Raspberry Pi OS)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/bin", "/usr/sbin", "/opt/vc/bin"):
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def run(args: list[str], timeout: float = SUBPROCESS_TIMEOUT_S) -> tuple[int, str, str] | str:
    """(returncode, stdout, stderr), or not available when the binary is missing or hangs."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return na(f"{args[0]} not found")
    except PermissionError:
        return na(f"permission denied running {args[0]}")
    except subprocess.TimeoutExpired:
        return na(f"{' '.join(args)} did not answer within {timeout:g} s")
    except OSError as exc:
        return na(f"{args[0]}: {exc}")
    return done.returncode, done.stdout, done.stderr


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


# --- Raspberry Pi -----------------------------------------------------------------------------


def vcgencmd(*args: str) -> str:
    """The reply of ``vcgencmd ARGS`` (first line), or not available with the reason."""
    tool = which("vcgencmd")
    if tool is None:
        return na("vcgencmd not found")
    result = run([tool, *args])
    if isinstance(result, str):
        return result
    code, out, err = result
    if code != 0 or not out.strip():
        return na(f"vcgencmd {' '.join(args)} failed: {_first_line(err) or _first_line(out) or f'exit {code}'}")
    return _first_line(out)


def pi_state() -> dict[str, Any] | str:
    """``vcgencmd measure_temp``, ``get_throttled`` and ``measure_clock arm``; each value or its reason.
    Not available where there is no vcgencmd. Three process spawns: keep it off fast loops."""
    if which("vcgencmd") is None:
        return na("vcgencmd not found")
    out: dict[str, Any] = {}
    for key, args, parse in (("temp_c", ("measure_temp",), parsers.parse_measure_temp),
                             ("throttled", ("get_throttled",), parsers.parse_get_throttled),
                             ("arm_mhz", ("measure_clock", "arm"), parsers.parse_measure_clock)):
        reply = vcgencmd(*args)
        if is_na(reply):
            out[key] = reply
            continue
        try:
            out[key] = parse(reply)
        except ValueError as exc:
            out[key] = na(str(exc))
    if isinstance(out.get("throttled"), parsers.ThrottleState):
        out["throttled"] = out["throttled"].to_dict()
    return out


# --- Jetson -------------------------------------------------------------------------------------


def l4t_release(root: Path = ROOT) -> str:
    """The L4T release from /etc/nv_tegra_release (``"32.7.1"``), or not available."""
    path = root / "etc/nv_tegra_release"
    try:
        text = _read(path)
    except FileNotFoundError:
        return NA  # not a Jetson (or not L4T): plain "not available", the same on every such machine
    except OSError as exc:
        return _why(exc, path)
    return parsers.parse_nv_tegra_release(text) or na(f"{path} has no '# R<major> (release), REVISION: <x.y>' line")


def nvpmodel() -> dict[str, Any] | str:
    """The current power mode from ``nvpmodel -q`` as {name, id}."""
    tool = which("nvpmodel")
    if tool is None:
        return NA  # no nvpmodel at all: plain "not available", the same on every machine without one
    result = run([tool, "-q"])
    if isinstance(result, str):
        return result
    code, out, err = result
    mode = parsers.parse_nvpmodel_query(out)
    if mode is None:
        return na(f"nvpmodel -q printed no 'NV Power Mode' line: {_first_line(err) or _first_line(out) or f'exit {code}'}")
    return {"name": mode.name, "id": mode.id}


def jetson_clocks() -> dict[str, Any] | str:
    """``jetson_clocks --show`` parsed. It reads root-only files, so as any other user this is not
    available with that reason (it is never run through sudo)."""
    tool = which("jetson_clocks")
    if tool is None:
        return NA
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return na(f"jetson_clocks --show needs root (running as uid {os.geteuid()})")
    result = run([tool, "--show"])
    if isinstance(result, str):
        return result
    code, out, err = result
    if code != 0:
        return na(f"jetson_clocks --show failed: {_first_line(err) or _first_line(out) or f'exit {code}'}")
    return parsers.parse_jetson_clocks_show(out)


def tegrastats_path() -> str:
    return which("tegrastats") or NA


# --- NVIDIA GPU (NVML) ------------------------------------------------------------------------

# NVML clock throttle (clocks event) reason bits, from nvml.h. The ones in THROTTLING lower clocks
# because of power or heat; idle, application/display clock settings and sync boost do not mean the
# measurement was slowed by the environment.
NVML_REASONS = {
    0x1: "gpu idle",
    0x2: "applications clocks setting",
    0x4: "sw power cap",
    0x8: "hw slowdown",
    0x10: "sync boost",
    0x20: "sw thermal slowdown",
    0x40: "hw thermal slowdown",
    0x80: "hw power brake slowdown",
    0x100: "display clock setting",
}
NVML_THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def nvml_reasons(mask: int, throttling_only: bool = False) -> list[str]:
    bits = mask & NVML_THROTTLING if throttling_only else mask
    return [name for bit, name in NVML_REASONS.items() if bits & bit]


PYNVML_MISSING = "pynvml not installed (pip install 'edgebench[nvml]', or add nvml to the target profile's extras)"


def _nvml() -> Any:
    """The initialised ``pynvml`` module, or a not-available string."""
    try:
        import pynvml  # nvidia-ml-py; optional, never a dependency of the device side
    except ImportError:
        return na(PYNVML_MISSING)
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...
        return na(f"no NVIDIA driver ({type(exc).__name__}: {exc})")
    return pynvml


def _nv(call: Any, *args: Any) -> Any:
    try:
        value = call(*args)
    except Exception as exc:  # one unsupported query (power on a laptop GPU) is a fact, not a failure
        return na(f"{getattr(call, '__name__', 'nvml')}: {exc}")
    return value.decode() if isinstance(value, bytes) else value


def nvml_gpus(static: bool = False) -> list[dict[str, Any]] | str:
    """Per NVIDIA GPU: name, driver, SM clock and its max, memory used/total (MiB), power and power
    limit (mW), temperature and throttle reasons. ``static=True`` leaves out what changes every second."""
    nv = _nvml()
    if isinstance(nv, str):
        return nv
    try:
        count = nv.nvmlDeviceGetCount()
        driver = _nv(nv.nvmlSystemGetDriverVersion)
        out = []
        for i in range(count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            gpu: dict[str, Any] = {"index": i, "name": _nv(nv.nvmlDeviceGetName, h), "driver": driver,
                                   "sm_max_mhz": _nv(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                                   "power_limit_mw": _nv(nv.nvmlDeviceGetEnforcedPowerLimit, h)}
            mem = _nv(nv.nvmlDeviceGetMemoryInfo, h)
            gpu["memory_total_mib"] = round(mem.total / 2**20) if not is_na(mem) else mem
            if not static:
                gpu["sm_mhz"] = _nv(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
                gpu["memory_used_mib"] = round(mem.used / 2**20) if not is_na(mem) else mem
                gpu["power_mw"] = _nv(nv.nvmlDeviceGetPowerUsage, h)
                gpu["temp_c"] = _nv(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
                mask = _nv(nv.nvmlDeviceGetCurrentClocksThrottleReasons, h)
                gpu["throttle_reasons"] = nvml_reasons(mask) if isinstance(mask, int) else mask
                gpu["throttling"] = nvml_reasons(mask, throttling_only=True) if isinstance(mask, int) else []
            out.append(gpu)
        return out
    except Exception as exc:
        return na(f"NVML query failed ({type(exc).__name__}: {exc})")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


class NvmlReader:
    """Keeps NVML initialised across the monitor's samples (nvmlInit costs milliseconds)."""

    def __init__(self) -> None:
        nv = _nvml()
        self.error = nv if isinstance(nv, str) else None
        self._nv = None if self.error else nv
        self._handles: list[Any] = []
        if self._nv is not None:
            try:
                self._handles = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in range(self._nv.nvmlDeviceGetCount())]
            except Exception as exc:
                self.error = na(f"NVML query failed ({type(exc).__name__}: {exc})")
            if not self._handles and self.error is None:
                self.error = na("NVML sees no GPU")

    def sample(self) -> list[dict[str, Any]]:
        """[{temp_c, sm_mhz, power_mw, throttling}] per GPU; values that fail are None."""
        out = []
        nv = self._nv
        for h in self._handles:
            def get(call: Any, *args: Any) -> Any:
                try:
                    return call(h, *args)
                except Exception:
                    return None
            mask = get(nv.nvmlDeviceGetCurrentClocksThrottleReasons)
            out.append({"temp_c": get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
                        "sm_mhz": get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
                        "power_mw": get(nv.nvmlDeviceGetPowerUsage),
                        "throttling": nvml_reasons(mask, throttling_only=True) if isinstance(mask, int) else []})
        return out

    def close(self) -> None:
        if self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass
            self._nv = None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
