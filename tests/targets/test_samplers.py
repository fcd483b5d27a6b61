"""The per-cell device monitor (targets/monitor.py over the samplers of targets/samplers.py): timeline and
phases on this machine, the throttle rules on a fake sysfs tree and fake tools, the cool-down gate, the
energy arithmetic, and a sampler added as one class."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest

from edgebench.targets import monitor as monitor_mod, samplers, sensors
from edgebench.targets.monitor import DeviceMonitor, DeviceReport, MonitorSettings, energy_per_inference_mj
from targets_support import fake_path, fixture_lines, tool, write  # noqa: F401  (fake_path: a fixture)

FAST = dict(interval_s=0.03, slow_interval_s=0.03)


@pytest.fixture
def board(tmp_path):
    """A fake root with /proc/stat (copied from this machine) and a sysfs thermal tree."""
    root = tmp_path / "root"
    write(root / "proc/stat", Path("/proc/stat").read_text().splitlines()[0])
    return root


# --- on this machine ----------------------------------------------------------------------------


def test_monitor_on_this_machine_gives_a_phased_cpu_timeline():
    monitor = DeviceMonitor(MonitorSettings(interval_s=0.05))
    assert monitor.status["cpu"] == "ok"
    monitor.start()
    monitor.mark("load")
    time.sleep(0.15)
    monitor.mark("measure")
    sum(i * i for i in range(200_000))  # some work of this process's own
    time.sleep(0.2)
    monitor.mark("evaluate")
    time.sleep(0.1)
    report = monitor.stop()

    phases = [r["phase"] for r in report.timeline]
    assert phases[0] == monitor_mod.UNMARKED and {"load", "measure", "evaluate"} <= set(phases)
    assert phases.index("load") < phases.index("measure") < phases.index("evaluate")
    assert [p["phase"] for p in report.phases] == ["load", "measure", "evaluate"]
    times = [r["t"] for r in report.timeline]
    assert times == sorted(times) and len(times) >= 6
    shares = [r["other_cpu"] for r in report.timeline[1:] if r["other_cpu"] is not None]
    assert shares and all(0.0 <= s <= 1.0 for s in shares)
    assert report.measure_other_cpu is not None
    assert set(report.samplers) == set(samplers.SAMPLERS)
    assert all(v == "ok" or v.startswith("not available") for v in report.samplers.values())
    if report.samplers["thermal"] != "ok":  # a VM without thermal zones: no temperature, no throttling
        assert report.temp_max_c is None
    assert report.throttled == bool(report.throttle_reasons)
    assert report.power_rail is None or report.samplers["tegrastats"] == "ok"
    assert energy_per_inference_mj(report, 0.01, 1) is None or report.power_rail


def test_report_is_json_and_round_trips():
    monitor = DeviceMonitor(MonitorSettings(samplers=["cpu"], interval_s=0.02)).start()
    monitor.mark("measure")
    time.sleep(0.06)
    report = monitor.stop()
    data = json.loads(json.dumps(report.to_dict()))
    assert DeviceReport.from_dict(data) == report
    assert DeviceReport.from_dict({**data, "added_later": 1}) == report  # newer fields are ignored


def test_unknown_and_missing_samplers_say_why(board, fake_path):
    monitor = DeviceMonitor(MonitorSettings(samplers=["thermal", "vcgencmd", "tegrastats", "bogus"]), root=board)
    assert monitor.status["thermal"].startswith("not available: no thermal zones")
    assert monitor.status["vcgencmd"] == "not available: vcgencmd not found"
    assert monitor.status["tegrastats"] == "not available: tegrastats not found"
    assert monitor.status["bogus"].startswith("not available: unknown sampler 'bogus'")
    report = monitor.start().stop()
    assert report.timeline and report.throttled is False and report.temp_source is None


# --- throttle rules -----------------------------------------------------------------------------


def test_capped_cpufreq_cooling_device_throttles_the_cell(board):
    base = board / "sys/class/thermal"
    write(base / "thermal_zone0/type", "cpu-thermal")
    write(base / "thermal_zone0/temp", "52000")
    write(base / "cooling_device0/type", "pwm-fan")
    write(base / "cooling_device0/cur_state", "4")
    write(base / "cooling_device0/max_state", "4")
    write(base / "cooling_device1/type", "cpufreq-cpu0")
    write(base / "cooling_device1/cur_state", "0")
    write(base / "cooling_device1/max_state", "20")
    monitor = DeviceMonitor(MonitorSettings(samplers=["thermal", "cpu"], **FAST), root=board).start()
    time.sleep(0.1)
    write(base / "cooling_device1/cur_state", "1")
    time.sleep(0.1)
    write(base / "cooling_device1/cur_state", "2")
    time.sleep(0.1)
    report = monitor.stop()
    assert report.throttled is True
    assert report.throttle_reasons == ["cpufreq cooling device cpufreq-cpu0 at state 2"]  # the deepest state seen
    assert report.timeline[0]["throttled"] is False  # the spinning fan is not a throttle
    assert report.temp_source == "thermal" and report.temp_max_c == 52.0


def test_temperature_above_the_throttle_threshold(board):
    base = board / "sys/class/thermal"
    write(base / "thermal_zone0/type", "CPU-therm")
    write(base / "thermal_zone0/temp", "80000")
    write(base / "thermal_zone1/type", "PMIC-Die")
    write(base / "thermal_zone1/temp", "100000")  # the fixed placeholder must not trip the threshold
    monitor = DeviceMonitor(MonitorSettings(samplers=["thermal"], throttle_temp_c=85.0, **FAST), root=board).start()
    time.sleep(0.08)
    assert not any(r["throttled"] for r in monitor._rows)
    write(base / "thermal_zone0/temp", "87000")
    time.sleep(0.08)
    write(base / "thermal_zone0/temp", "84000")
    time.sleep(0.05)
    report = monitor.stop()
    assert (report.temp_start_c, report.temp_max_c, report.temp_end_c) == (80.0, 87.0, 84.0)
    assert report.throttle_reasons == ["temperature 87.0 C above throttle threshold 85.0 C"]
    assert report.throttled is True
    hot = [r for r in report.timeline if r["throttled"]]
    assert hot and all(r["temp_c"] == 87.0 for r in hot)


def test_pi_throttle_bits_now_and_new_since_the_start(board, fake_path, tmp_path):
    # Replies from the fixtures: 0x0 (Pi 4 at rest), then 0x50005 (Pi 3 under-voltage, throttled now).
    state = tmp_path / "throttled"
    state.write_text(fixture_lines("vcgencmd_pi4.txt")[2] + "\n")
    pi5 = fixture_lines("vcgencmd_pi5.txt")
    tool(fake_path, "vcgencmd", f"""case "$1" in
  get_throttled) cat "{state}" ;;
  measure_clock) echo "{pi5[1]}" ;;
  measure_temp) echo "{pi5[0]}" ;;
