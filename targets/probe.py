"""The environment fingerprint of the machine this runs on.

Runs on the device side (stdlib, numpy and psutil; each runtime only to ask its version). What the
machine does not expose is recorded as ``"not available"``, never guessed.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgebench.backends.base import BACKENDS
from edgebench.bench.contracts.version import __version__
from edgebench.targets import sensors

NA = "not available"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
            return value.strip()
    return platform.processor() or NA


def cpufreq(root: Path | None = None) -> list[dict[str, Any]]:
    """Governor and min/max/current frequency (MHz) per cpufreq policy (a cluster on big.LITTLE), with
    the silicon's ceiling (``cpuinfo_max_mhz``; ``max_mhz`` is the policy's). Read by
    sensors.cpufreq_policies; here every unreadable value is plain "not available", as the environment
    comparison expects, and no policies is an empty list."""
    policies = sensors.cpufreq_policies(root or sensors.ROOT)
    if isinstance(policies, str):
        return []
    return [{k: NA if v == "" or sensors.is_na(v) else v for k, v in p.items()} for p in policies]


def os_release() -> str:
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return NA


def git_commit(path: Path) -> str:
    """The commit of the source tree edgebench runs from, or "not available" for an installed wheel."""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return NA
    if out.returncode != 0:
        return NA
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def backend_versions() -> dict[str, dict[str, Any]]:
    """{backend: {available, version, reason}} for every registered backend, as this machine has it."""
    out = {}
    for name, backend in BACKENDS.items():
        try:
            a = backend().availability()
            out[name] = {"available": a.available, "version": a.version or NA, "reason": a.reason}
        except Exception as exc:  # a broken runtime install is a fact about this machine
            out[name] = {"available": False, "version": NA, "reason": f"{type(exc).__name__}: {exc}"}
    return out


def fingerprint() -> dict[str, Any]:
    """Everything a reader needs to reproduce a number on this machine."""
    freq = psutil.cpu_freq()
    uname = platform.uname()
    source = Path(__file__).resolve().parent
    return {
        "hostname": uname.node,
        "board_model": _read("/proc/device-tree/model") or NA,
        "cpu_model": cpu_model(),
        "machine": uname.machine,
        "logical_cpus": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False) or NA,
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else NA,
        "cpufreq": cpufreq() or NA,
        "cpu_freq_mhz": {"current": freq.current, "min": freq.min, "max": freq.max} if freq else NA,
        "memory_total_mib": round(psutil.virtual_memory().total / 2**20),
        "os": os_release(),
        "kernel": uname.release,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "backends": backend_versions(),
        "edgebench_version": __version__,
        "edgebench_commit": git_commit(source.parent),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else NA,
        **device_facts(),
    }


def _detect_platform(board: str, l4t: str, nvml: object) -> str:
    """jetson / raspberry-pi / nvidia-gpu / generic-linux / other, from facts only: the L4T release file
    or a Jetson device-tree model, a Raspberry Pi device-tree model, an NVIDIA GPU that NVML lists."""
    if not sensors.is_na(l4t) or board.startswith("NVIDIA Jetson") or "jetson" in board.lower():
        return "jetson"
    if board.startswith("Raspberry Pi"):
        return "raspberry-pi"
    if isinstance(nvml, list) and nvml:
        return "nvidia-gpu"
    return "generic-linux" if sys.platform.startswith("linux") else "other"


def device_facts() -> dict[str, Any]:
    """Platform, Jetson power settings, Raspberry Pi firmware state and NVIDIA GPUs; each "not
    available" where the machine has none. ``nvpmodel`` is the mode name: comparisons treat it as a
    power setting (reports/environment.py)."""
    board = _read("/proc/device-tree/model") or ""
    l4t = sensors.l4t_release()
    nvml = sensors.nvml_gpus(static=True)
    mode = sensors.nvpmodel()
    clocks = sensors.jetson_clocks()
    pi = sensors.pi_state() if board.startswith("Raspberry Pi") or sensors.which("vcgencmd") else NA
    return {
        "platform": _detect_platform(board, l4t, nvml),
        "l4t_release": l4t,
        "nvpmodel": mode["name"] if isinstance(mode, dict) else mode,
        "nvpmodel_id": mode["id"] if isinstance(mode, dict) and mode["id"] is not None else NA,
        "jetson_clocks": _clocks_summary(clocks),
        "tegrastats": sensors.tegrastats_path(),
        "pi": pi,
        "nvml": nvml,
    }


def _clocks_summary(clocks: object) -> object:
    if not isinstance(clocks, dict):
        return clocks
    summary = {k: clocks.get(k) for k in ("soc_family", "machine", "online_cpus", "nv_power_mode") if clocks.get(k)}
    summary["cpus_min_equals_max"] = clocks.get("cpus_min_equals_max")
    summary["gpu"] = clocks.get("gpu", NA)
    summary["emc"] = clocks.get("emc", NA)
    return summary


def device_state(root: Path | None = None) -> dict[str, Any]:
    """A cheap snapshot for the start and end of a run: temperatures, current CPU MHz per policy,
    throttle state and load. Takes milliseconds (plus three vcgencmd calls on a Pi)."""
    root = root or sensors.ROOT
    zones = sensors.thermal_zones(root)
    devices = sensors.cooling_devices(root)
    pi = sensors.pi_state()
    gpus = sensors.nvml_gpus()
    reasons: list[str] = []
    if isinstance(pi, dict) and isinstance(pi.get("throttled"), dict):
        reasons += [r for r in pi["throttled"]["reasons"] if not r.endswith("since boot")]
    if isinstance(devices, list):
        reasons += [sensors.cooling_reason(k, v) for k, v in sensors.capped(devices).items()]
    if isinstance(gpus, list):
        reasons += [f"nvml: {r}" for g in gpus for r in g.get("throttling", [])]
    return {
        "timestamp": time.time(),
        "time": sensors.now_iso(),
        "temperatures": {
            "thermal_zones": zones,
            "max_c": sensors.max_temperature(zones) if isinstance(zones, dict) else NA,
            "vcgencmd_c": pi.get("temp_c", NA) if isinstance(pi, dict) else pi,
            "nvml_c": [g.get("temp_c") for g in gpus] if isinstance(gpus, list) else gpus,
        },
        "cpu_mhz": sensors.cpu_cur_mhz(root),
        "throttle": {
            "throttled": bool(reasons),
            "reasons": reasons,
            "pi": pi.get("throttled", NA) if isinstance(pi, dict) else pi,
            "cooling_devices": devices,
            "nvml": [{"index": g["index"], "reasons": g.get("throttle_reasons")} for g in gpus] if isinstance(gpus, list) else gpus,
        },
        "pi_arm_mhz": pi.get("arm_mhz", NA) if isinstance(pi, dict) else pi,
        "load_average": sensors.load_average(),
    }


# -- the host's view of a board's fingerprint ------------------------------------------------------

_EXTRA = re.compile(r"edgebench\[([\w-]+)\]")


def backend_extra(name: str) -> str | None:
    """The edgebench extra that installs backend ``name`` (from its install hint), if any."""
    backend = BACKENDS.get(name) if name in BACKENDS else None
    m = _EXTRA.search(getattr(backend, "install_hint", "") or "")
    return m.group(1) if m else None


def for_board(fp: dict[str, Any], target: str, extras: list[str], backends: list[str] | None = None) -> dict[str, Any]:
    """A board's fingerprint as its profile sees it: install hints only for runtimes the profile asks for.

    A board has what `target setup` installed, its profile's ``extras``. A runtime outside them (torch on
    a Pi, NVML without a GPU) is absent on purpose: "not in this target's extras", with no pip command
    that would be wrong advice on the board. A wanted runtime that is missing points at `target setup`.
    An installed wheel has no git commit: the commit field says so and names the source digest.
    """
    out = dict(fp)
    setup = f"`edgebench target setup {target}` installs the profile's extras"
    quiet = f"not in this target's extras ({', '.join(extras) or 'none'})"
    runtimes = {}
    for name, info in (fp.get("backends") or {}).items():
        if isinstance(info, dict) and not info.get("available"):
            wanted = backend_extra(name) in extras or (backends is not None and name in backends)
            info = {**info, "reason": f"{_without_hint(info.get('reason') or 'not installed')}; {setup}" if wanted else f"not installed: {quiet}"}
        runtimes[name] = info
    if "backends" in fp:
        out["backends"] = runtimes
    if "nvml" not in extras:
        out = _replace_text(out, sensors.PYNVML_MISSING, f"pynvml {quiet}")
    if out.get("edgebench_commit") == NA and out.get("edgebench_source"):
        out["edgebench_commit"] = f"installed wheel, source {out['edgebench_source']}"
    return out


def _without_hint(reason: str) -> str:
    return re.sub(r"\s*\(pip install [^)]*\)", "", reason)


def _replace_text(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace_text(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_text(v, old, new) for v in value]
    return value
