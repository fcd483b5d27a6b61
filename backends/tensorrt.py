"""TensorRT on an NVIDIA GPU: fp32, fp16 and int8 engines built on the target, 2:4 sparse weights.

- **Portable artifact** (host): the onnxruntime backend's ONNX export (dynamic batch). For ``int8`` the
  Q/DQ ONNX of its static quantiser, calibrated on the recipe's calibration subset, in the form TensorRT's
  *explicit quantisation* builds: signed int8 activations and weights, zero points 0. No implicit
  calibrator (deprecated in TensorRT 10).
- **Device build** (target, cached by bench/device_build.py): the ONNX parsed and built into an engine for
  the cell's batch, with the precision's builder flags, ``SPARSE_WEIGHTS`` with ``sparse`` (on by default
  for 2:4 recipes), detailed profiling verbosity; the engine inspector's layer information (JSON) is saved
  beside the engine, and the builder's own log lines saying which layers were eligible for sparse math and
  which picked a sparse implementation are kept. Keyed by the ONNX hash, the flags, TensorRT's version,
  the GPU's name and compute capability, so a second run builds nothing and says so.
- **Timing**: buffers through PyCUDA, else cuda-python (recorded), pinned host memory, the input copied
  in before the timed loop; CUDA events around the host-to-device copy, ``execute_async_v3`` and the
  device-to-host copy (trtexec's H2D / GPU compute / D2H split, with enqueue time on the host and the
  ``launch-bound`` flag), optionally one CUDA graph of the enqueue.
- **Evidence**: per engine layer its type, tactic, precision and sparse weights (backends/_trt_layers.py);
  per-layer times from an IProfiler pass after the timed runs (never mixed with the samples); "sparse
  kernels: k of n eligible layers"; layers of an int8 engine that ran fp16/fp32 (``int8-not-used``).
- **trtexec** (option ``trtexec: true``, where it is on PATH or in /usr/src/tensorrt/bin): the same ONNX
  and flags through trtexec at the device build; its median and p90 are stored beside ours.

Never run on a GPU by its authors (README says so): CI and the development machine have none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends import _trt_cuda, _trt_layers, _trtexec
from edgebench.backends._gpu_timing import Phases
from edgebench.backends.base import Artifact, Availability, Backend, DeviceBuild, Session, missing, register
from edgebench.backends.ort import OrtBackend, quantize
from edgebench.bench.contracts.evidence import Evidence, LayerEvidence
from edgebench.bench.contracts.results import GpuMemory

MIB = 1024 * 1024
ENGINE, LAYERS = "model.engine", "layers.json"
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack's place; PATH is searched first
DEFAULT_WORKSPACE_MIB = 1024


def builder_flags(precision: str, options: dict[str, Any], available: set[str] | None = None) -> list[str]:
    """The ``trt.BuilderFlag`` names a cell's engine is built with (``available``: the installed
    TensorRT's flags). TensorRT 10: fp16 sets FP16; int8 sets INT8 and also allows fp16 for the layers the
    Q/DQ graph leaves unquantised (as ``trtexec --int8 --fp16``) unless ``fp16_fallback: false``.
    TensorRT 11 has no precision flags (every network is strongly typed: the precision is the ONNX's own,
    which is why the fp16 artifact is an fp16 ONNX), so only SPARSE_WEIGHTS remains."""
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"] + (["FP16"] if options.get("fp16_fallback", True) else [])}[precision]
    flags += ["SPARSE_WEIGHTS"] if options.get("sparse") else []
    return [f for f in flags if available is None or f in available]


def trt_flags(trt: Any) -> set[str]:
    """The builder flags the installed TensorRT has."""
    return set(trt.BuilderFlag.__members__)


def half_io(module: Any) -> Any:
    """An fp16 copy of a model behind float32 input and output (the other backends' I/O), for the fp16 ONNX."""
    import copy

    import torch

    class Half(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = copy.deepcopy(module).half().eval()  # the shared fp32 module stays as it is

        def forward(self, x: Any) -> Any:
            return self.inner(x.half()).float()

    return Half().eval()


def sparse_layers(layers: list[_trt_layers.TrtLayer], eligible: list[str], picked: list[str]) -> dict[str, Any]:
    """"Sparse kernels: k of n eligible layers": from the builder's own lists where it printed them
    (names as the builder knows them), else from the engine's layers (weighted layers, HasSparseWeights)."""
    if eligible:
        chosen = set(picked)
        return {"noun": "eligible", "converted": len(eligible), "sparse_ran": len([n for n in eligible if n in chosen]),
                "dense_ran": [n for n in eligible if n not in chosen], "unknown": [], "source": "builder log"}
    weighted = [layer for layer in layers if layer.weights]
    known = [layer for layer in weighted if layer.sparse is not None]
    return {"noun": "eligible", "converted": len(weighted), "sparse_ran": sum(1 for layer in known if layer.sparse),
            "dense_ran": [layer.name for layer in known if not layer.sparse],
            "unknown": [layer.name for layer in weighted if layer.sparse is None], "source": "engine layers"}


# A weighted layer computes in its weights' type: in trex's recorded int8 ResNet every conv has "Weights":
# {"Type": "Int8"} and an i8 tactic (sm80_xmma_fprop_implicit_gemm_interleaved_i8f16_...) while some write
# FP16 or FP32 outputs (for a residual add, or the float head), so the output format alone would call
# int8 layers fp16. The output format decides only for layers without weights.
WEIGHT_TYPES = {"Int8": "int8", "Half": "fp16", "Float": "fp32"}


def compute_precision(layer: _trt_layers.TrtLayer) -> str | None:
    """The precision a layer computed in: its weights' type for weighted layers (None when not printed),
    its output's format otherwise."""
    if layer.weights:
        return WEIGHT_TYPES.get(layer.weights_type or "")
    return layer.precision


def int8_fallback(layers: list[_trt_layers.TrtLayer], precision: str) -> list[str]:
    """Weighted layers of an int8 engine that computed in another precision (fp16/fp32 weights)."""
    if precision != "int8":
        return []
    return [layer.name for layer in layers if layer.weights and compute_precision(layer) not in (None, "int8")]


def layer_evidence(layers: list[_trt_layers.TrtLayer], times_ms: dict[str, float] | None = None) -> list[LayerEvidence]:
    times = times_ms or {}
    return [LayerEvidence(name=layer.name, op=layer.layer_type, kernel=layer.tactic, precision=compute_precision(layer), sparse=layer.sparse,
                          time_ms=times.get(layer.name)) for layer in layers]


class TrtSession(Session):
    """An engine with its execution context, buffers and stream; times itself with CUDA events."""

    own_clock = True

    def __init__(self, trt: Any, engine: Any, cuda: Any, engine_path: Path, precision: str, options: dict[str, Any]) -> None:
        self._trt, self._engine, self._cuda, self._path, self.precision = trt, engine, cuda, engine_path, precision
        self._options = options
        self.cuda_graph = bool(options.get("cuda_graph"))
        self._context = engine.create_execution_context()
        self._stream = cuda.stream()
        self._events = [cuda.event() for _ in range(4)]
        self._phases = Phases()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._graph: Any = None
        self._prepared: Any = None
        self._io_bytes = 0

    def _bind(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pinned host buffers and device buffers for this input shape, bound to the context."""
        trt, engine, ctx, cuda = self._trt, self._engine, self._context, self._cuda
        ctx.set_input_shape(self._input, tuple(batch.shape))
        in_dtype = trt.nptype(engine.get_tensor_dtype(self._input))
        out_shape = tuple(ctx.get_tensor_shape(self._output))
        out_dtype = trt.nptype(engine.get_tensor_dtype(self._output))
        host_in = cuda.pinned(tuple(batch.shape), in_dtype)
        host_in[...] = batch
        host_out = cuda.pinned(out_shape, out_dtype)
        self._d_in, self._d_out = cuda.malloc(host_in.nbytes), cuda.malloc(host_out.nbytes)
        self._io_bytes = host_in.nbytes + host_out.nbytes
        ctx.set_tensor_address(self._input, self._d_in)
        ctx.set_tensor_address(self._output, self._d_out)
        return host_in, host_out

    def _enqueue(self) -> None:
        if self._graph is not None:
            self._cuda.launch_graph(self._graph, self._stream)
        elif not self._context.execute_async_v3(self._cuda.handle(self._stream)):
            raise RuntimeError(f"{self._path}: TensorRT's execute_async_v3 failed (see the worker's stderr for TensorRT's reason)")

    # -- the Session protocol -------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        prepared = self._prepared if self._prepared is not None and self._prepared[0].shape == batch.shape else self.prepare_input(batch)
        host_in, host_out = prepared
        host_in[...] = batch
        self._run_on_stream(prepared, record=False)
        return np.array(host_out, dtype=np.float32)

    def prepare_input(self, batch: np.ndarray) -> Any:
        """Pinned buffers bound once (and the CUDA graph captured on them), before the timed loop."""
        prepared = self._bind(np.ascontiguousarray(batch, dtype=np.float32))
        if self.cuda_graph:
            self._graph = None
            self._enqueue()  # one eager run first: TensorRT allocates lazily on the first enqueue
            self._graph = self._cuda.graph(self._stream, self._enqueue)
        self._prepared = prepared
        return prepared

    def run_prepared(self, prepared: Any) -> Any:
        self._run_on_stream(prepared, record=True)
        return prepared[1]

    def run_timed(self, prepared: Any) -> int:
        return self._run_on_stream(prepared, record=True)

    def _run_on_stream(self, prepared: Any, record: bool) -> int:
        host_in, host_out = prepared
        cuda, stream = self._cuda, self._stream
        start, copied, computed, done = self._events
        t0 = time.perf_counter_ns()
        cuda.record(start, stream)
        cuda.htod(self._d_in, host_in, stream)
        cuda.record(copied, stream)
        self._enqueue()
        cuda.record(computed, stream)
        cuda.dtoh(host_out, self._d_out, stream)
        cuda.record(done, stream)
        enqueue = time.perf_counter_ns() - t0
        cuda.wait(done)
        return self._phases.add(cuda.elapsed_ms(start, done), cuda.elapsed_ms(start, copied), cuda.elapsed_ms(copied, computed),
                                cuda.elapsed_ms(computed, done), enqueue, record)

    def phase_samples(self, runs: int) -> dict[str, list[int]]:
        return self._phases.last(runs)

    def gpu_memory(self) -> GpuMemory:
        """What this session holds on the GPU: the engine (weights), its execution context's activation
        memory and the I/O buffers; the device total from cudaMemGetInfo."""
        engine_bytes = self._path.stat().st_size
        context_bytes = int(getattr(self._engine, "device_memory_size_v2", None) or getattr(self._engine, "device_memory_size", 0) or 0)
        held = (engine_bytes + context_bytes + self._io_bytes) / MIB
        free, total = self._cuda.mem_info()
        return GpuMemory(allocated_peak_mib=held, reserved_peak_mib=held, weights_mib=engine_bytes / MIB,
                         device_used_mib=(total - free) / MIB, device_total_mib=total / MIB)

    def _layer_times(self, runs: int) -> dict[str, float]:
        """Per-layer milliseconds per run from TensorRT's IProfiler, in a pass of its own."""
        trt = self._trt
        totals: dict[str, float] = {}

        class Times(trt.IProfiler):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                totals[layer_name] = totals.get(layer_name, 0.0) + float(ms)

        graph, self._graph = self._graph, None  # a graph replay reports no layers: profile the plain enqueue
        self._context.profiler = Times()
        try:
            for _ in range(runs):
                self._run_on_stream(self._prepared, record=False)
        finally:
            self._context.profiler = None
            self._graph = graph
        return {k: v / runs for k, v in totals.items()}

    def evidence(self) -> Evidence:
        layers_file = self._path.with_name(LAYERS)
        runs = int(self._options.get("profile_runs") or 3)
        times = self._layer_times(runs) if self._prepared is not None and runs > 0 else {}
        ev = engine_evidence(layers_file.read_text() if layers_file.exists() else '{"Layers": []}', _build_facts(self._path),
                             self.precision, times, runs if times else 0)
        ev.version, ev.providers = self._trt.__version__, [f"buffers: {self._cuda.name}"]
        ev.details.update(buffers=self._cuda.name, cuda_graph=self.cuda_graph)
        return ev


def engine_evidence(layer_info: str, build: dict[str, Any], precision: str, times_ms: dict[str, float] | None = None,
                    profile_runs: int = 0) -> Evidence:
    """What ran, from the engine inspector's layer information and the device build's facts (builder
    flags, the builder's sparse-math lists, trtexec's cross-check): per layer its type, tactic,
    precision, sparse weights and profiled time; "sparse kernels: k of n eligible layers" where sparse
    weights were asked for; the weighted layers of an int8 engine that ran fp16/fp32."""
    layers = _trt_layers.parse_layer_info(layer_info)
    asked = "SPARSE_WEIGHTS" in (build.get("flags") or [])
    sparse = sparse_layers(layers, build.get("sparse_eligible") or [], build.get("sparse_picked") or []) if asked else None
    details: dict[str, Any] = {"flags": build.get("flags"), "compute_capability": build.get("compute_capability"),
                               "layer_summary": _trt_layers.summary(layers), "layer_times_pass_runs": profile_runs,
                               "int8_fallback": int8_fallback(layers, precision), "trtexec": build.get("trtexec")}
    if sparse is not None:
        details["sparse_layers"] = sparse
    return Evidence(runtime="tensorrt", version=build.get("tensorrt"), device=build.get("gpu"), input_layout="NCHW", input_dtype="float32",
                    layers=layer_evidence(layers, times_ms), sparse_weights=sum(1 for layer in layers if layer.sparse),
                    sparse_kernels=bool(sparse and sparse["sparse_ran"]) if asked else False, details=details)


def _build_facts(engine_path: Path) -> dict[str, Any]:
    """The device build's own facts, kept beside the engine (the cache manifest's ``facts``)."""
    manifest = engine_path.with_name("build.json")
    if manifest.exists():
        return json.loads(manifest.read_text()).get("facts") or {}
    facts = engine_path.with_name("facts.json")
    return json.loads(facts.read_text()) if facts.exists() else {}


def collecting_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps every message as (severity, text): the sparse-math lines are INFO/VERBOSE."""

    class Collect(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((str(severity).rsplit(".", 1)[-1], str(msg)))

    return Collect()


def _trtexec() -> str | None:
    return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if Path(p).exists()), None)


def trtexec_argv(exe: str, onnx: Path, input_name: str, shape: list[int], flags: list[str]) -> list[str]:
    """trtexec with the same ONNX, input shape and flags as our build, at its own default timing."""
    argv = [exe, f"--onnx={onnx}", f"--shapes={input_name}:{'x'.join(str(d) for d in shape)}"]
    argv += ["--fp16"] * ("FP16" in flags) + ["--int8"] * ("INT8" in flags) + ["--sparsity=enable"] * ("SPARSE_WEIGHTS" in flags)
    return argv


def run_trtexec(onnx: Path, input_name: str, shape: list[int], flags: list[str], timeout_s: float = 900) -> dict[str, Any]:
    """The cross-check: trtexec's own summary (median, p90 of latency and GPU compute), or why not."""
    exe = _trtexec()
    if exe is None:
        return {"skipped": "trtexec is not on PATH nor in /usr/src/tensorrt/bin"}
    argv = trtexec_argv(exe, onnx, input_name, shape, flags)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"trtexec did not finish in {timeout_s:.0f} s", "argv": argv}
    parsed = _trtexec.parse_log(proc.stdout + proc.stderr)
    return {"argv": argv, "exit": proc.returncode, "version": parsed.version, "latency_ms": parsed.latency_ms,
            "gpu_compute_ms": parsed.gpu_compute_ms, "throughput_qps": parsed.throughput_qps, "warnings": parsed.warnings}


@register
class TensorRTBackend(Backend):
    name = "tensorrt"
    consumes = "onnx"
    precisions = ("fp32", "fp16", "int8")
    export_version = 1
    install_hint = "pip install 'edgebench[tensorrt]' cuda-python (a Jetson: JetPack's python3-libnvinfer)"
    options = {
        "sparse": "build with 2:4 sparse weights (SPARSE_WEIGHTS); default: on for 2:4 recipes, off otherwise",
        "fp16_fallback": "int8 engines may run unquantised layers in fp16 (default true, as trtexec --int8 --fp16)",
        "workspace_mib": f"the builder's workspace limit (default {DEFAULT_WORKSPACE_MIB})",
        "cuda_graph": "replay the engine's enqueue as one CUDA graph (needs cuda-python; default false)",
        "trtexec": "also run trtexec on the same ONNX and flags at the device build and store its median and p90 (default false)",
        "profile_runs": "runs of the IProfiler pass that times each layer (default 3; 0: none)",
    }
    build_options = ("sparse", "fp16_fallback", "workspace_mib", "trtexec")

    # -- where the cell runs ------------------------------------------------------------------
    def availability(self) -> Availability:
        try:
            import tensorrt as trt
        except ImportError:
            return missing("tensorrt", "tensorrt")
        except Exception as exc:  # the wheel without its libraries (libnvinfer) says so at import
            return Availability(False, f"tensorrt does not import ({type(exc).__name__}: {str(exc)[:160]})")
        count, _, _ = _trt_cuda.device_info()
        if count == 0:
            return Availability(False, "no CUDA device visible to PyCUDA or cuda-python (install cuda-python; check the driver)", trt.__version__)
        return Availability(True, version=trt.__version__)

    def export_availability(self) -> Availability:
        return OrtBackend().export_availability()

    def export_versions(self) -> dict[str, str | None]:
        return OrtBackend().export_versions()  # onnxruntime quantises the int8 ONNX

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path, calibration: Any = None, options: Any = None) -> Artifact:
        ort = OrtBackend()
        if precision == "fp32":
            return ort.export(model, example, "fp32", out_dir, None, None)
        if precision == "fp16":  # fp16 weights and compute in the ONNX itself: TensorRT 11 takes the precision from it
            out_dir.mkdir(parents=True, exist_ok=True)
            from edgebench.models.zoo import PreparedModel

            art = ort._export_fp32(PreparedModel(half_io(model.module), model.arch), example, out_dir / "model.onnx")
            art.facts["precision"] = "fp16 weights and compute, float32 input and output (Cast nodes)"
            return art
        if calibration is not None and calibration.qat is not None:
            raise NotImplementedError("TensorRT QAT (its own Q/DQ quantiser) is not built yet; use the PTQ twin of this recipe on tensorrt, "
                                      "or QAT on onnxruntime")
        fp32 = ort.export(model, example, "fp32", out_dir / "fp32", None, None)
        try:
            art = quantize(fp32.path, out_dir / "model.onnx", "int8", calibration, None, symmetric=True)
        finally:
            shutil.rmtree(out_dir / "fp32", ignore_errors=True)
        art.facts["quantization"]["for"] = "TensorRT explicit quantisation (signed int8, zero points 0)"
        return art

    def check_artifact(self, artifact: Artifact, expect: dict[str, Any]) -> dict[str, Any]:
        return OrtBackend().check_artifact(artifact, expect)

    def cell_options(self, options: dict[str, Any], expect: dict[str, Any]) -> dict[str, Any]:
        """2:4 recipes build with sparse weights unless the suite says otherwise."""
        if expect.get("pattern") == "2:4" and "sparse" not in options:
            return {**options, "sparse": True}
        return options

    # -- the device build -----------------------------------------------------------------------
    def wants_device_build(self, precision: str, options: dict[str, Any]) -> bool:
        return True

    def build_key(self, precision: str, options: dict[str, Any]) -> dict[str, Any]:
        import tensorrt as trt

        _, gpu, cc = _trt_cuda.device_info()
        return {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": cc, "flags": builder_flags(precision, options, trt_flags(trt)),
                "batch": int(options.get("batch") or 1)}

    def device_build(self, artifact: Path, precision: str, options: dict[str, Any], out_dir: Path) -> DeviceBuild:
        import tensorrt as trt

        flags = builder_flags(precision, options, trt_flags(trt))
        batch = int(options.get("batch") or 1)
        log = collecting_logger(trt)
        builder = trt.Builder(log)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, log)
        if not parser.parse_from_file(str(artifact)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise RuntimeError(f"{artifact}: TensorRT's ONNX parser refused it ({errors[:400]})")
        config = builder.create_builder_config()
        for flag in flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.get("workspace_mib") or DEFAULT_WORKSPACE_MIB) * MIB)
        inp = network.get_input(0)
        shape = [batch] + [int(d) for d in list(inp.shape)[1:]]
        if any(d < 1 for d in shape):
            raise RuntimeError(f"{artifact}: input {inp.name} has dynamic dimensions besides the batch ({list(inp.shape)}); export it with fixed H and W")
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        t0 = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
        if plan is None:
            errors = [m for sev, m in log.messages if sev in ("ERROR", "INTERNAL_ERROR")]
            raise RuntimeError(f"{artifact}: TensorRT could not build a {precision} engine ({'; '.join(errors[-3:])[:400] or 'no reason given'})")
        engine_path = out_dir / ENGINE
        engine_path.write_bytes(bytes(plan))
        engine = trt.Runtime(log).deserialize_cuda_engine(bytes(plan))
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        (out_dir / LAYERS).write_text(info)
        sparse_log = _trtexec.parse_log("\n".join(m for _, m in log.messages))
        _, gpu, cc = _trt_cuda.device_info()
        facts = {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": cc, "flags": flags, "input": inp.name, "shape": shape,
                 "engine_build_s": build_s, "sparse_eligible": sparse_log.sparse_eligible, "sparse_picked": sparse_log.sparse_picked,
                 "layer_summary": _trt_layers.summary(_trt_layers.parse_layer_info(info)),
                 "warnings": [m for sev, m in log.messages if sev == "WARNING"][:20]}
        if options.get("trtexec"):
            facts["trtexec"] = run_trtexec(artifact, inp.name, shape, flags)
        (out_dir / "facts.json").write_text(json.dumps(facts, default=str))
        return DeviceBuild(engine_path, [engine_path, out_dir / LAYERS, out_dir / "facts.json"], facts)

    # -- load -----------------------------------------------------------------------------------
    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import tensorrt as trt

        if artifact.suffix == ".onnx":  # the host's export check: build here, into a temporary folder
            out = Path(tempfile.mkdtemp(prefix="edgebench-trt-"))
            artifact = self.device_build(artifact, precision, options, out).path
        cuda = _trt_cuda.open_cuda()
        log = collecting_logger(trt)
        engine = trt.Runtime(log).deserialize_cuda_engine(artifact.read_bytes())
        if engine is None:
            errors = [m for sev, m in log.messages if sev in ("ERROR", "INTERNAL_ERROR")]
            raise RuntimeError(f"{artifact}: TensorRT could not load the engine ({'; '.join(errors[-2:])[:300]}); delete the build cache entry to rebuild it")
        return TrtSession(trt, engine, cuda, artifact, precision, options)
