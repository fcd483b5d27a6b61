"""The device build stage: built on the target by the worker, cached there by what determines it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from edgebench.backends import base
from edgebench.bench import device_build
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.worker import run_cell

FAST = MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.05)


def spec(built, cache, artifact=None, **options) -> CellSpec:
    return CellSpec(cell_key="small_cnn/dense/onnxruntime/fp32/b1/local", backend="onnxruntime", precision="fp32",
                    artifact=str(artifact or built.ort_path), batch=1, eval_data=str(built.eval_npz),
                    options={"threads": 1, **options}, measure=FAST, build_cache=str(cache))


def test_a_cell_without_a_build_step_builds_nothing(built, tmp_path):
    r = run_cell(spec(built, tmp_path / "builds"))
    assert r.status == "ok", r.error
    assert r.evidence.build is None and not (tmp_path / "builds").exists()


def test_the_worker_builds_on_the_device_then_reuses_the_build(built, tmp_path):
    cache = tmp_path / "builds"
    first = run_cell(spec(built, cache, optimize_on_device=True))
    assert first.status == "ok", first.error
    b = first.evidence.build
    assert b.cached is False and b.build_s > 0 and b.size_bytes > 0 and b.artifact == "model.opt.onnx"
    assert (cache / b.key / "model.opt.onnx").exists() and (cache / b.key / "build.json").exists()
    # the key is made of what determines the build, and says so
    assert b.determined_by["onnxruntime"] and b.determined_by["cpu"] and len(b.determined_by["input"]) == 32
    assert "optimised on the device" in first.evidence.details["graph_optimization_level"]
    second = run_cell(spec(built, cache, optimize_on_device=True))
    assert second.status == "ok" and second.evidence.build.cached is True and second.evidence.build.key == b.key
    # the optimised graph computes the same logits
    assert second.fidelity.max_abs_diff < 1e-4 and second.accuracy.top1 == first.accuracy.top1


def test_a_different_input_artifact_is_a_different_build(built, tmp_path):
    other = tmp_path / "copy" / "model.onnx"
    other.parent.mkdir()
    shutil.copy2(built.ort_path, other)
    backend = base.get("onnxruntime")
    same = device_build.determined_by(backend, spec(built, tmp_path, artifact=other, optimize_on_device=True))
    assert same == device_build.determined_by(backend, spec(built, tmp_path, optimize_on_device=True))  # same content, same key
    other.write_bytes(other.read_bytes() + b"\0")
    changed = device_build.determined_by(backend, spec(built, tmp_path, artifact=other, optimize_on_device=True))
    assert changed["input"] != same["input"]


def test_worker_build_command_prints_the_build(built, tmp_path):
    path = tmp_path / "cell.json"
    path.write_text(spec(built, tmp_path / "builds", optimize_on_device=True).to_json())
    out = subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "build", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["built"] is True and facts["cached"] is False and facts["path"].endswith("model.opt.onnx")
    again = json.loads(subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "build", str(path)], capture_output=True, text=True,
                                      timeout=120, check=True).stdout)
    assert again["cached"] is True and again["key"] == facts["key"]
    path.write_text(spec(built, tmp_path / "builds").to_json())
    none = json.loads(subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "build", str(path)], capture_output=True, text=True,
                                     timeout=120, check=True).stdout)
    assert none["built"] is False and "needs no device build" in none["reason"]


def test_a_failed_build_leaves_no_entry(built, tmp_path):
    bad = tmp_path / "bad" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"not an onnx model")
    r = run_cell(spec(built, tmp_path / "builds", artifact=bad, optimize_on_device=True))
    assert r.status == "failed" and "\n" not in r.error
    assert not any(p.name != ".lock" for p in (tmp_path / "builds").iterdir() if (p / "build.json").exists())


def test_batch_sizes_share_a_batch_dynamic_build(built, tmp_path):
    """onnxruntime's optimised graph keeps the dynamic batch axis: one build serves every batch size."""
    import dataclasses

    backend = base.get("onnxruntime")
    one = spec(built, tmp_path, optimize_on_device=True)
    eight = dataclasses.replace(one, batch=8, cell_key="small_cnn/dense/onnxruntime/fp32/b8/local")
    assert device_build.determined_by(backend, one) == device_build.determined_by(backend, eight)
    assert run_cell(one).evidence.build.cached is False
    r8 = run_cell(eight)
    assert r8.status == "ok" and r8.evidence.build.cached is True and r8.fidelity.max_abs_diff < 1e-4
