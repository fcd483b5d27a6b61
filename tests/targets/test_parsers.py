"""Text parsers (targets/parsers.py) on real output captured from boards: every line in
tests/targets/data/ comes from the public source named in the file's "# source:" header."""

from __future__ import annotations


import pytest

from edgebench.targets import parsers
from edgebench.targets.parsers import CpuCore, parse_tegrastats, total_input_power_mw
from targets_support import DATA, fixture_lines

def test_every_fixture_names_its_source():
    for f in sorted(DATA.glob("*.txt")):
        header = f.read_text().splitlines()[0]
        assert header.startswith("# source: ") and "github.com" in header, f.name


# --- tegrastats ---------------------------------------------------------------------------------


def test_l4t32_nano_plain_milliwatt_rails_and_pom_5v_in_total():
    [line] = fixture_lines("tegrastats_l4t32.7.1-jp4.6.1_nano.txt")
    s = parse_tegrastats(line)
    assert (s.ram_used_mib, s.ram_total_mib) == (1923, 3964)
    assert (s.swap_used_mib, s.swap_total_mib) == (191, 1982)
    assert s.cpus == [CpuCore(5, 1224), CpuCore(4, 1224), CpuCore(3, 1224), CpuCore(6, 1224)]
    assert (s.gr3d_pct, s.gr3d_mhz) == (0, [76])
    assert (s.emc_pct, s.emc_mhz) == (0, 1600)
    assert s.temps["CPU"] == 40 and s.temps["thermal"] == 40 and s.temps["AO"] == 45
    assert s.rails["POM_5V_IN"] == (1750, 1628)
    assert s.rails["POM_5V_CPU"] == (366, 406)
    assert total_input_power_mw(s) == ("POM_5V_IN", 1750)
    assert "IRAM" not in s.rails  # "IRAM 0/252kB(lfb 252kB)" is memory, not a rail


def test_l4t32_xavier_nx_vdd_in_without_units():
    [line] = fixture_lines("tegrastats_l4t32-jp4.x_xaviernx.txt")
    s = parse_tegrastats(line)
    assert s.rails["VDD_IN"] == (6140, 5510)
    assert s.rails["VDD_CPU_GPU_CV"] == (2706, 2119)
    assert total_input_power_mw(s) == ("VDD_IN", 6140)  # never VDD_IN + VDD_CPU_GPU_CV + VDD_SOC
    assert s.cpus[-1] == CpuCore(96, 1420)
    assert s.temps["thermal"] == pytest.approx(31.35)
    assert (s.gr3d_pct, s.gr3d_mhz) == (0, [1109])
    assert "MTS" not in s.rails and "APE" not in s.rails


def test_jetpack5_xavier_nx_mw_rails_timestamp_and_bracketed_gpu_clock():
    [line] = fixture_lines("tegrastats_l4t35.4.1-jp5.1.2_xaviernx.txt")
    s = parse_tegrastats(line)
    assert s.timestamp == "07-09-2024 13:31:31"
    assert s.rails["VDD_IN"] == (2763, 2846)
    assert total_input_power_mw(s) == ("VDD_IN", 2763)
    assert s.gr3d_mhz == [114]
    assert s.cpus[0] == CpuCore(23, 1397) and s.cpus[1] == CpuCore(17, 1192)
    assert s.temps["CPU"] == 46.5 and s.temps["PMIC"] == 50


def test_jetpack6_orin_nano():
    [line] = fixture_lines("tegrastats_l4t36.4-jp6_orinnano.txt")
    s = parse_tegrastats(line)
    assert s.timestamp == "11-15-2024 08:38:09"
    assert (s.ram_used_mib, s.ram_total_mib) == (6185, 7620)
    assert len(s.cpus) == 6 and all(c == CpuCore(c.load_pct, 729) for c in s.cpus)
    assert (s.gr3d_pct, s.gr3d_mhz) == (63, [621])
    assert (s.emc_pct, s.emc_mhz) == (43, 2133)
    assert s.temps["tj"] == pytest.approx(53.968)
    assert s.temps["gpu"] == pytest.approx(53.343)
    assert s.rails == {"VDD_IN": (12479, 12479), "VDD_CPU_GPU_CV": (4667, 4667), "VDD_SOC": (2817, 2817)}
    assert total_input_power_mw(s) == ("VDD_IN", 12479)


