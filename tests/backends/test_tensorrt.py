"""The tensorrt backend without a GPU: what it says here, its builder flags and option defaults, the int8
export TensorRT's explicit quantisation needs, and the evidence read from REAL recorded engine layer
information and builder logs (tests/backends/data/trt_*, each with its source). What needs TensorRT and a
GPU (parsing, building, timing) has never run here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgebench.backends import _trtexec, base
from edgebench.backends.tensorrt import (TensorRTBackend, builder_flags, compute_precision, engine_evidence, int8_fallback,
                                         sparse_layers, trtexec_argv)
from edgebench.backends._trt_layers import parse_layer_info

DATA = Path(__file__).parent / "data"
FP16 = (DATA / "trt_trex_resnet_a100_fp16.json").read_text()
QAT_INT8 = (DATA / "trt_trex_resnet_a100_qat_int8.json").read_text()
SPARSITY_LOG = (DATA / "trt_log_sparsity_devguide.txt").read_text()


def test_registered_and_says_why_it_cannot_run_here():
    assert "tensorrt" in base.names()
    b = base.get("tensorrt")
    assert b.consumes == "onnx" and b.precisions == ("fp32", "fp16", "int8")
    if importlib.util.find_spec("tensorrt") is None:
        avail = b.availability()
        assert not avail.available and avail.reason == "not installed (pip install 'edgebench[tensorrt]' to get tensorrt)"


def test_builder_flags_per_precision_and_sparse_weights():
    assert builder_flags("fp32", {}) == []
    assert builder_flags("fp16", {"sparse": True}) == ["FP16", "SPARSE_WEIGHTS"]
    assert builder_flags("int8", {}) == ["INT8", "FP16"]
    assert builder_flags("int8", {"fp16_fallback": False}) == ["INT8"]
    # TensorRT 11's BuilderFlag has no FP16/INT8 (strongly typed networks; NVIDIA/TensorRT python/src/infer/pyCore.cpp at 11.1)
    trt11 = {"TF32", "SPARSE_WEIGHTS", "REFIT", "DEBUG"}
    assert builder_flags("int8", {"sparse": True}, trt11) == ["SPARSE_WEIGHTS"] and builder_flags("fp16", {}, trt11) == []


def test_the_fp16_onnx_carries_fp16_weights_behind_float32_io(tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from edgebench.models import zoo
    from edgebench.models.nets import small_cnn

    torch.manual_seed(0)
    module = small_cnn(num_classes=10).eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    art = TensorRTBackend().export(zoo.PreparedModel(module, {}), np.zeros((1, 3, 32, 32), np.float32), "fp16", tmp_path)
    graph = onnx.load(str(art.path)).graph
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in graph.input] == [FLOAT] and [o.type.tensor_type.elem_type for o in graph.output] == [FLOAT]
    assert {i.data_type for i in graph.initializer if len(i.dims) == 4} == {FLOAT16}
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # the shared fp32 module is untouched


def test_2_4_recipes_build_sparse_unless_the_suite_says_otherwise():
    b = TensorRTBackend()
    assert b.cell_options({}, {"pattern": "2:4"}) == {"sparse": True}
    assert b.cell_options({"sparse": False}, {"pattern": "2:4"}) == {"sparse": False}
    assert b.cell_options({}, {}) == {}
    # the flag is a build option: a 2:4 cell's engine has its own cache key
    assert "sparse" in b.build_options


def test_sparse_kernels_k_of_n_from_the_builders_own_lines():
    log = _trtexec.parse_log(SPARSITY_LOG)  # TensorRT Developer Guide's example: eligible conv1-3, picked conv2, conv3
    got = sparse_layers([], log.sparse_eligible, log.sparse_picked)
    assert (got["converted"], got["sparse_ran"], got["dense_ran"], got["noun"]) == (3, 2, ["conv1"], "eligible")


def test_without_builder_lines_the_engines_layers_decide():
    layers = parse_layer_info(FP16)  # trex's A100 ResNet fp16 engine: no sparse weights
    got = sparse_layers(layers, [], [])
    assert got["converted"] == 21 and got["sparse_ran"] == 0 and len(got["dense_ran"]) == 21 and got["source"] == "engine layers"


def test_an_int8_engines_convs_compute_int8_even_where_they_write_fp16():
    layers = parse_layer_info(QAT_INT8)  # trex's QAT ResNet: i8f16 tactics write FP16 for the residual adds
    convs = [layer for layer in layers if layer.weights]
    assert len(convs) == 21 and {compute_precision(layer) for layer in convs} == {"int8"}
    assert any(layer.precision == "fp16" for layer in convs)  # the output format alone would have said fp16
    assert int8_fallback(layers, "int8") == []
    # the same rule on a recorded fp16 engine: had it been asked for int8, all its 21 weighted layers fell back
    assert len(int8_fallback(parse_layer_info(FP16), "int8")) == 21
    assert int8_fallback(parse_layer_info(FP16), "fp16") == []


def test_engine_evidence_from_recorded_layer_information():
    build = {"flags": ["INT8", "FP16", "SPARSE_WEIGHTS"], "tensorrt": "10.3.0", "gpu": "not stated", "compute_capability": "8.0",
             "sparse_eligible": [], "sparse_picked": []}
    ev = engine_evidence(QAT_INT8, build, "int8", {"conv1.weight + QuantizeLinear_7 + Conv_9": 0.05}, 3)
    assert ev.runtime == "tensorrt" and len(ev.layers) == 37
    first = next(layer for layer in ev.layers if layer.name == "conv1.weight + QuantizeLinear_7 + Conv_9")
    assert first.kernel.startswith("ampere_fp32_icudnn_int8x4_128x64_relu_medium_nn_v1") and first.precision == "int8" and first.time_ms == 0.05
    assert ev.details["sparse_layers"]["sparse_ran"] == 0 and ev.sparse_kernels is False
    assert ev.details["int8_fallback"] == [] and ev.details["layer_summary"]["weighted"] == 21
    plain = engine_evidence(FP16, {"flags": ["FP16"]}, "fp16")
    assert "sparse_layers" not in plain.details  # sparse weights not asked for: no k-of-n claim either way


def test_trtexec_gets_the_same_onnx_shape_and_flags():
    argv = trtexec_argv("/usr/src/tensorrt/bin/trtexec", Path("/m/model.onnx"), "input", [8, 3, 224, 224], ["INT8", "FP16", "SPARSE_WEIGHTS"])
    assert argv == ["/usr/src/tensorrt/bin/trtexec", "--onnx=/m/model.onnx", "--shapes=input:8x3x224x224", "--fp16", "--int8", "--sparsity=enable"]


def test_the_int8_onnx_is_symmetric_signed_int8_as_explicit_quantisation_needs(tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from edgebench.backends.base import Calibration
    from edgebench.models import zoo
    from edgebench.models.nets import small_cnn

    torch.manual_seed(0)
    model = zoo.PreparedModel(small_cnn(num_classes=10).eval(), {"factory": "edgebench.models.zoo:small_cnn", "kwargs": {"num_classes": 10}})
    images = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
    art = TensorRTBackend().export(model, images[:1], "int8", tmp_path, Calibration(images))
    graph = onnx.load(str(art.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert art.facts["quantization"]["activations"] == "int8 symmetric per-tensor"


def test_every_tensorrt_attribute_the_backend_uses_exists_in_the_installed_module():
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed here (pip install 'edgebench[tensorrt]': GB of libraries)")
    for name in ("Builder", "OnnxParser", "Runtime", "ILogger", "IProfiler", "TensorIOMode", "LayerInformationFormat", "ProfilingVerbosity",
                 "MemoryPoolType", "BuilderFlag", "nptype"):
        assert hasattr(trt, name), name
    assert hasattr(trt.BuilderFlag, "SPARSE_WEIGHTS")  # FP16/INT8 exist in 10.x only: builder_flags asks the installed set
    assert hasattr(trt.LayerInformationFormat, "JSON") and hasattr(trt.ProfilingVerbosity, "DETAILED")
    for method in ("create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"):
        assert hasattr(trt.Builder, method), method
    for method in ("create_execution_context", "create_engine_inspector", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype"):
        assert hasattr(trt.ICudaEngine, method), method
    for method in ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"):
        assert hasattr(trt.IExecutionContext, method), method


# -- the session's bookkeeping, with host stand-ins for TensorRT's engine and the CUDA binding ----------

class HostCuda:
    """The _trt_cuda interface on the host: "device" buffers are numpy arrays, events read the host clock."""

    name = "host stand-in"

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}

    def pinned(self, shape, dtype):
        return np.zeros(shape, dtype)

    def malloc(self, nbytes):
        ptr = len(self.mem) + 1
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def stream(self):
        return "stream"

    def handle(self, stream):
        return 7

    def htod(self, dst, src, stream):
        self.mem[dst][:] = src.view(np.uint8).reshape(-1)

    def dtoh(self, dst, src, stream):
        dst.view(np.uint8).reshape(-1)[:] = self.mem[src]

    def event(self):
        return {}

    def record(self, event, stream):
        import time

        event["t"] = time.perf_counter_ns()

    def wait(self, event):
        pass

    def elapsed_ms(self, a, b):
        return (b["t"] - a["t"]) / 1e6

    def mem_info(self):
        return 1 << 30, 1 << 32


class HostEngine:
    """input (N, 4) -> output (N, 3) = input @ W: the few ICudaEngine/IExecutionContext calls TrtSession makes."""

    num_io_tensors = 2
    W = np.arange(12, dtype=np.float32).reshape(4, 3)

    def __init__(self, cuda: HostCuda) -> None:
        self.cuda = cuda

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return "IN" if name == "input" else "OUT"

    def get_tensor_dtype(self, name):
        return "f32"

    def create_execution_context(self):
        engine = self

        class Context:
            addresses: dict = {}

            def set_input_shape(self, name, shape):
                self.shape = shape

            def get_tensor_shape(self, name):
                return (self.shape[0], 3)

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, handle):
                mem = engine.cuda.mem
                x = mem[self.addresses["input"]].view(np.float32).reshape(self.shape)
                mem[self.addresses["logits"]][:] = (x @ engine.W).astype(np.float32).view(np.uint8).reshape(-1)
                return True

        return Context()


def test_the_session_times_copies_and_enqueue_apart_and_keeps_only_the_timed_runs(tmp_path):
    from types import SimpleNamespace

    from edgebench.backends.tensorrt import TrtSession
    from edgebench.bench.contracts.results import MeasureSettings
    from edgebench.bench.measure import time_runs

    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="IN", OUTPUT="OUT"), nptype=lambda dtype: np.float32, __version__="stand-in")
    cuda = HostCuda()
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"\0" * 1000)
    session = TrtSession(trt, HostEngine(cuda), cuda, engine_file, "fp16", {})
    batch = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    prepared = session.prepare_input(batch)
    timed = time_runs(lambda: session.run_timed(prepared), MeasureSettings(warmup_runs=2, warmup_seconds=0, min_runs=6, min_seconds=0),
                      self_timed=True)
    phases = session.phase_samples(len(timed.samples_ns))
    assert phases["end_to_end"] == timed.samples_ns and all(len(v) == 6 for v in phases.values())
    assert np.allclose(session.run_prepared(prepared), batch @ HostEngine.W)
    other = np.ones((2, 4), np.float32)
    assert np.allclose(session.run(other), other @ HostEngine.W)
    assert session.phase_samples(7)["end_to_end"][:6] == timed.samples_ns  # run() keeps no phases; run_prepared() is a timed run
    mem = session.gpu_memory()
    assert mem.weights_mib == pytest.approx(1000 / 2**20) and mem.device_total_mib == 4096
