"""ONNX Runtime, CPU execution provider.

Export uses the torch.onnx dynamo exporter with a dynamic batch axis and the weights inside the
``.onnx`` file (no ``.onnx.data`` side file for models under 2 GB). Sessions run with full graph
optimisation and a recorded thread count.

Precisions: ``fp32``; ``int8`` = static QDQ quantisation (per-channel int8 weights, uint8
activations: the combination ONNX Runtime's x86/ARM int8 kernels are fastest with; int8 activations
gave only 1.17x here) calibrated on the recipe's calibration subset with MinMax, entropy or
percentile ranges; ``int8-dynamic`` = dynamic quantisation (weights int8 offline, activation ranges
computed per batch at run time), a separate precision because it is usually *slower* for CNNs on CPU.
Quantised artifacts record which int8 kernels ONNX Runtime's optimiser chose (``optimized_ops``).

A user's ONNX file enters at the portable stage (:meth:`OrtBackend.import_artifact`): as given for
fp32, statically quantised on the suite's calibration images for int8.

Device build (option ``optimize_on_device``): the target writes ONNX Runtime's fully optimised graph
for its own CPU once (ORT_ENABLE_ALL includes layout transformations specific to the CPU it runs on,
which is why it is built there and not on the host), cached on the target; cells then load it with
the optimiser off, so load time drops and every process runs the same optimised graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends._model_files import onnx_load_error
from edgebench.backends._onnx_checks import check_2_4_onnx
from edgebench.backends.base import Artifact, Availability, Backend, DeviceBuild, Session, copy_artifact, missing, register, version_of, with_side_files
from edgebench.bench.contracts.evidence import Evidence

OPTIMIZED = "model.opt.onnx"  # the device build's output name


class OrtSession(Session):
    def __init__(self, session: Any, options: dict[str, Any], version: str) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._options = options
        self._version = version

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]

    def evidence(self) -> Evidence:
        return Evidence(
            runtime="onnxruntime", version=self._version, device="cpu", providers=list(self._session.get_providers()),
            threads=self._options["intra_op_threads"], input_layout="NCHW", input_dtype="float32",
            sparse_kernels=False,  # the CPU EP has no sparse conv kernels; zeros are stored and run dense
            details={"input": {i.name: i.shape for i in self._session.get_inputs()}, **self._options},
        )


@register
class OrtBackend(Backend):
    name = "onnxruntime"
    consumes = "onnx"
    precisions = ("fp32", "int8", "int8-dynamic")
    install_hint = "pip install 'edgebench[onnxruntime]'"
    qat_quantizer = "torchao X86InductorQuantizer"  # int8 QAT: export_qat (the runner's notes name it)
    options = {
        "reduce_range": "int8 weights in 7 bits: auto (default: when full range disagrees with fp32 on the calibration images, "
                        "as on x86 without VNNI), true or false",
        "optimize_on_device": "true: build ONNX Runtime's optimised graph for the target's CPU on the target (cached there) "
                              "and load it with the optimiser off; default false",
    }
    export_options = ("reduce_range",)
    build_options = ("optimize_on_device",)

    def availability(self) -> Availability:
        try:
            import onnxruntime
        except ImportError:
            return missing("onnxruntime", "onnxruntime")
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider in this build")
        return Availability(True, version=onnxruntime.__version__)

    def export_availability(self) -> Availability:
        # fp32 needs the exporter (torch + onnx); int8 also needs onnxruntime's quantiser on the host,
        # which export() reports when it is missing.
        for module, extra in (("torch", "prune"), ("onnx", "prune")):
            if importlib.util.find_spec(module) is None:
                return missing(module, extra)
        return Availability(True)

    def export_versions(self) -> dict[str, str | None]:
        return {"onnx": version_of("onnx"), "onnxscript": version_of("onnxscript"), "onnxruntime": version_of("onnxruntime")}

    def import_artifact(self, src: Path, precision: str, out_dir: Path, example: np.ndarray, calibration: Any = None,
                        options: Any = None) -> Artifact:
        """A user's ONNX file: as given at fp32; quantised (static QDQ, calibrated on the suite's data) for int8."""
        if precision == "fp32":
            art = copy_artifact(src, out_dir)
            art.facts["optimized_ops"] = optimized_ops(art.path)
            return art
        staged = copy_artifact(src, out_dir / "given")
        try:
            return quantize(staged.path, out_dir / "model.onnx", precision, calibration, options)
        finally:
            shutil.rmtree(out_dir / "given", ignore_errors=True)

    def check_artifact(self, artifact: Artifact, expect: dict[str, Any]) -> dict[str, Any]:
        if expect.get("pattern") != "2:4":
            return {}
        # Verify the pattern in what the runtime will load, after BN folding, not in PyTorch.
        return {"pattern_2_4": {**check_2_4_onnx(artifact.path).to_dict(), "path": artifact.path.name}}

    # -- device build: the optimised graph for the target's own CPU ---------------------------
    def wants_device_build(self, precision: str, options: dict[str, Any]) -> bool:
        return options.get("optimize_on_device") is True

    def build_key(self, precision: str, options: dict[str, Any]) -> dict[str, Any]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "graph_optimization_level": "ORT_ENABLE_ALL",
                "machine": platform.machine(), "cpu": cpu_model()}

    def device_build(self, artifact: Path, precision: str, options: dict[str, Any], out_dir: Path) -> DeviceBuild:
        import onnxruntime as ort

        out = out_dir / OPTIMIZED
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3  # the "hardware specific optimizations" notice is the point here
        t0 = time.perf_counter()
        _session(ort, artifact, so)
        facts = {"optimizer": "ORT_ENABLE_ALL", "optimize_s": time.perf_counter() - t0,
                 "nodes_before": _node_count(artifact), "nodes_after": _node_count(out)}
        return DeviceBuild(out, with_side_files(out), facts)

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path, calibration: Any = None, options: Any = None) -> Artifact:
        out_dir.mkdir(parents=True, exist_ok=True)
        if precision == "fp32":
            art = self._export_fp32(model, example, out_dir / "model.onnx")
            if importlib.util.find_spec("onnxruntime") is not None:  # a fact from the host's optimiser, where there is one
                art.facts["optimized_ops"] = optimized_ops(art.path)
            return art
        if precision == "int8" and calibration is not None and calibration.qat is not None:
            return export_qat(model.module, example, out_dir / "model.onnx", calibration, options)
        fp32 = self._export_fp32(model, example, out_dir / "fp32" / "model.onnx")
        try:
            return quantize(fp32.path, out_dir / "model.onnx", precision, calibration, options)
        finally:
            shutil.rmtree(out_dir / "fp32", ignore_errors=True)

    def _export_fp32(self, model: Any, example: np.ndarray, path: Path) -> Artifact:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        batch = torch.export.Dim("batch", min=1, max=4096)
        # The exporter logs registration chatter and deprecation warnings that say nothing about
        # this model; keep them out of the user's terminal unless export fails.
        chatter = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _quiet_loggers("torch.onnx", "torch.export", "onnxscript"):
            warnings.simplefilter("ignore")
            if isinstance(model.module, torch.jit.ScriptModule):
                # The dynamo exporter cannot read TorchScript; the TorchScript exporter can.
                torch.onnx.export(model.module.eval(), (torch.from_numpy(example),), str(path), dynamo=False, opset_version=17,
                                  input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            else:
                torch.onnx.export(
                    model.module.eval(),
                    (torch.from_numpy(example),),
                    str(path),
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: batch},),
                    input_names=["input"],
                    output_names=["logits"],
                )
        return Artifact(path=path, files=with_side_files(path), facts={"opset": _opset(path)})

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import onnxruntime as ort

        threads = int(options.get("threads") or 1)
        prebuilt = artifact.name == OPTIMIZED  # the device build already ran the optimiser for this CPU
        level = "ORT_DISABLE_ALL" if prebuilt else "ORT_ENABLE_ALL"
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        session = _session(ort, artifact, so)
        recorded = {
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": level + (" (optimised on the device)" if prebuilt else ""),
            "onnxruntime_version": ort.__version__,
        }
        return OrtSession(session, recorded, ort.__version__)


def _session(ort: Any, artifact: Path, so: Any) -> Any:
    """An InferenceSession on the CPU; a file it cannot take raises ModelFileError naming the cause."""
    try:
        return ort.InferenceSession(str(artifact), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error classes: InvalidProtobuf, InvalidGraph, Fail...
        raise onnx_load_error(artifact, exc) from None


CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


SATURATION_AGREEMENT = 0.99  # below this top-1 agreement with fp32 on the calibration images, try 7-bit weights


def quantize(src: Path, dst: Path, precision: str, calibration: Any, options: dict[str, Any] | None = None,
             symmetric: bool = False) -> Artifact:
    """Quantise the FP32 ONNX model ``src`` into ``dst`` (static QDQ for int8, dynamic for int8-dynamic).

    ``symmetric``: signed int8 activations and weights with zero points of 0 and the full 8-bit range,
    the only Q/DQ form TensorRT's explicit quantisation builds (ONNX Runtime's own CPU kernels are
    fastest with uint8 activations, its default here)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = src.with_name("preprocessed.onnx")
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _quiet_loggers("root", "onnxruntime"):
        warnings.simplefilter("ignore")
        # Shape inference and the ORT-recommended pre-optimisation before quantising.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        if precision == "int8-dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8)
            facts: dict[str, Any] = {"quantization": {"kind": "dynamic", "weights": "uint8 per-tensor", "activations": "uint8, ranges computed per batch at run time"}}
        else:
            if calibration is None:
                raise ValueError("int8 export needs calibration data (the recipe's calibration subset)")
            method = CALIBRATION_METHODS.get(calibration.method)
            if method is None:
                raise ValueError(f"unknown calibration method {calibration.method!r}; use one of {', '.join(CALIBRATION_METHODS)}")

            calib = getattr(CalibrationMethod, method)
            cache = _calibrate(pre, calibration.data, calib)  # ranges computed once, reused by every attempt below

            def static(reduce_range: bool) -> float:
                quantize_static(str(pre), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                                reduce_range=reduce_range, calibrate_method=calib, calibration_cache_path=str(cache),
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else None)
                return _agreement(src, dst, calibration.data)

            reduce = False if symmetric else (options or {}).get("reduce_range", "auto")  # VPMADDUBSW saturation is x86 ORT's, not a GPU's
            if reduce not in ("auto", True, False):
                raise ValueError(f"onnxruntime option reduce_range is {reduce!r}; use auto, true or false")
            tried = {"full": static(False)} if reduce in ("auto", False) else {}
            if reduce is True or (reduce == "auto" and tried["full"] < SATURATION_AGREEMENT):
                # x86 CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, whose int16 sums saturate
                # (ONNX Runtime's quantisation guide); 7-bit weights avoid it at a small precision cost.
                tried["reduced"] = static(True)
                if reduce == "auto" and tried["reduced"] < tried["full"]:
                    tried["full"] = static(False)  # the full range was better after all
            reduced = "reduced" in tried and (reduce is True or tried["reduced"] >= tried["full"])
            facts = {"quantization": {"kind": "static", "format": "QDQ", "weights": f"int8 per-channel{', 7-bit range (reduce_range)' if reduced else ''}",
                                      "activations": "int8 symmetric per-tensor" if symmetric else "uint8 per-tensor", "calibration": calibration.method,
                                      "calibration_images": int(len(calibration.data)), "reduce_range": reduced,
                                      "agreement_on_calibration_images": tried}}
    pre.unlink(missing_ok=True)
    pre.with_name("ranges.json").unlink(missing_ok=True)
    facts["optimized_ops"] = optimized_ops(dst)
    return Artifact(path=dst, files=[dst], facts={"opset": _opset(dst), **facts})


