"""Bad model files and failures in user code: the cause in one line, never input-size advice for a
file that is not a model, and the traceback of a failing cell kept in its stderr file.

Every file is made here in milliseconds: ONNX graphs with onnx.helper (one with an op "FooBar" no
runtime has, checker off), a one-operator .tflite written through LiteRT's flatbuffer schema,
TorchScript archives with torch.jit; "truncated" is the first half of a valid file's bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgebench.backends import base
from edgebench.backends._model_files import ModelFileError, input_mismatch, what_it_is
from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.worker import run_cell

FAST = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.01}


# -- the files ------------------------------------------------------------------------------------

def onnx_model(path: Path, op: str = "Gemm", domain: str = "", side: int | str = "H") -> Path:
    """input (N, 3, H, W) -> GlobalAveragePool -> Flatten -> ``op`` -> (N, 10) logits; ``side`` fixes H and W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side if isinstance(side, int) else "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32), "w")
    last = helper.make_node("Gemm", ["f", "w"], ["logits"]) if op == "Gemm" else helper.make_node(op, ["f"], ["logits"], domain=domain)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]), last]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=opsets), str(path))  # no check_model
    return path


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def tiny_tflite(path: Path, custom: str | None = None) -> Path:
    """A one-operator .tflite (RELU on a (1, 3, 4, 4) float input), or with ``custom`` as its operator."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM if custom else schema.BuiltinOperator.RELU
    code.customCode = custom
    tensors = []
    for name in ("input", "output"):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 3, 4, 4], schema.TensorType.FLOAT32, 0, name
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators = tensors, [0], [1], [op]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def torchscript(path: Path, raises: bool = False) -> Path:
    """A scripted Linear, or a module whose forward raises (a failure inside the user's code)."""
    import torch

    class Boom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool(x.sum() > -1e30):
                raise RuntimeError("user forward failed: boom")
            return x

    torch.jit.save(torch.jit.script(Boom() if raises else torch.nn.Linear(3, 2)), str(path))
    (path.parent / "arch.json").write_text(json.dumps({"torchscript": path.name}))
    return path


def load_error(backend: str, path: Path) -> str:
    with pytest.raises(ModelFileError) as info:
        base.get(backend).load(path, "fp32", {"threads": 1, "batch": 1})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path.name}: ")
    assert "input_size" not in msg  # the file is the problem, not the input shape
    return msg


# -- each runtime names the cause -------------------------------------------------------------------

def test_onnxruntime_names_a_truncated_file_an_unknown_op_and_a_file_of_another_kind(tmp_path: Path) -> None:
    good = onnx_model(tmp_path / "good.onnx")
    msg = load_error("onnxruntime", truncated(good, tmp_path / "cut.onnx"))
    assert "not an ONNX model file (truncated or corrupt" in msg and msg.endswith("re-export it")
    msg = load_error("onnxruntime", onnx_model(tmp_path / "foo.onnx", op="FooBar"))
    assert "onnxruntime does not know op 'FooBar' (domain ai.onnx, opset 17)" in msg
    msg = load_error("onnxruntime", onnx_model(tmp_path / "acme.onnx", op="MyOp", domain="com.acme"))
    assert "does not know op 'MyOp' (custom domain com.acme" in msg
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "(the file is empty)" in load_error("onnxruntime", tmp_path / "empty.onnx")
    lite = tiny_tflite(tmp_path / "lite.onnx")
    assert "it is a TFLite flatbuffer); give it as `tflite:`" in load_error("onnxruntime", lite)


def test_litert_names_a_truncated_flatbuffer_and_an_unregistered_custom_op(tmp_path: Path) -> None:
    good = tiny_tflite(tmp_path / "good.tflite")
    assert base.get("litert").load(good, "fp32", {"threads": 1, "batch": 1}).run(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 3, 4, 4)
    msg = load_error("litert", truncated(good, tmp_path / "cut.tflite"))
    assert "not a TFLite flatbuffer (truncated or corrupt" in msg
    msg = load_error("litert", tiny_tflite(tmp_path / "custom.tflite", custom="FooBar"))
    assert "custom op(s) FooBar" in msg and "not registered" in msg
    onnx_file = onnx_model(tmp_path / "model.tflite")
    assert "give it as `onnx:`" in load_error("litert", onnx_file)


def test_torch_names_random_bytes_a_truncated_archive_and_a_state_dict(tmp_path: Path) -> None:
    import torch

    (tmp_path / "arch.json").write_text(json.dumps({"torchscript": "x"}))
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    assert "not a TorchScript archive (truncated, corrupt or another kind of file" in load_error("torch", tmp_path / "random.pt")
    ts = torchscript(tmp_path / "ok.ts")
    (tmp_path / "arch.json").write_text(json.dumps({"torchscript": "x"}))
    assert "start like a zip archive" in load_error("torch", truncated(ts, tmp_path / "cut.ts"))
    torch.save({"w": torch.zeros(3)}, tmp_path / "state.pt")
    assert "a state_dict or a pickled model" in load_error("torch", tmp_path / "state.pt")


