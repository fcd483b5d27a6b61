"""The environment fingerprint (targets/probe.py): its keys, and "not available" for what is missing."""

from __future__ import annotations

import json
import sys

import pytest

from edgebench.targets import probe, sensors

KEYS = {"hostname", "board_model", "cpu_model", "machine", "logical_cpus", "physical_cores", "cpu_affinity", "cpufreq",
        "cpu_freq_mhz", "memory_total_mib", "os", "kernel", "python", "python_implementation", "numpy", "backends",
        "edgebench_version", "edgebench_commit", "load_average"}


def test_fingerprint_has_the_keys():
    fp = probe.fingerprint()
    assert KEYS <= set(fp)
    assert fp["python"] == sys.version.split()[0]
    assert isinstance(fp["logical_cpus"], int) and fp["logical_cpus"] >= 1
    assert fp["memory_total_mib"] > 0
    assert {"torch", "onnxruntime"} <= set(fp["backends"])
    for info in fp["backends"].values():
        assert set(info) == {"available", "version", "reason"}
    json.dumps(fp)  # it is stored as JSON


def test_read_of_a_missing_file_is_none(tmp_path):
    assert probe._read(str(tmp_path / "nope")) is None
    (tmp_path / "empty").write_text("\n")
    assert probe._read(str(tmp_path / "empty")) is None
    (tmp_path / "dt").write_bytes(b"Raspberry Pi 5\x00")
    assert probe._read(str(tmp_path / "dt")) == "Raspberry Pi 5"


def test_unreadable_machine_reads_as_not_available(monkeypatch, tmp_path):
    monkeypatch.setattr(probe, "_read", lambda path: None)
    monkeypatch.setattr(probe.platform, "processor", lambda: "")
    assert probe.cpu_model() == probe.NA == "not available"
    assert probe.os_release() == "not available"
    fp = probe.fingerprint()
    assert fp["board_model"] == "not available"
    assert fp["cpu_model"] == "not available"
    assert fp["os"] == "not available"


def test_cpu_model_and_os_from_files(monkeypatch):
    files = {"/proc/cpuinfo": "processor\t: 0\nmodel name\t: Cortex-A76 test\n",
             "/etc/os-release": 'NAME="X"\nPRETTY_NAME="Test OS 1.0"\n'}
    monkeypatch.setattr(probe, "_read", lambda path: files.get(path))
    assert probe.cpu_model() == "Cortex-A76 test"
    assert probe.os_release() == "Test OS 1.0"


def test_cpufreq_missing_files_are_not_available(tmp_path):
    policy = tmp_path / "sys/devices/system/cpu/cpufreq" / "policy0"
    policy.mkdir(parents=True)
    (policy / "scaling_governor").write_text("performance\n")
    (policy / "scaling_max_freq").write_text("2400000\n")
    [info] = probe.cpufreq(tmp_path)
    assert info["policy"] == "policy0"
    assert info["governor"] == "performance"
    assert info["max_mhz"] == 2400.0
    assert info["min_mhz"] == info["cur_mhz"] == info["cpus"] == "not available"


def test_no_cpufreq_folder_gives_an_empty_list_and_fingerprint_says_not_available(monkeypatch, tmp_path):
    monkeypatch.setattr(sensors, "ROOT", tmp_path / "none")
    assert probe.cpufreq() == []
    assert probe.fingerprint()["cpufreq"] == "not available"


def test_git_commit_outside_a_repository_is_not_available(tmp_path):
    assert probe.git_commit(tmp_path) == "not available"
    assert probe.git_commit(tmp_path / "does-not-exist") == "not available"


def test_git_commit_without_git_is_not_available(monkeypatch, tmp_path):
    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(probe.subprocess, "run", no_git)
    assert probe.git_commit(tmp_path) == "not available"


def test_broken_backend_is_recorded_not_raised(monkeypatch):
    from edgebench.backends import base

    backend = base.get("onnxruntime")

    def boom(self):
        raise RuntimeError("runtime exploded")

    monkeypatch.setattr(type(backend), "availability", boom)
    info = probe.backend_versions()["onnxruntime"]
    assert info["available"] is False and "runtime exploded" in info["reason"] and info["version"] == "not available"


# -- a board's fingerprint as its profile sees it (probe.for_board) --------------------------------

def _board_fp() -> dict:
    return {
        "backends": {"torch": {"available": False, "version": "not available", "reason": "not installed (pip install 'edgebench[prune]' to get torch)"},
                     "onnxruntime": {"available": False, "version": "not available", "reason": "not installed (pip install 'edgebench[onnxruntime]' to get onnxruntime)"},
                     "litert": {"available": True, "version": "2.3.0", "reason": ""}},
        "nvml": f"not available: {sensors.PYNVML_MISSING}",
        "device_state": {"temperatures": {"nvml_c": f"not available: {sensors.PYNVML_MISSING}"}},
        "edgebench_version": "0.1.0", "edgebench_commit": "not available", "edgebench_source": "abc123",
    }


def test_a_board_shows_no_install_hint_for_runtimes_its_profile_does_not_ask_for():
    fp = probe.for_board(_board_fp(), "pi", ["onnxruntime", "litert"])
    torch = fp["backends"]["torch"]["reason"]
    assert "pip install" not in torch and "not in this target's extras (onnxruntime, litert)" in torch
    assert "pip install" not in fp["nvml"] and "pynvml not in this target's extras" in fp["nvml"]
    assert "pip install" not in fp["device_state"]["temperatures"]["nvml_c"]
    # a runtime the profile wants but the board lacks points at `target setup`, not at the host's pip
    ort = fp["backends"]["onnxruntime"]["reason"]
    assert "pip install" not in ort and "edgebench target setup pi" in ort
    assert fp["backends"]["litert"] == _board_fp()["backends"]["litert"]
    assert fp["edgebench_commit"] == "installed wheel, source abc123"  # never a bare "@ not available"


def test_a_profile_that_asks_for_nvml_keeps_its_hint():
    fp = probe.for_board(_board_fp(), "gpu", ["onnxruntime", "nvml"])
    assert fp["nvml"] == f"not available: {sensors.PYNVML_MISSING}"
    assert probe.backend_extra("torch") == "prune" and probe.backend_extra("onnxruntime") == "onnxruntime"