esac
""")
    monitor = DeviceMonitor(MonitorSettings(samplers=["vcgencmd"], **FAST), root=board).start()
    time.sleep(0.15)
    state.write_text(fixture_lines("vcgencmd_pi3_undervoltage.txt")[1] + "\n")
    time.sleep(0.2)
    report = monitor.stop()
    assert report.samplers == {"vcgencmd": "ok"}
    assert report.timeline[0]["pi"] == {"throttled": "0x0", "arm_mhz": 2400.0, "temp_c": 70.3}
    assert report.temp_source == "vcgencmd" and report.temp_max_c == 70.3  # no thermal zone: vcgencmd's reading
    assert report.throttled is True
    assert report.throttle_reasons == ["pi: under-voltage", "pi: currently throttled",
                                       "pi: under-voltage occurred during the run",
                                       "pi: throttling occurred during the run"]


def test_pi_history_bits_from_before_the_run_do_not_count(board, fake_path):
    # throttled=0xe0000 (Pi 4, after a stress run): limits hit earlier since boot, none now.
    tool(fake_path, "vcgencmd", f'echo "{fixture_lines("vcgencmd_pi4.txt")[11]}"\n')
    report = DeviceMonitor(MonitorSettings(samplers=["vcgencmd"], **FAST), root=board).start().stop()
    assert report.timeline[0]["pi"]["throttled"] == "0xe0000"
    assert report.throttled is False and report.throttle_reasons == []


def fake_pynvml(mask: int) -> types.ModuleType:
    """The NVML calls the monitor makes, answering like one GPU (no NVIDIA GPU on the test machine)."""
    nv = types.ModuleType("pynvml")
    nv.NVML_CLOCK_SM, nv.NVML_TEMPERATURE_GPU = 1, 0
    nv.nvmlInit = nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nv.nvmlDeviceGetClockInfo = lambda h, c: 1410
    nv.nvmlDeviceGetPowerUsage = lambda h: 71234
    nv.nvmlDeviceGetTemperature = lambda h, s: 41
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: mask
    return nv


def test_nvml_thermal_slowdown_throttles(board, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(mask=0x1 | 0x40))
    report = DeviceMonitor(MonitorSettings(samplers=["nvml"], **FAST), root=board).start().stop()
    assert report.samplers == {"nvml": "ok"}
    assert report.timeline[0]["gpu"] == [{"temp_c": 41, "sm_mhz": 1410, "power_mw": 71234}]
    assert report.throttle_reasons == ["nvml: hw thermal slowdown"]
    assert report.temp_source == "nvml" and report.temp_max_c == 41.0


def test_nvml_without_pynvml_is_not_available(board, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monitor = DeviceMonitor(MonitorSettings(samplers=["nvml"]), root=board)
    assert monitor.status == {"nvml": sensors.na(sensors.PYNVML_MISSING)}


# --- tegrastats power and energy ----------------------------------------------------------------


def test_tegrastats_idle_and_measure_power(board, fake_path, tmp_path):
    # Real Xavier NX lines: JetPack 5.1.2 (VDD_IN 2763 mW) while idle, JetPack 4.x (VDD_IN 6140) under load.
    idle_line = fixture_lines("tegrastats_l4t35.4.1-jp5.1.2_xaviernx.txt")[0]
    load_line = fixture_lines("tegrastats_l4t32-jp4.x_xaviernx.txt")[0]
    current = tmp_path / "line"
    current.write_text(idle_line + "\n")
    tool(fake_path, "tegrastats", f"""[ "$1" = "--interval" ] || exit 2
