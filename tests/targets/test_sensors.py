"""Live-system readers (targets/sensors.py) on a fake sysfs tree and fake tools on PATH, and the
probe's device facts (targets/probe.py) on this machine."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from edgebench.targets import probe, sensors
from targets_support import fake_path, fixture_lines, tool, write  # noqa: F401  (fake_path: a fixture)

def zone(root: Path, n: int, kind: str, millideg: int) -> None:
    write(root / f"sys/class/thermal/thermal_zone{n}/type", kind)
    write(root / f"sys/class/thermal/thermal_zone{n}/temp", str(millideg))


def cooler(root: Path, n: int, kind: str, cur: int, top: int) -> None:
    base = root / f"sys/class/thermal/cooling_device{n}"
    write(base / "type", kind)
    write(base / "cur_state", str(cur))
    write(base / "max_state", str(top))


# --- thermal ------------------------------------------------------------------------------------


def test_thermal_zones_read_types_and_degrees(tmp_path):
    zone(tmp_path, 0, "CPU-therm", 45500)
    zone(tmp_path, 1, "PMIC-Die", 100000)
    zone(tmp_path, 2, "GPU-therm", -256000)  # absent sensor: left out
    zone(tmp_path, 10, "CPU-therm", 44000)  # a repeated type keeps both readings
    zones = sensors.thermal_zones(tmp_path)
    assert zones == {"CPU-therm": 45.5, "PMIC-Die": 100.0, "CPU-therm#thermal_zone10": 44.0}
    # The PMIC-Die zone is a fixed 100 C placeholder on Jetson: never the hottest real sensor.
    assert sensors.max_temperature(zones) == 45.5


def test_no_thermal_zones_is_not_available(tmp_path):
    zones = sensors.thermal_zones(tmp_path)
    assert sensors.is_na(zones) and "no thermal zones" in zones
    assert sensors.max_temperature({"PMIC-Die": 100.0}) is None


def test_unreadable_zone_gives_the_permission_reason(tmp_path, monkeypatch):
    zone(tmp_path, 0, "cpu-thermal", 51000)
    real = sensors._read

    def deny(path):
        if path.name == "temp":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(sensors, "_read", deny)
    result = sensors.thermal_zones(tmp_path)
    assert sensors.is_na(result) and "permission denied" in result


def test_cooling_devices_and_which_ones_cap_a_clock(tmp_path):
    cooler(tmp_path, 0, "pwm-fan", 3, 10)  # a fan spinning is not throttling
    cooler(tmp_path, 1, "cpufreq-cpu0", 2, 20)
    cooler(tmp_path, 2, "gpu-devfreq", 0, 8)
    devices = sensors.cooling_devices(tmp_path)
    assert [d["type"] for d in devices] == ["pwm-fan", "cpufreq-cpu0", "gpu-devfreq"]
    assert sensors.capped(devices) == {"cpufreq-cpu0": 2}
    assert sensors.cooling_reason("cpufreq-cpu0", 2) == "cpufreq cooling device cpufreq-cpu0 at state 2"
    assert [p.name for p in sensors.capping_cooling_devices(tmp_path)] == ["cooling_device1", "cooling_device2"]
    assert sensors.is_na(sensors.cooling_devices(tmp_path / "elsewhere"))


# --- cpufreq, /proc/stat ------------------------------------------------------------------------


def test_cpufreq_policies_and_current_mhz(tmp_path):
    for n, (cur, top, hw) in enumerate([(1200000, 1800000, 1800000), (600000, 1500000, 2400000)]):
        p = tmp_path / f"sys/devices/system/cpu/cpufreq/policy{n * 4}"
        write(p / "scaling_cur_freq", str(cur))
        write(p / "scaling_max_freq", str(top))
        write(p / "cpuinfo_max_freq", str(hw))
        write(p / "scaling_min_freq", "600000")
        write(p / "scaling_governor", "ondemand")
        write(p / "affected_cpus", "0 1 2 3" if n == 0 else "4 5 6 7")
    policies = sensors.cpufreq_policies(tmp_path)
    assert [p["policy"] for p in policies] == ["policy0", "policy4"]
    assert policies[1]["max_mhz"] == 1500.0 and policies[1]["cpuinfo_max_mhz"] == 2400.0  # capped below the silicon
    assert policies[0]["governor"] == "ondemand" and policies[0]["cpus"] == "0 1 2 3"
    assert sensors.cpu_cur_mhz(tmp_path) == {"policy0": 1200.0, "policy4": 600.0}
    assert sensors.is_na(sensors.cpu_cur_mhz(tmp_path / "none"))


def test_missing_cpufreq_file_is_not_available(tmp_path):
    write(tmp_path / "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "700000")
    [p] = sensors.cpufreq_policies(tmp_path)
    assert p["cur_mhz"] == 700.0
    assert sensors.is_na(p["max_mhz"]) and "does not exist" in p["max_mhz"]


def test_proc_stat_busy_counts_steal_as_busy(tmp_path):
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    write(tmp_path / "proc/stat", "cpu  100 0 50 800 20 0 10 20 0 0\ncpu0 1 2 3")
    busy, total = sensors.proc_stat_busy_total(tmp_path)
    assert total == pytest.approx(1000 / hz)
    assert busy == pytest.approx((1000 - 800 - 20) / hz)  # steal (20) is in busy
    assert sensors.proc_stat_busy_total(tmp_path / "none") is None


# --- subprocesses -------------------------------------------------------------------------------


def test_run_reports_a_missing_binary_and_a_hang():
    assert sensors.run(["/nonexistent/tool"]) == "not available: /nonexistent/tool not found"
    hung = sensors.run(["sleep", "5"], timeout=0.2)
    assert sensors.is_na(hung) and "did not answer within 0.2 s" in hung


def test_vcgencmd_missing_is_not_available(fake_path, monkeypatch):
    monkeypatch.setattr(sensors, "which", lambda name: None)
    assert sensors.pi_state() == "not available: vcgencmd not found"
    assert sensors.vcgencmd("measure_temp") == "not available: vcgencmd not found"


def test_pi_state_from_vcgencmd(fake_path):
    snap = fixture_lines("vcgencmd_pi4.txt")[6:9]  # temp=82.7'C, frequency(48)=1677427712, throttled=0xe0008
    tool(fake_path, "vcgencmd", f"""case "$1" in
  measure_temp) echo "{snap[0]}" ;;
  measure_clock) echo "{snap[1]}" ;;
  get_throttled) echo "{snap[2]}" ;;
  *) echo "error=1 error_msg=\\"Command not registered\\"" ; exit 1 ;;