def export_qat(module: Any, example: np.ndarray, path: Path, calibration: Any, options: dict[str, Any] | None = None) -> Artifact:
    """Quantisation-aware training, then the QDQ ONNX file: torchao's x86 quantiser (uint8 per-tensor
    activations, int8 symmetric per-channel weights: the combination ONNX Runtime's CPU int8 kernels
    take), ``prepare_qat_pt2e``, ``calibration.qat`` trains the fake-quant graph, ``convert_pt2e``
    writes the learned scales as Quantize/DequantizeLinear pairs that ONNX Runtime's optimiser fuses
    into QLinearConv. ``reduce_range: true`` gives 7-bit activations (the x86 quantiser's own answer
    to VPMADDUBSW saturation on CPUs without VNNI); QAT learns its ranges, so ``auto`` keeps 8 bits."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    from edgebench.models import qat as qat_lib

    if isinstance(module, torch.jit.ScriptModule):
        raise ValueError("QAT needs torch.export, which cannot read TorchScript; give factory and weights instead")
    reduce = (options or {}).get("reduce_range", "auto")
    if reduce not in ("auto", True, False):
        raise ValueError(f"onnxruntime option reduce_range is {reduce!r}; use auto, true or false")
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # Traced at batch 2: at batch 1 torch.export specialises the batch to 1 (0/1 specialisation).
    sample = torch.from_numpy(np.concatenate([example[:1]] * 2))
    # consistent_fake_quant: train on the weight grid convert_pt2e writes (models/qat.py says why)
    quantizer = X86InductorQuantizer().set_global(qat_lib.consistent_fake_quant(get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce is True)))
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _quiet_loggers("torch.onnx", "torch.export", "onnxscript"):
        warnings.simplefilter("ignore")
        # A dynamic batch: the graph is trained on batches of 64 and exported for any batch.
        graph = torch.export.export(module.eval(), (sample,), dynamic_shapes=({0: batch},)).module()
        # a module called twice (ResNet's one ReLU per block) would put two outputs in one partition,
        # which the x86 annotator refuses ("Input partition has more than one output node")
        qat_lib.split_shared_module_calls(graph)
        prepared = prepare_qat_pt2e(graph, quantizer)
        trained = calibration.qat(prepared)
        converted = convert_pt2e(prepared)
        torch.onnx.export(converted, (sample,), str(path), dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                          input_names=["input"], output_names=["logits"])
    _drop_node_metadata(path)
    quant = {"kind": f"QAT (PT2E fake-quant, {trained['epochs']} epochs)", "format": "QDQ", "quantizer": "torchao X86InductorQuantizer",
             "weights": "int8 symmetric per-channel", "activations": f"uint8 per-tensor{', 7-bit range (reduce_range)' if reduce is True else ''}",
             "reduce_range": reduce is True, "qat": trained}
    return Artifact(path=path, files=[path], facts={"opset": _opset(path), "quantization": quant, "optimized_ops": optimized_ops(path)})


def _drop_node_metadata(path: Path) -> None:
    """Remove the exporter's per-node metadata (PyTorch stack traces and names: 27 of the 43 KiB of a
    QAT small_cnn), which ONNX Runtime's quantiser drops from a PTQ artifact, so the two int8
    artifacts' sizes compare weights with weights."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