while true; do cat "{current}"; sleep $(awk "BEGIN {{print $2/1000}}"); done
""")
    settings = MonitorSettings(samplers=["tegrastats"], interval_s=0.03, idle_s=0.3)
    monitor = DeviceMonitor(settings, root=board).start()  # returns after 0.3 s of idle rows
    current.write_text(load_line + "\n")
    time.sleep(0.15)  # rows still in flight from the idle line land in "unmarked"
    monitor.mark("measure")
    time.sleep(0.3)
    child = monitor.sampler("tegrastats").child.proc
    report = monitor.stop()
    assert child.poll() is not None  # the tegrastats child is gone
    assert report.power_rail == "VDD_IN"
    assert report.idle_power_mw == 2763
    assert report.measure_power_mw == 6140
    assert [p["phase"] for p in report.phases] == ["idle", monitor_mod.UNMARKED, "measure"]
    # (6140 - 2763) mW x 0.010 s / 2 images = 16.885 mJ per image
    assert energy_per_inference_mj(report, 0.010, 2) == pytest.approx(16.885)


def test_tegrastats_without_a_total_rail_gives_no_energy(board, fake_path):
    line = fixture_lines("tegrastats_release-not-stated_agxorin.txt")[0]  # AGX Orin: sub-rails only
    tool(fake_path, "tegrastats", f'while true; do echo "{line}"; sleep 0.02; done\n')
    monitor = DeviceMonitor(MonitorSettings(samplers=["tegrastats"], interval_s=0.03, idle_s=0.1), root=board).start()
    monitor.mark("measure")
    time.sleep(0.1)
    report = monitor.stop()
    assert report.power_rail is None and report.idle_power_mw is None and report.measure_power_mw is None
    assert energy_per_inference_mj(report, 0.01, 1) is None
    assert any(r.get("gr3d_pct") == 0 for r in report.timeline)


def test_energy_arithmetic_by_hand():
    report = DeviceReport(power_rail="VDD_IN", idle_power_mw=2000.0, measure_power_mw=5000.0)
    # (5000 - 2000) mW x 0.004 s per batch / 4 images = 3.0 mJ per image
    assert energy_per_inference_mj(report, 0.004, 4) == pytest.approx(3.0)
    assert energy_per_inference_mj(report.to_dict(), 0.004, 1) == pytest.approx(12.0)
    assert energy_per_inference_mj(DeviceReport(power_rail=None, idle_power_mw=1.0, measure_power_mw=2.0), 1, 1) is None
    assert energy_per_inference_mj(DeviceReport(power_rail="VDD_IN", idle_power_mw=None, measure_power_mw=2.0), 1, 1) is None
    # a measure mean inside the idle noise stays negative rather than being hidden
    assert energy_per_inference_mj(DeviceReport(power_rail="POM_5V_IN", idle_power_mw=3000.0, measure_power_mw=2990.0), 0.5, 1) == pytest.approx(-5.0)


# --- cool-down ----------------------------------------------------------------------------------


def test_cooldown_waits_until_below_the_limit():
    temps = iter([71.0, 66.5, 61.0, 59.5, 58.0])
    monitor = DeviceMonitor(MonitorSettings(samplers=[], thermal_limit_c=60.0, cooldown_max_s=5.0, cooldown_poll_s=0.02),
                            temp_reader=lambda: next(temps))
    t0 = time.monotonic()
    result = monitor.cooldown()
    assert result["reached"] is True
    assert (result["start_c"], result["end_c"], result["limit_c"]) == (71.0, 59.5, 60.0)
    assert result["waited_s"] < 2.5 and time.monotonic() - t0 < 2.5  # three polls, well short of the 5 s bound
    assert monitor.start().stop().cooldown == result


def test_cooldown_gives_up_at_its_bound():
    monitor = DeviceMonitor(MonitorSettings(samplers=[], thermal_limit_c=60.0, cooldown_max_s=0.25, cooldown_poll_s=0.05),
                            temp_reader=lambda: 82.5)
    t0 = time.monotonic()
    result = monitor.cooldown()
    elapsed = time.monotonic() - t0
    assert result["reached"] is False and result["end_c"] == 82.5
    assert 0.25 <= result["waited_s"] < 2.0 and elapsed < 2.0  # stops at the bound, not forever


def test_cooldown_skips_without_a_limit_a_bound_or_a_sensor(board):
    assert DeviceMonitor(MonitorSettings(samplers=[], cooldown_max_s=10)).cooldown() == {"skipped": "no thermal_limit_c set"}
    assert DeviceMonitor(MonitorSettings(samplers=[], thermal_limit_c=50)).cooldown() == {"skipped": "cooldown_max_s is 0"}
    no_sensor = DeviceMonitor(MonitorSettings(samplers=[], thermal_limit_c=50, cooldown_max_s=1), root=board,
                              temp_reader=lambda: None)
    assert no_sensor.cooldown() == {"skipped": "no temperature sensor on this machine"}


def test_cooldown_reads_thermal_zones_by_default(board, monkeypatch):
    write(board / "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    write(board / "sys/class/thermal/thermal_zone0/temp", "41000")
    monkeypatch.setattr(sensors, "which", lambda name: None)
    result = DeviceMonitor(MonitorSettings(samplers=[], thermal_limit_c=45, cooldown_max_s=1), root=board).cooldown()
    assert result["reached"] is True and result["source"] == "thermal" and result["waited_s"] < 0.9  # no poll needed


def test_a_lowered_cpufreq_ceiling_throttles_the_cell(board):
    """A cap applied through cpufreq QoS (no cooling device in sysfs) still shows as a lower scaling_max_freq."""
    policy = board / "sys/devices/system/cpu/cpufreq/policy0"
    write(policy / "scaling_cur_freq", "1500000")
    write(policy / "scaling_max_freq", "1800000")
    monitor = DeviceMonitor(MonitorSettings(samplers=["cpufreq"], **FAST), root=board).start()
    time.sleep(0.1)
    write(policy / "scaling_max_freq", "1500000")
    time.sleep(0.1)
    write(policy / "scaling_max_freq", "1200000")
    time.sleep(0.1)
    report = monitor.stop()
    assert report.throttled is True and report.timeline[0]["throttled"] is False
    assert report.throttle_reasons == ["cpu ceiling policy0 lowered from 1800 to 1200 MHz during the cell"]  # the lowest seen


def test_a_ceiling_that_stays_put_is_not_a_throttle(board):
    policy = board / "sys/devices/system/cpu/cpufreq/policy0"
    write(policy / "scaling_cur_freq", "600000")
    write(policy / "scaling_max_freq", "1500000")  # below cpuinfo_max by configuration (nvpmodel), not during the cell
    write(policy / "cpuinfo_max_freq", "2200000")
    report = DeviceMonitor(MonitorSettings(samplers=["cpufreq"], **FAST), root=board).start().stop()
    assert report.throttled is False and report.timeline[-1]["cpu_mhz"] == {"policy0": 600}


# --- the sampler registry -----------------------------------------------------------------------


def test_every_sampler_is_registered_in_sampling_order():
    names = [cls.name for cls in samplers.in_order()]
    assert names == ["thermal", "cpufreq", "cpu", "vcgencmd", "tegrastats", "nvml"]
    assert set(samplers.SAMPLERS.names()) == set(names)
    monitor = DeviceMonitor(MonitorSettings())
    assert list(monitor.status) == names  # auto asks for every one, in this order


class FakeRail(samplers.Sampler):
    """A board with a new power sensor: one class, no change to the monitor."""

    name, order = "fake-rail", 70

    def check(self) -> str:
        return "ok"

    def start(self) -> None:
        self.power_rail = "VIN"

    def sample(self, row, now):
        row["power_mw"] = 1500.0 if row["phase"] == "idle" else 2500.0
        return ["fake-rail: brown-out"] if row["phase"] == "measure" else []


def test_a_new_sampler_is_one_registered_class(board, monkeypatch):
    monkeypatch.setitem(samplers.SAMPLERS._items, FakeRail.name, FakeRail)
    assert FakeRail.name in [cls.name for cls in samplers.in_order()]
    monitor = DeviceMonitor(MonitorSettings(samplers=["cpu", "fake-rail"], interval_s=0.02, idle_s=0.1), root=board).start()
    monitor.mark("measure")
    time.sleep(0.08)
    report = monitor.stop()
    assert report.samplers == {"cpu": "ok", "fake-rail": "ok"}
    assert report.power_rail == "VIN" and report.idle_power_mw == 1500.0 and report.measure_power_mw == 2500.0
    assert report.throttled is True and report.throttle_reasons == ["fake-rail: brown-out"]  # listed once, not once per row


def test_a_sampler_that_cannot_start_is_not_available_and_the_cell_goes_on(board, monkeypatch):
    class Broken(FakeRail):
        name = "broken"

        def start(self) -> None:
            raise PermissionError("/dev/i2c-1: permission denied")

    monkeypatch.setitem(samplers.SAMPLERS._items, Broken.name, Broken)
    report = DeviceMonitor(MonitorSettings(samplers=["cpu", "broken"], **FAST), root=board).start().stop()
    assert report.samplers["broken"] == "not available: could not start broken: /dev/i2c-1: permission denied"
    assert report.samplers["cpu"] == "ok" and report.power_rail is None and report.throttled is False
