"""target setup: what a worker-only install puts on a board, read from the wheel's own metadata."""

from __future__ import annotations

import asyncio
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from edgebench.bench.cli_targets import setup_summary
from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.setup import remove_old_wheels, worker_requirements


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from edgebench.targets.setup import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_worker_install_is_numpy_psutil_and_the_runtimes(wheel):
    assert worker_requirements(wheel, ["onnxruntime", "litert"]) == ["numpy>=1.23", "psutil>=5.9", "onnxruntime>=1.17", "ai-edge-litert>=1.0"]
    assert worker_requirements(wheel, []) == ["numpy>=1.23", "psutil>=5.9"]
    gpu = worker_requirements(wheel, ["onnxruntime", "tensorrt", "nvml"])
    assert gpu[2:] == ["onnxruntime>=1.17", "tensorrt>=10.0", "cuda-python>=12", "nvidia-ml-py>=12"]
    assert worker_requirements(wheel, ["tensorrt-system"]) == ["numpy>=1.23", "psutil>=5.9"]  # a Jetson's JetPack TensorRT
    # torch-cuda is the board's own CUDA torch: the extra installs nothing (setup keeps the system's packages visible)
    assert worker_requirements(wheel, ["torch-cuda", "nvml"]) == ["numpy>=1.23", "psutil>=5.9", "nvidia-ml-py>=12"]


def test_the_wheel_ships_the_built_in_profiles(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgebench/targets/profiles/raspberry-pi-5.yaml" in names and "edgebench/bench/worker.py" in names


def test_an_unknown_extra_names_the_known_ones(wheel):
    with pytest.raises(EdgebenchError, match=r"no extra 'onnxrt'; known: .*onnxruntime"):
        worker_requirements(wheel, ["onnxrt"])


class LocalSFTP:
    """The few SFTP calls remove_old_wheels makes, on a local folder standing in for the board."""

    async def exists(self, path: str) -> bool:
        return Path(path).exists()

    async def listdir(self, path: str) -> list[str]:
        return [".", "..", *sorted(p.name for p in Path(path).iterdir())]

    def open(self, path: str, mode: str = "r"):
        class Handle:
            async def __aenter__(self_inner):
                self_inner.f = open(path, mode)
                return self_inner

            async def __aexit__(self_inner, *exc):
                self_inner.f.close()

            async def read(self_inner):
                return self_inner.f.read()

        return Handle()


class LocalBoard:
    def __init__(self, root: Path) -> None:
        self.root, self.sftp = str(root), LocalSFTP()
        self.profile = TargetProfile(name="pi", ssh={"host": "pi.local"})

    async def run(self, argv: list[str], timeout_s: float):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        return type("Proc", (), {"exit_status": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout})()


def test_setup_removes_the_wheels_earlier_setups_left_and_nothing_else(tmp_path):
    files = tmp_path / "files"
    folders = {"old1": {"edgebench-0.1.0-py3-none-any.whl": "a"}, "old2": {"edgebench-0.0.9-py3-none-any.whl": "b"},
               "current": {"edgebench-0.1.0-py3-none-any.whl": "c"}, "artifact": {"model.onnx": "d", "model.onnx.data": "e"},
               "house": {"edgebench-0.1.0-py3-none-any.whl": "f", "numpy-2.0-cp311.whl": "g"}}
    for name, manifest in folders.items():
        (files / name).mkdir(parents=True)
        (files / name / ".complete").write_text(json.dumps(manifest))
    (files / "foreign").mkdir()  # no manifest: not ours
    removed = asyncio.run(remove_old_wheels(LocalBoard(tmp_path), keep=str(files / "current")))
    assert removed == 2
    assert sorted(p.name for p in files.iterdir()) == ["artifact", "current", "foreign", "house"]


def test_setup_summary_hides_hints_for_runtimes_the_profile_does_not_want():
    profile = TargetProfile(name="pi", ssh={"host": "pi"}, extras=["onnxruntime"])
    fp = {"python": "3.11", "machine": "aarch64", "os": "Debian", "edgebench_version": "0.1.0", "edgebench_source": "abc",
          "backends": {"torch": {"available": False, "reason": "not installed (pip install 'edgebench[prune]' to get torch)"},
                       "onnxruntime": {"available": True, "version": "1.20"}}}
    lines = setup_summary("pi", "/v", fp, profile)
    assert "pi: edgebench 0.1.0 (source abc)" in lines and "pi: onnxruntime: 1.20" in lines
    assert "pi: torch: not available (not installed: not in this target's extras (onnxruntime))" in lines
    lines = setup_summary("pi", "/v", {k: v for k, v in fp.items() if k != "edgebench_version"}, profile)
    assert "pi: edgebench not installed on the board (run `edgebench target setup pi`)" in lines
