"""target setup: what a worker-only install puts on a board, read from the wheel's own metadata."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.targets.setup import worker_requirements


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from edgebench.targets.setup import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_worker_install_is_numpy_psutil_and_the_runtimes(wheel):
    assert worker_requirements(wheel, ["onnxruntime", "litert"]) == ["numpy>=1.23", "psutil>=5.9", "onnxruntime>=1.17", "ai-edge-litert>=1.0"]
    assert worker_requirements(wheel, []) == ["numpy>=1.23", "psutil>=5.9"]
    gpu = worker_requirements(wheel, ["onnxruntime", "tensorrt", "nvml"])
    assert gpu[2:] == ["onnxruntime>=1.17", "tensorrt>=10.0", "nvidia-ml-py>=12"]


def test_the_wheel_ships_the_built_in_profiles(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgebench/targets/profiles/raspberry-pi-5.yaml" in names and "edgebench/bench/worker.py" in names


def test_an_unknown_extra_names_the_known_ones(wheel):
    with pytest.raises(EdgebenchError, match=r"no extra 'onnxrt'; known: .*onnxruntime"):
        worker_requirements(wheel, ["onnxrt"])