# Histogram settings for the entropy (KL) and percentile calibrators: ONNX Runtime's quantize_static
# keeps its 128-bin default, with which entropy calibration for 8 bits returns the plain min/max range;
# 2048 bins (TensorRT's choice) let the KL search clip outliers as intended.
HISTOGRAM_OPTIONS = {"Entropy": {"num_bins": 2048, "num_quantized_bins": 128}, "Percentile": {"num_bins": 2048, "percentile": 99.999}}


def _calibrate(model: Path, images: np.ndarray, method: Any) -> Path:
    """Activation ranges from the calibration images, saved as ONNX Runtime's calibration cache."""
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    cache = model.with_name("ranges.json")
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(model, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=method,
                                       extra_options=HISTOGRAM_OPTIONS.get(method.name, {}))
        calibrator.collect_data(_Reader(images, _input_name(model)))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _agreement(fp32: Path, quantized: Path, images: np.ndarray) -> float:
    """Top-1 agreement of a quantised model with its fp32 model on the calibration images (this host)."""
    import onnxruntime as ort

    def top1(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})[0].argmax(1)

    return float(np.mean(top1(fp32) == top1(quantized)))


def _input_name(model: Path) -> str:
    """The graph's one real input (a user's ONNX file need not call it "input"; initializers listed as
    inputs by old exporters are not fed)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in weights)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an array, one image per call."""

    def __init__(self, data: np.ndarray, name: str = "input") -> None:
        self._images = iter(np.ascontiguousarray(data[i : i + 1], dtype=np.float32) for i in range(len(data)))
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {self._name: image}

    def rewind(self) -> None:  # pragma: no cover - not used by single-pass calibration
        raise NotImplementedError


def optimized_ops(path: Path) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime really runs after its optimiser (on this host).

    This is the evidence that quantisation took: QLinearConv/QGemm (static int8) or ConvInteger
    (dynamic) replace Conv/Gemm, and any QuantizeLinear/DequantizeLinear pairs left show where the
    model goes back to float.
    """
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3  # the "hardware specific optimizations" notice is expected here
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
        return dict(sorted(collections.Counter(n.op_type for n in graph.node).items()))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _node_count(path: Path) -> int | None:
    try:
        import onnx

        return len(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # a count for the report only; the board may have no onnx package
        return None


def _opset(path: Path) -> int | None:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:  # the opset is a fact for the report, never a reason to fail an export
        return None


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
