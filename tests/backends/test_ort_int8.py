"""ONNX Runtime int8 (backends/ort.py): static QDQ with selectable calibration, dynamic quantisation,
the x86 saturation guard, evidence of the int8 kernels, and pruning + int8 composing."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.backends import base, ort
from edgebench.backends.base import Calibration
from edgebench.models import recipes
from edgebench.models.cache import Cache
from edgebench.bench.prepare import Preparer


@pytest.fixture(scope="module")
def prep(built):
    return Preparer(Cache(built.cache_root), log=lambda _: None)


def _facts(entry):
    return entry.manifest["facts"]


def test_static_int8_runs_int8_kernels_within_one_point(prep, built):
    entry = prep.artifact("small_cnn", recipes.load("dense"), "onnxruntime", "int8")
    facts = _facts(entry)
    ops = facts["optimized_ops"]
    assert ops.get("QLinearConv", 0) >= 3 and "Conv" not in ops  # every conv runs as an int8 kernel
    q = facts["quantization"]
    assert q["kind"] == "static" and q["format"] == "QDQ" and q["activations"] == "uint8 per-tensor"
    assert q["calibration"] == "minmax" and q["calibration_images"] == 128
    check = facts["export_check"]
    assert check["reference"] == "onnxruntime fp32" and check["ok"] and abs(check["delta_pts"]) <= 1.0
    # what the worker measures reproduces the check
    d = built.eval_data()
    from edgebench.bench.worker import evaluate

    session = base.get("onnxruntime").load(entry.dir / facts["artifact"], "int8", {"threads": 1})
    assert np.mean(evaluate(session, d["inputs"], 8).argmax(1) == d["labels"]) == pytest.approx(check["top1"])


def test_dynamic_int8_is_its_own_precision(prep):
    facts = _facts(prep.artifact("small_cnn", recipes.load("dense"), "onnxruntime", "int8-dynamic"))
    assert facts["quantization"]["kind"] == "dynamic"
    assert facts["optimized_ops"].get("ConvInteger", 0) >= 3 and "QLinearConv" not in facts["optimized_ops"]
    assert facts["export_check"]["agreement"] >= 0.97


def test_channel_pruned_and_int8_compose(prep):
    recipe = recipes.load("channel-l2-50")
    facts = _facts(prep.artifact("small_cnn", recipe, "onnxruntime", "int8"))
    pruned = _facts(prep.pruned("small_cnn", recipe))
    dense = _facts(prep.dense("small_cnn"))
    assert pruned["params"] < 0.5 * dense["params"]
    assert facts["optimized_ops"].get("QLinearConv", 0) >= 3
    assert facts["export_check"]["ok"], facts["export_check"]
    q = facts["quantization"]
    tried = q["agreement_on_calibration_images"]
    # auto: full range first; 7-bit weights only when full range disagreed with fp32 (x86 without VNNI)
    assert "full" in tried
    if tried["full"] < ort.SATURATION_AGREEMENT:
        assert "reduced" in tried and q["reduce_range"] == (tried["reduced"] >= tried["full"])
    else:
        assert q["reduce_range"] is False and "reduced" not in tried


@pytest.fixture(scope="module")
def fp32_onnx(built, tmp_path_factory):
    return built.ort_path, np.load(built.dense_dir / "calibration.npy")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods_are_selectable(fp32_onnx, tmp_path, method):
    src, images = fp32_onnx
    minmax = ort.quantize(src, tmp_path / "minmax.onnx", "int8", Calibration(images, "minmax"), {"reduce_range": False})
    other = ort.quantize(src, tmp_path / f"{method}.onnx", "int8", Calibration(images, method), {"reduce_range": False})
    assert other.facts["quantization"]["calibration"] == method
    assert other.path.read_bytes() != minmax.path.read_bytes()  # different activation ranges were chosen


def test_reduce_range_can_be_forced(fp32_onnx, tmp_path):
    src, images = fp32_onnx
    forced = ort.quantize(src, tmp_path / "rr.onnx", "int8", Calibration(images), {"reduce_range": True})
    assert forced.facts["quantization"]["reduce_range"] is True and "7-bit" in forced.facts["quantization"]["weights"]
    with pytest.raises(ValueError, match="reduce_range is 'yes'; use auto, true or false"):
        ort.quantize(src, tmp_path / "bad.onnx", "int8", Calibration(images), {"reduce_range": "yes"})


def test_unknown_calibration_method_and_missing_calibration_are_clear(fp32_onnx, tmp_path):
    src, images = fp32_onnx
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        ort.quantize(src, tmp_path / "x.onnx", "int8", Calibration(images, "kl"))
    with pytest.raises(ValueError, match="needs calibration data"):
        ort.quantize(src, tmp_path / "y.onnx", "int8", None)


def test_a_user_onnx_whose_input_is_not_called_input_calibrates(fp32_onnx, tmp_path):
    # a user's file names its input as its exporter chose ("x" here); calibration feeds that name
    import onnx

    src, images = fp32_onnx
    model = onnx.load(str(src))
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["x" if name == old else name for name in node.input]
    model.graph.input[0].name = "x"
    renamed = tmp_path / "x.onnx"
    onnx.save(model, str(renamed))
    out = ort.quantize(renamed, tmp_path / "q.onnx", "int8", Calibration(images), {"reduce_range": False})
    assert out.facts["quantization"]["kind"] == "static"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "x" and session.run(None, {"x": images[:2].astype(np.float32)})[0].shape[0] == 2
