"""The environment fingerprint of the machine this runs on.

Runs on the device side (stdlib + psutil only). What the machine does not expose is recorded as
``"not available"``, never guessed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

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


def cpufreq() -> list[dict[str, Any]]:
    """Governor and min/max/current frequency (MHz) per cpufreq policy (a cluster on big.LITTLE)."""
    root = Path("/sys/devices/system/cpu/cpufreq")
    policies = sorted(root.glob("policy*")) if root.exists() else []
    out = []
    for p in policies:
        def khz(name: str) -> float | str:
            v = _read(str(p / name))
            return int(v) / 1000 if v and v.isdigit() else NA

        out.append({
            "policy": p.name,
            "cpus": _read(str(p / "affected_cpus")) or NA,
            "governor": _read(str(p / "scaling_governor")) or NA,
            "min_mhz": khz("scaling_min_freq"),
            "max_mhz": khz("scaling_max_freq"),
            "cur_mhz": khz("scaling_cur_freq"),
        })
    return out


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
    from edgebench.backends import base

    out = {}
    for name in base.names():
        try:
            a = base.get(name).availability()
            out[name] = {"available": a.available, "version": a.version or NA, "reason": a.reason}
        except Exception as exc:  # a broken runtime install is a fact about this machine
            out[name] = {"available": False, "version": NA, "reason": f"{type(exc).__name__}: {exc}"}
    return out


def fingerprint() -> dict[str, Any]:
    """Everything a reader needs to reproduce a number on this machine."""
    from edgebench.bench import __version__

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
        "numpy": __import__("numpy").__version__,
        "backends": backend_versions(),
        "edgebench_version": __version__,
        "edgebench_commit": git_commit(source.parent),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else NA,
    }
