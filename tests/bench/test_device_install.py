"""The device side: `pip install edgebench[litert]` or `[onnxruntime]` in a fresh venv pulls no torch and
runs a cell from artifacts the host built (int8 and fp32), as a board would. Installs from the package
registry (pinned by constraints.txt), so it is slow; the pip cache makes reruns quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.bench.contracts.results import CellResult, MeasureSettings
from edgebench.bench.worker import CellSpec
from edgebench.models import recipes
from edgebench.models.cache import Cache
from edgebench.bench.prepare import Preparer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package folders (building in place would write build/ into the repo)."""
    import shutil
    import tomllib

    src = tmp_path_factory.mktemp("device-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("device-wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [whl] = dist.glob("edgebench-*.whl")
    return whl


def device_venv(tmp: Path, wheel: Path, extra: str) -> Path:
    """A fresh venv with only edgebench[extra] installed (no system site-packages)."""
    venv = tmp / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), f"edgebench[{extra}] @ {wheel.as_uri()}"],
                          capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return py


def run_cell(py: Path, spec: CellSpec, tmp: Path) -> dict:
    spec_path, out = tmp / f"{spec.backend}-{spec.precision}.json", tmp / f"{spec.backend}-{spec.precision}.result.json"
    spec_path.write_text(spec.to_json())
    proc = subprocess.run([str(py), "-m", "edgebench.bench.worker", "run", str(spec_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("extra,backend", [("litert", "litert"), ("onnxruntime", "onnxruntime")])
def test_device_venv_has_no_torch_and_runs_host_built_int8(built, wheel, tmp_path, extra, backend):
    prep = Preparer(Cache(built.cache_root), log=lambda _: None)
    art = prep.artifact("small_cnn", recipes.load("dense"), backend, "int8")
    py = device_venv(tmp_path, wheel, extra)

    listed = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, env=ENV, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not names & {"torch", "onnx", "torch-pruning", "litert-torch", "jax", "scikit-learn"}, sorted(names)

    spec = CellSpec(cell_key=f"small_cnn/dense/{backend}/int8/b1/device", backend=backend, precision="int8",
                    artifact=str(art.dir / art.manifest["facts"]["artifact"]), batch=1, eval_data=str(built.eval_npz),
                    options={"threads": 1}, measure=MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=20, min_seconds=0.05))
    result = run_cell(py, spec, tmp_path)
    assert result["status"] == "ok", result.get("error")
    assert len(CellResult.from_dict(result).samples_ns) >= 20  # the result file holds them compactly (contracts/samples.py)
    host_top1 = art.manifest["facts"]["export_check"]["top1"]
    assert result["accuracy"]["top1"] == pytest.approx(host_top1)  # the same int8 model, the same answers
    labels = np.load(built.eval_npz)["labels"]
    assert result["accuracy"]["n"] == len(labels)


def test_a_pi_with_only_tflite_runtime_runs_host_built_litert_cells(built, wheel, tmp_path):
    """tflite-runtime stopped at 2.14 (2023) and needs numpy 1.x, yet boards still carry it: the worker
    runs on it with nothing but numpy and psutil beside edgebench, and says what the old delegate took."""
    prep = Preparer(Cache(built.cache_root), log=lambda _: None)
    venv = tmp_path / "venv-tflite-runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    for args in (["tflite-runtime==2.14.0", "numpy<2", "psutil"], ["--no-deps", str(wheel)]):
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, timeout=600, env=ENV)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    infos = {}
    for precision in ("fp32", "int8"):
        art = prep.artifact("small_cnn", recipes.load("dense"), "litert", precision)
        spec = CellSpec(cell_key=f"small_cnn/dense/litert/{precision}/b1/pi", backend="litert", precision=precision,
                        artifact=str(art.dir / art.manifest["facts"]["artifact"]), batch=1, eval_data=str(built.eval_npz),
                        options={"threads": 1}, measure=MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=20, min_seconds=0.05))
        result = run_cell(py, spec, tmp_path)
        assert result["status"] == "ok", result.get("error")
        check = art.manifest["facts"]["export_check"]
        assert result["accuracy"]["top1"] == pytest.approx(check.get("top1", built.dense_facts["top1_torch"]))
        infos[precision] = result["evidence"]
    assert all(i["details"]["interpreter"] == "tflite-runtime 2.14.0" for i in infos.values())
    assert infos["fp32"]["delegation"]["delegate"] == "XNNPACK" and infos["fp32"]["delegation"]["undelegated"] == []
    # whatever 2.14's delegate does with int8, the result says it op by op
    assert infos["int8"]["delegation"]["delegated_ops"] + len(infos["int8"]["delegation"]["undelegated"]) == infos["int8"]["delegation"]["total_ops"] > 0