def test_an_input_the_model_refuses_is_told_apart_from_a_failure_inside_a_node(tmp_path: Path) -> None:
    session = base.get("onnxruntime").load(onnx_model(tmp_path / "s64.onnx", side=64), "fp32", {"threads": 1})
    with pytest.raises(Exception) as refused:
        session.run(np.zeros((1, 3, 32, 32), np.float32))
    assert input_mismatch(refused.value)
    lite = base.get("litert").load(tiny_tflite(tmp_path / "t.tflite"), "fp32", {"threads": 1, "batch": 1})
    with pytest.raises(Exception) as wrong_shape:
        lite.run(np.zeros((1, 3, 8, 8), np.float32))
    assert input_mismatch(wrong_shape.value)
    assert not input_mismatch(RuntimeError("Non-zero status code returned while running Reshape node"))
    assert what_it_is(tmp_path / "missing.onnx").startswith("unreadable")


# -- prepare: a bad given file is a configuration error (exit 2), one line ----------------------------

def _given_suite(folder: Path, kind: str, file: str, backend: str) -> Path:
    suite = folder / f"{Path(file).stem}.yaml"
    suite.write_text(yaml.safe_dump({"name": "bad", "models": [{"name": "m", kind: file, "dataset": "digits"}],
                                     "backends": [backend], "measure": FAST}))
    return suite


@pytest.mark.parametrize("make, expect", [
    (lambda d: truncated(onnx_model(d / "good.onnx"), d / "cut.onnx"), "cut.onnx: not an ONNX model file (truncated or corrupt"),
    (lambda d: onnx_model(d / "foo.onnx", op="FooBar"), "foo.onnx: onnxruntime does not know op 'FooBar'"),
    (lambda d: onnx_model(d / "s64.onnx", side=64), "s64.onnx: does not accept digits inputs of shape (3, 32, 32)"),
])
def test_a_bad_given_onnx_file_stops_the_run_with_one_line(tmp_path: Path, make, expect: str) -> None:
    path = make(tmp_path)
    runner = Runner(Paths(tmp_path / "home"), log=lambda _: None)
    with pytest.raises(ConfigError) as info:
        runner.run(load_suite(_given_suite(tmp_path, "onnx", path.name, "onnxruntime")))
    msg = str(info.value)
    assert msg.startswith(expect) and "\n" not in msg
    assert ("input_size" in msg) == ("does not accept" in expect)  # input-size advice only for a real shape mismatch


def test_a_given_tflite_or_torchscript_that_is_no_model_file_stops_the_run(tmp_path: Path) -> None:
    truncated(tiny_tflite(tmp_path / "good.tflite"), tmp_path / "cut.tflite")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    for kind, file, backend, expect in (("tflite", "cut.tflite", "litert", "cut.tflite: not a TFLite flatbuffer"),
                                        ("torchscript", "random.pt", "torch", "random.pt: not a TorchScript archive")):
        runner = Runner(Paths(tmp_path / "home"), log=lambda _: None)
        with pytest.raises(ConfigError, match=expect):
            runner.run(load_suite(_given_suite(tmp_path, kind, file, backend)))


# -- the worker: the cause as the cell's reason; a failure's traceback on stderr -------------------------

def _spec(tmp_path: Path, artifact: Path, backend: str, side: int = 32) -> CellSpec:
    np.savez(tmp_path / "eval.npz", inputs=np.zeros((4, 3, side, side), np.float32), labels=np.arange(4))
    return CellSpec(cell_key=f"m/dense/{backend}/fp32/b1/local", backend=backend, precision="fp32", artifact=str(artifact), batch=1,
                    eval_data=str(tmp_path / "eval.npz"), options={"threads": 1}, measure=MeasureSettings(**FAST, quiet_wait_s=0))


def test_a_cell_whose_file_is_no_model_fails_with_the_cause(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    artifact = onnx_model(tmp_path / "foo.onnx", op="FooBar")
    result = run_cell(_spec(tmp_path, artifact, "onnxruntime"))
    assert result.status == "failed"
    assert result.error.startswith(f"{artifact}: onnxruntime does not know op 'FooBar'") and "\n" not in result.error
    assert "Traceback" in capfd.readouterr().err  # and the cell's stderr file has the whole story


@pytest.mark.slow
def test_a_failure_inside_user_code_keeps_its_traceback_in_the_cells_stderr_file(tmp_path: Path) -> None:
    from edgebench.targets.transport import run_worker

    spec = _spec(tmp_path, torchscript(tmp_path / "model.ts", raises=True), "torch")
    outcome = run_worker(spec, tmp_path / "cells", timeout_s=120, name="cell-0000")
    assert outcome.result.status == "failed" and "boom" in outcome.result.error
    stderr = (tmp_path / "cells" / "cell-0000.stderr.txt").read_text()
    assert "Traceback (most recent call last)" in stderr and "user forward failed: boom" in stderr
    assert outcome.result.traceback and "boom" in outcome.result.traceback


@pytest.mark.slow
def test_cli_exit_2_and_one_line_for_a_truncated_onnx(tmp_path: Path) -> None:
    truncated(onnx_model(tmp_path / "good.onnx"), tmp_path / "cut.onnx")
    suite = _given_suite(tmp_path, "onnx", "cut.onnx", "onnxruntime")
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.cli", "run", str(suite), "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgebench:")]
    assert lines == [lines[0]] and "cut.onnx: not an ONNX model file" in lines[0] and "Traceback" not in proc.stderr
