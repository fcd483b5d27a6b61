"""Bring your own artifact: a user's .tflite and .onnx enter the pipeline at the portable stage.

The files are made here: a small CNN trained on digits for a few steps, converted with the
project's own exporters; the custom-op .tflite is that file with its last operator's code turned into
a custom op no runtime resolves (rewritten through LiteRT's flatbuffer schema).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.runner import Paths, Runner

pytestmark = pytest.mark.slow
MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05}
CUSTOM = "EdgebenchTestOp"


def _with_custom_op(src: Path, dst: Path) -> None:
    """``src`` with its last operator (the classifier) turned into the custom op ``CUSTOM``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    code = model.operatorCodes[model.subgraphs[0].operators[-1].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = CUSTOM
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edgebench.backends import base
    from edgebench.backends.base import Calibration
    from edgebench.models import data, train, zoo
    from edgebench.models.arch import build_module

    root = tmp_path_factory.mktemp("given")
    digits = data.load("digits", 32)
    train.seed_everything(0)
    arch = zoo.entry("small_cnn").arch()
    module = build_module(arch)
    train.train(module, digits, 4, 0.05, seed=0)
    example = digits.x_test[:1]
    prepared = zoo.PreparedModel(module.eval(), arch)
    lite = base.get("litert").export(prepared, example, "fp32", root / "lite", Calibration(example), {})
    (root / "theirs.tflite").write_bytes(lite.path.read_bytes())
    _with_custom_op(root / "theirs.tflite", root / "custom.tflite")
    torch.onnx.export(module.eval(), (torch.from_numpy(example),), str(root / "theirs.onnx"), dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), input_names=["input"])
    return root


def test_given_tflite_and_onnx_run_and_a_custom_op_fails_its_cell(files: Path, tmp_path: Path) -> None:
    suite = files / "given.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "given", "recipes": ["dense"], "measure": MEASURE, "cell_timeout_s": 120,
        "models": [{"name": "lite", "tflite": "theirs.tflite", "dataset": "digits"},
                   {"name": "onnx", "onnx": "theirs.onnx", "dataset": "digits"},
                   {"name": "custom", "tflite": "custom.tflite", "dataset": "digits"}],
        "backends": [{"name": "onnxruntime", "precisions": ["fp32", "int8"]}, {"name": "litert", "precisions": ["fp32", "int8"]}, "torch"],
    }))
    log: list[str] = []
    runner = Runner(Paths(tmp_path / "home"), log=log.append)
    summary = runner.run(load_suite(suite))
    cells = {c.cell_key.rsplit("/", 2)[0]: c for c in runner.store.cells(summary.run_id)}

    lite = cells["lite/dense/litert/fp32"]
    assert lite.status == "ok", lite.error
    assert lite.result.accuracy.top1 > 0.5 and lite.result.evidence.input_layout == "NHWC"
    assert lite.result.evidence.input_shape == [1, 32, 32, 3]  # the shape that was timed
    for key in ("onnx/dense/onnxruntime/fp32", "onnx/dense/onnxruntime/int8"):
        assert cells[key].status == "ok", (key, cells[key].error)
    int8 = cells["onnx/dense/onnxruntime/int8"]
    assert int8.facts["artifact"]["quantization"]["kind"] == "static"  # calibrated on the suite's data
    assert int8.facts["artifact"]["export_check"]["reference"] == "onnxruntime fp32"
    assert abs(int8.result.accuracy.top1 - cells["onnx/dense/onnxruntime/fp32"].result.accuracy.top1) < 0.03
    # fidelity names its reference: the given file's own fp32 outputs; compared with itself it is no reference
    assert int8.result.fidelity.reference == "the given ONNX file theirs.onnx run by onnxruntime at fp32" and int8.result.fidelity.independent
    for same in (cells["onnx/dense/onnxruntime/fp32"], lite):
        assert same.result.fidelity.independent is False, same.cell_key
    assert lite.result.fidelity.reference == "the given .tflite file theirs.tflite run by litert at fp32"

    custom = cells["custom/dense/litert/fp32"]
    assert custom.status == "failed" and CUSTOM in custom.error and "\n" not in custom.error
    # a given file runs only on the backends made from its kind; a given .tflite only at its own precision
    assert cells["lite/dense/torch/fp32"].status == "skipped" and "runs on litert" in cells["lite/dense/torch/fp32"].error
    assert cells["onnx/dense/litert/fp32"].status == "skipped" and "runs on onnxruntime" in cells["onnx/dense/litert/fp32"].error
    assert cells["lite/dense/litert/int8"].status == "skipped" and "precision fp32" in cells["lite/dense/litert/int8"].error
    assert summary.cells_ok == 3 and summary.cells_failed == 1


def test_input_size_sets_the_shape_of_a_model_with_dynamic_dimensions(tmp_path: Path) -> None:
    """An ONNX model whose H and W are dynamic is timed at the dataset's size (input_size)."""
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    dims = {0: torch.export.Dim("batch", min=1, max=64), 2: torch.export.Dim("h", min=8, max=256), 3: torch.export.Dim("w", min=8, max=256)}
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(tmp_path / "dyn.onnx"), dynamo=True, external_data=False, dynamic_shapes=(dims,))
    suite = tmp_path / "dyn.yaml"
    suite.write_text(yaml.safe_dump({"name": "dyn", "models": [{"name": "dyn", "onnx": "dyn.onnx", "dataset": "digits", "input_size": 48}],
                                     "backends": ["onnxruntime"], "measure": MEASURE}))
    runner = Runner(Paths(tmp_path / "home"), log=lambda _: None)
    summary = runner.run(load_suite(suite))
    (cell,) = runner.store.cells(summary.run_id)
    assert cell.status == "ok", cell.error
    assert cell.result.evidence.input_shape == [1, 3, 48, 48]
    assert np.isfinite(cell.result.latency.p50_ms)
    # and the report says so
    from edgebench.reports import render
    from edgebench.reports.tables import load

    out = render.write(runner.store, summary.run_id, tmp_path / "reports")
    assert "- `dyn/dense/onnxruntime/fp32/b1/local`: 1x3x48x48 NCHW (dyn.onnx)" in (out / "report.md").read_text()
    assert "1x3x48x48 NCHW" in (out / "report.html").read_text()  # the cell table's "input timed" column
    assert render.markdown(load(runner.store, summary.run_id)).count("no independent reference") == 2  # agreement column + reference