def test_orin_with_encoder_engines_ignores_engine_tokens():
    [line] = fixture_lines("tegrastats_release-not-stated_orin-nvenc.txt")
    s = parse_tegrastats(line)
    assert s.cpus[-1] == CpuCore(93, 247)
    assert s.rails["VDD_IN"] == (17946, 15710)
    assert total_input_power_mw(s) == ("VDD_IN", 17946)
    assert set(s.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # NVENC 1%@115 etc. are not rails
    assert s.temps["cv2"] == pytest.approx(60.875)


def test_agx_orin_per_gpc_clocks_absent_sensors_and_no_total_rail():
    [line] = fixture_lines("tegrastats_release-not-stated_agxorin.txt")
    s = parse_tegrastats(line)
    assert len(s.cpus) == 12
    assert (s.gr3d_pct, s.gr3d_mhz) == (0, [0, 0])  # one clock per GPC
    assert "CV0" not in s.temps and "GPU" not in s.temps  # -256C = sensor absent
    assert s.temps["tj"] == pytest.approx(44.343)
    assert s.rails["VIN_SYS_5V0"] == (4025, 4025)
    # AGX Orin prints sub-rails only; VIN_SYS_5V0 is not the module's input, so no total.
    assert total_input_power_mw(s) is None


def test_agx_xavier_named_rails_have_no_total():
    [line] = fixture_lines("tegrastats_l4t31-32-2019_agxxavier.txt")
    s = parse_tegrastats(line)
    assert s.rails["GPU"] == (463, 463) and s.rails["SYS5V"] == (3306, 3306)
    assert total_input_power_mw(s) is None  # GPU+CPU+SOC+CV+VDDRQ+SYS5V are never summed
    assert (s.emc_pct, s.emc_mhz) == (0, None)  # "EMC_FREQ 0%" without a clock
    assert (s.gr3d_pct, s.gr3d_mhz) == (0, [])
    assert len(s.cpus) == 8


def test_agx_xavier_cores_shown_off():
    [line] = fixture_lines("tegrastats_release-not-stated_agxxavier-cores-off.txt")
    s = parse_tegrastats(line)
    assert s.cpus[:4] == [CpuCore(2, 1190), CpuCore(0, 1190), CpuCore(0, 1190), CpuCore(0, 1190)]
    assert s.cpus[4:] == [None, None, None, None]
    assert s.rails["CPU"] == (311, 311)
    assert total_input_power_mw(s) is None


def test_tx2_denver_cores_off_and_vdd_in():
    [line] = fixture_lines("tegrastats_release-not-stated_tx2-denver-off.txt")
    s = parse_tegrastats(line)
    assert s.cpus == [CpuCore(1, 345), None, None, CpuCore(1, 345), CpuCore(0, 345), CpuCore(2, 345)]
    assert total_input_power_mw(s) == ("VDD_IN", 3056)
    assert s.temps["BCPU"] == 37.5 and s.temps["Tdiode"] == 34.25


def test_tx2_without_swap_field():
    first, second = fixture_lines("tegrastats_release-not-stated_tx2.txt")
    s = parse_tegrastats(second)
    assert s.swap_used_mib is None and s.swap_total_mib is None
    assert s.cpus[0] == CpuCore(49, 806)
    assert total_input_power_mw(s) == ("VDD_IN", 3177)
    assert parse_tegrastats(first).gr3d_pct == 53


@pytest.mark.parametrize("cut", [5, 40, 120, 200])
def test_a_truncated_real_line_parses_what_it_has(cut):
    [line] = fixture_lines("tegrastats_l4t36.4-jp6_orinnano.txt")
    s = parse_tegrastats(line[:cut])  # a line cut by a killed child process is data, not a crash
    assert isinstance(s, parsers.TegraSample)


def test_an_empty_line_is_an_empty_sample():
    s = parse_tegrastats("")
    assert s.rails == {} and s.cpus == [] and total_input_power_mw(s) is None


# --- vcgencmd -----------------------------------------------------------------------------------


def _triples(name: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for ln in fixture_lines(name):
        key = ln.split("=")[0].split("(")[0]
        if not out or key in out[-1]:
            out.append({})
        out[-1][key] = ln
    return out


def test_pi4_stress_run():
    snaps = _triples("vcgencmd_pi4.txt")
    assert [parsers.parse_measure_temp(s["temp"]) for s in snaps] == [55.5, 81.8, 82.7, 80.3]
    assert parsers.parse_measure_clock(snaps[0]["frequency"]) == pytest.approx(1300.324224)
    assert parsers.parse_measure_clock(snaps[1]["frequency"]) == pytest.approx(1800.404352)
    start, hot, hotter, end = (parsers.parse_get_throttled(s["throttled"]) for s in snaps)
    assert start.raw == 0 and not start.now and not start.since_boot and start.reasons() == []
    assert hot.raw == 0x80000 and not hot.now and hot.since_boot
    assert hot.soft_temp_limit_occurred and hot.reasons() == ["pi: soft temperature limit has occurred since boot"]
    assert hotter.raw == 0xE0008 and hotter.now and hotter.soft_temp_limit and not hotter.throttled
    assert hotter.reasons() == ["pi: soft temperature limit active",
                                "pi: arm frequency capping has occurred since boot",
                                "pi: throttling has occurred since boot",
                                "pi: soft temperature limit has occurred since boot"]
    assert hotter.reasons(history=False) == ["pi: soft temperature limit active"]
    assert end.raw == 0xE0000 and not end.now
    assert end.arm_freq_capped_occurred and end.throttled_occurred and not end.under_voltage_occurred


def test_pi5_clock_id_zero():
    [snap] = _triples("vcgencmd_pi5.txt")
    assert parsers.parse_measure_temp(snap["temp"]) == 70.3
    assert parsers.parse_measure_clock(snap["frequency"]) == pytest.approx(2400.004352)
    assert parsers.parse_get_throttled(snap["throttled"]).raw == 0


def test_pi3_under_voltage_throttled_now():
    temp, throttled, _ = fixture_lines("vcgencmd_pi3_undervoltage.txt")
    assert parsers.parse_measure_temp(temp) == 38.6
    state = parsers.parse_get_throttled(throttled)
    assert state.under_voltage and state.throttled and not state.arm_freq_capped
    assert state.under_voltage_occurred and state.throttled_occurred
    assert state.now and state.since_boot
    assert state.reasons(history=False) == ["pi: under-voltage", "pi: currently throttled"]
    assert state.to_dict()["raw"] == "0x50005"


def test_pi3bplus_soft_temperature_limit():
    loaded, idle = _triples("vcgencmd_pi3bplus.txt")
    assert parsers.parse_measure_clock(loaded["frequency"]) == 1200.0
    state = parsers.parse_get_throttled(loaded["throttled"])
    assert state.soft_temp_limit and state.soft_temp_limit_occurred and not state.throttled
    assert parsers.parse_get_throttled(idle["throttled"]).raw == 0


@pytest.mark.parametrize("parse", [parsers.parse_measure_temp, parsers.parse_measure_clock, parsers.parse_get_throttled])
def test_vcgencmd_parsers_reject_a_reply_of_the_wrong_kind(parse):
    [snap] = _triples("vcgencmd_pi5.txt")
    wrong = {parsers.parse_measure_temp: snap["throttled"], parsers.parse_measure_clock: snap["temp"],
             parsers.parse_get_throttled: snap["frequency"]}[parse]
    with pytest.raises(ValueError):
        parse(wrong)
    with pytest.raises(ValueError):
        parse("")


# --- Jetson tools -------------------------------------------------------------------------------


def test_nvpmodel_query_with_error_lines_after_the_mode():
    mode = parsers.parse_nvpmodel_query("\n".join(fixture_lines("nvpmodel_nano_jetbot49.txt")))
    assert mode == parsers.NvpModel("5W", 1)


def test_nvpmodel_query_thor():
    assert parsers.parse_nvpmodel_query("\n".join(fixture_lines("nvpmodel_thor_jetpack-nixos460.txt"))) == parsers.NvpModel("MAXN", 0)


def test_nvpmodel_query_without_a_mode_line_is_none():
    [line] = fixture_lines("nvpmodel_nano_jetbot49.txt")[2:3]  # only an "NVPM ERROR" line
    assert parsers.parse_nvpmodel_query(line) is None


def test_jetson_clocks_show():
    info = parsers.parse_jetson_clocks_show("\n".join(fixture_lines("jetson_clocks_show_agxorin_jetson_stats381.txt")))
    assert info["soc_family"] == "tegra234"
    assert info["machine"] == "NVIDIA Orin Jetson-Small Developer Kit"
    assert info["online_cpus"] == "0-11"
    assert info["cpus"]["cpu0"] == {"Online": 1, "Governor": "schedutil", "MinFreq": 115200, "MaxFreq": 2201600,
                                    "CurrentFreq": 2112000}
    assert info["cpus"]["cpu11"]["CurrentFreq"] == 1190400
    assert info["cpus_min_equals_max"] is False  # governor free to scale: clocks not locked


def test_nv_tegra_release():
    r32, r35_4, r35_5 = fixture_lines("nv_tegra_release_tier4-ota-client.txt")
    assert parsers.parse_nv_tegra_release(r32) == "32.6.1"
    assert parsers.parse_nv_tegra_release(r35_4) == "35.4.1"
    assert parsers.parse_nv_tegra_release(r35_5) == "35.5.0"
    assert parsers.parse_nv_tegra_release("") is None