esac
""")
    state = sensors.pi_state()
    assert state["temp_c"] == 82.7
    assert state["arm_mhz"] == pytest.approx(1677.427712)
    assert state["throttled"]["raw"] == "0xe0008" and state["throttled"]["now"] is True
    assert "pi: soft temperature limit active" in state["throttled"]["reasons"]
    failed = sensors.vcgencmd("bogus")
    assert sensors.is_na(failed) and "Command not registered" in failed


def test_jetson_tools(fake_path, tmp_path, monkeypatch):
    tool(fake_path, "nvpmodel", "cat <<'EOF'\n" + "\n".join(fixture_lines("nvpmodel_nano_jetbot49.txt")) + "\nEOF\n")
    assert sensors.nvpmodel() == {"name": "5W", "id": 1}
    tool(fake_path, "jetson_clocks", "cat <<'EOF'\n" + "\n".join(fixture_lines("jetson_clocks_show_agxorin_jetson_stats381.txt")) + "\nEOF\n")
    monkeypatch.setattr(sensors.os, "geteuid", lambda: 1000)
    assert sensors.jetson_clocks() == "not available: jetson_clocks --show needs root (running as uid 1000)"
    monkeypatch.setattr(sensors.os, "geteuid", lambda: 0)
    clocks = sensors.jetson_clocks()
    assert clocks["soc_family"] == "tegra234" and clocks["cpus_min_equals_max"] is False
    tool(fake_path, "jetson_clocks", "echo 'Error: permission denied' >&2; exit 1\n")
    assert sensors.jetson_clocks() == "not available: jetson_clocks --show failed: Error: permission denied"
    assert sensors.tegrastats_path() == "not available" or Path(sensors.tegrastats_path()).exists()


def test_jetson_tools_absent(fake_path, monkeypatch):
    monkeypatch.setattr(sensors, "which", lambda name: None)
    assert sensors.nvpmodel() == "not available"
    assert sensors.jetson_clocks() == "not available"


def test_l4t_release_from_a_fake_root(tmp_path):
    line = fixture_lines("nv_tegra_release_tier4-ota-client.txt")[1]
    write(tmp_path / "etc/nv_tegra_release", line)
    assert sensors.l4t_release(tmp_path) == "35.4.1"
    assert sensors.l4t_release(tmp_path / "not-a-jetson") == "not available"
    write(tmp_path / "odd/etc/nv_tegra_release", "something else")
    assert sensors.is_na(sensors.l4t_release(tmp_path / "odd"))


# --- NVML ---------------------------------------------------------------------------------------


def fake_pynvml(mask: int = 0x1, fail_init: bool = False) -> types.ModuleType:
    """A stand-in for pynvml with the calls sensors.py makes (no NVIDIA GPU on the test machine)."""
    nv = types.ModuleType("pynvml")
    nv.NVML_CLOCK_SM, nv.NVML_TEMPERATURE_GPU = 1, 0

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nv.nvmlDeviceGetName = lambda h: b"Test GPU"
    nv.nvmlDeviceGetMaxClockInfo = lambda h, c: 1980
    nv.nvmlDeviceGetClockInfo = lambda h, c: 1410
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000
    nv.nvmlDeviceGetPowerUsage = lambda h: 71234
    nv.nvmlDeviceGetTemperature = lambda h, s: 41
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30, used=2**30)
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: mask
    return nv


def test_nvml_not_installed_or_no_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    assert sensors.nvml_gpus() == sensors.na(sensors.PYNVML_MISSING)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    result = sensors.nvml_gpus()
    assert result.startswith("not available: no NVIDIA driver") and "Library Not Found" in result


def test_nvml_gpus_and_throttle_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(mask=0x1 | 0x40))
    [gpu] = sensors.nvml_gpus()
    assert gpu["name"] == "Test GPU" and gpu["driver"] == "550.54.15"
    assert gpu["sm_mhz"] == 1410 and gpu["sm_max_mhz"] == 1980
    assert gpu["memory_total_mib"] == 81920 and gpu["memory_used_mib"] == 1024
    assert gpu["power_mw"] == 71234 and gpu["power_limit_mw"] == 700000
    assert gpu["throttle_reasons"] == ["gpu idle", "hw thermal slowdown"]
    assert gpu["throttling"] == ["hw thermal slowdown"]  # idle is not a slowdown
    [static] = sensors.nvml_gpus(static=True)
    assert "temp_c" not in static and static["sm_max_mhz"] == 1980
    reader = sensors.NvmlReader()
    assert reader.error is None and reader.sample()[0]["throttling"] == ["hw thermal slowdown"]
    reader.close()


def test_nvml_reason_bits():
    assert sensors.nvml_reasons(0x4 | 0x20 | 0x100) == ["sw power cap", "sw thermal slowdown", "display clock setting"]
    assert sensors.nvml_reasons(0x2 | 0x10 | 0x100, throttling_only=True) == []


# --- probe additions ----------------------------------------------------------------------------


def test_fingerprint_device_facts_on_this_machine(monkeypatch):
    monkeypatch.setattr(probe, "backend_versions", lambda: {})  # importing every runtime is test_probe's job
    fp = probe.fingerprint()
    assert set(fp) >= {"platform", "l4t_release", "nvpmodel", "jetson_clocks", "pi", "nvml"}
    assert fp["platform"] in {"jetson", "raspberry-pi", "nvidia-gpu", "generic-linux", "other"}
    for key in ("l4t_release", "nvpmodel", "jetson_clocks", "pi"):
        assert isinstance(fp[key], (str, dict)), key
    json.dumps(fp)


def test_platform_is_decided_from_facts():
    assert probe._detect_platform("NVIDIA Jetson Orin Nano Developer Kit", "not available", "x") == "jetson"
    assert probe._detect_platform("", "36.4.4", "not available") == "jetson"
    assert probe._detect_platform("Raspberry Pi 5 Model B Rev 1.0", "not available", "x") == "raspberry-pi"
    assert probe._detect_platform("", "not available", [{"name": "H100"}]) == "nvidia-gpu"
    assert probe._detect_platform("", "not available", sensors.na(sensors.PYNVML_MISSING)) in {"generic-linux", "other"}


def test_generic_machine_device_facts_are_not_available(monkeypatch):
    monkeypatch.setattr(probe, "_read", lambda path: None)
    monkeypatch.setattr(sensors, "which", lambda name: None)
    monkeypatch.setattr(sensors, "l4t_release", lambda root=sensors.ROOT: sensors.NA)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    facts = probe.device_facts()
    assert facts["platform"] == "generic-linux"
    assert facts["nvpmodel"] == facts["l4t_release"] == facts["jetson_clocks"] == facts["pi"] == "not available"
    assert facts["nvml"] == sensors.na(sensors.PYNVML_MISSING)


def test_jetson_device_facts(monkeypatch, fake_path, tmp_path):
    tool(fake_path, "nvpmodel", "cat <<'EOF'\n" + "\n".join(fixture_lines("nvpmodel_thor_jetpack-nixos460.txt")) + "\nEOF\n")
    monkeypatch.setattr(probe, "_read", lambda path: "NVIDIA Jetson AGX Thor Developer Kit" if "model" in path else None)
    monkeypatch.setattr(sensors, "l4t_release", lambda root=sensors.ROOT: "38.2.0")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    facts = probe.device_facts()
    assert facts["platform"] == "jetson"
    assert facts["nvpmodel"] == "MAXN" and facts["nvpmodel_id"] == 0


def test_device_state_snapshot(tmp_path):
    zone(tmp_path, 0, "cpu-thermal", 61250)
    cooler(tmp_path, 0, "cpufreq-cpu0", 1, 4)
    state = probe.device_state(tmp_path)
    assert state["temperatures"]["thermal_zones"] == {"cpu-thermal": 61.25}
    assert state["temperatures"]["max_c"] == 61.25
    assert state["throttle"]["throttled"] is True
    assert "cpufreq cooling device cpufreq-cpu0 at state 1" in state["throttle"]["reasons"]
    assert isinstance(state["timestamp"], float)
    json.dumps(state)


def test_device_state_on_this_machine_is_json():
    state = probe.device_state()
    assert set(state) >= {"timestamp", "temperatures", "cpu_mhz", "throttle", "load_average"}
    json.dumps(state)
