"""LiteRT (TFLite) on the CPU with the XNNPACK delegate: the Raspberry Pi path.

Host side (``pip install 'edgebench[litert-convert]'``): litert-torch converts the pruned PyTorch
module through torch.export into a ``.tflite`` with NHWC input (what a camera pipeline feeds):

- ``fp32``;
- ``fp16``: weights stored as float16 (ai-edge-quantizer float casting); XNNPACK computes in fp32;
- ``int8``: full-integer PT2E quantisation (litert-torch's symmetric per-channel quantiser),
  activation ranges observed on the recipe's calibration subset; input and output tensors are int8.

Option ``sparse: true`` stores the 1x1 convolutions' weights sparse (DENSIFY ops), the format
XNNPACK's sparse inference needs on ARM, after checking the documented rules on the model.

Device side (``pip install 'edgebench[litert]'``): only the interpreter, from ``ai-edge-litert``, or
``tflite-runtime`` where a board still has it (it stopped at 2.14). The session reports the delegate
that ran, how many operators it took and which were left on the built-in kernels.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends import _litert_sparsity as tflite_sparsity
from edgebench.backends._litert_sparsity import delegated_indices
from edgebench.backends._model_files import tflite_load_error
from edgebench.backends._xnnpack_sparse_rules import check_sparse_rules
from edgebench.backends.base import Artifact, Availability, Backend, Calibration, Session, copy_artifact, register, version_of
from edgebench.bench.contracts.evidence import Delegation, Evidence

CONVERT_HINT = "pip install 'edgebench[litert-convert]' on the host (litert-torch); boards need only 'edgebench[litert]'"
ARM = ("aarch64", "arm64", "armv7l", "armv8l")


def _interpreter_module() -> tuple[Any, str]:
    """The interpreter module and its distribution: ai-edge-litert first, tflite-runtime as a fallback."""
    try:
        from ai_edge_litert import interpreter

        return interpreter, "ai-edge-litert"
    except ImportError:
        from tflite_runtime import interpreter  # type: ignore[import-not-found]

        return interpreter, "tflite-runtime"


class LiteRTSession(Session):
    def __init__(self, interp: Any, info: Evidence) -> None:
        self._interp = interp
        self._in = interp.get_input_details()[0]
        self._out = interp.get_output_details()[0]
        self._info = info

    def prepare_input(self, batch: np.ndarray) -> np.ndarray:
        nchw = takes_nchw(self._in["shape"][1:], batch.shape[1:])
        self._info.input_layout = "NCHW" if nchw else "NHWC"
        x = batch if nchw else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        return _quantize(x, self._in) if self._in["dtype"] in (np.int8, np.uint8) else x.astype(self._in["dtype"])

    def run_prepared(self, prepared: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], prepared)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.run_prepared(self.prepare_input(batch))
        return _dequantize(out, self._out) if self._out["dtype"] in (np.int8, np.uint8) else out.astype(np.float32)

    def evidence(self) -> Evidence:
        return self._info


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def delegation(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Partitions, operator counts and the names of the operators left on the built-in kernels."""
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    taken = delegated_indices(ops)
    return {"partitions": sum(op["op_name"] == "DELEGATE" for op in ops), "total_ops": len(originals),
            "delegated_ops": len(taken), "undelegated_ops": [op["op_name"] for op in originals if op["index"] not in taken]}


@register
class LiteRTBackend(Backend):
    name = "litert"
    consumes = "tflite"
    precisions = ("fp32", "fp16", "int8")
    export_version = 3  # 3: residual adds annotated for PT2E (no float islands in int8 ResNets)
    install_hint = "pip install 'edgebench[litert]'"
    qat_quantizer = "litert-torch PT2EQuantizer"  # int8 QAT: _convert_int8_qat (the runner's notes name it)
    options = {
        "xnnpack": "true (default): the XNNPACK delegate; false: LiteRT's built-in kernels only",
        "sparse": "true: store 1x1 conv weights sparse (DENSIFY) for XNNPACK's ARM sparse path; default false",
    }
    export_options = ("sparse",)

    def availability(self) -> Availability:
        try:
            _, dist = _interpreter_module()
        except ImportError:
            return Availability(False, "not installed (pip install 'edgebench[litert]' to get ai-edge-litert)")
        return Availability(True, version=f"{version_of(dist) or '?'} ({dist})")

    def export_availability(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("litert_torch") is None:  # found without importing it (jax, transformers...)
            return Availability(False, f"the converter is not installed: {CONVERT_HINT}")
        return Availability(True)

    def export_versions(self) -> dict[str, str | None]:
        return {"litert-torch": version_of("litert-torch"), "ai-edge-quantizer": version_of("ai-edge-quantizer"), "torch": version_of("torch")}

    def import_artifact(self, src: Path, precision: str, out_dir: Path, example: np.ndarray,
                        calibration: Calibration | None = None, options: dict[str, Any] | None = None) -> Artifact:
        """A user's .tflite runs as it is, at the precision it was converted to (read from its tensors)."""
        detail = _input_detail(src)
        given = None if detail is None else "int8" if np.dtype(detail["dtype"]) in (np.int8, np.uint8) else "fp32"
        if given is not None and given != precision:
            raise NotImplementedError(f"{src.name} is a {given} model; LiteRT runs a given .tflite as it is: measure it at precision {given}")
        art = copy_artifact(src, out_dir)
        nchw = detail is not None and takes_nchw(detail["shape"][1:], example.shape[1:])
        art.facts.update({"given": src.name, "input_layout": "NCHW" if nchw else "NHWC"})
        custom = custom_ops(src)
        if custom:
            art.facts["custom_ops"] = custom
        return art

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path,
               calibration: Calibration | None = None, options: dict[str, Any] | None = None) -> Artifact:
        import torch

        if isinstance(model.module, torch.jit.ScriptModule):
            raise ValueError("litert-torch converts through torch.export and cannot read TorchScript; give factory and weights instead")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.tflite"
        facts: dict[str, Any] = {"converter": f"litert-torch {version_of('litert-torch')}", "input_layout": "NHWC"}
        with _captured_output() as log:  # the converter's import and progress chatter stay out of the terminal
            try:
                import litert_torch  # noqa: F401 - host-only converter
            except ImportError:
                raise RuntimeError(f"litert export needs the converter: {CONVERT_HINT}") from None
            try:
                if precision == "int8":
                    facts["quantization"] = _convert_int8(model.module, example, calibration, path)
                else:
                    _convert_fp32(model.module, example, path)
                    if precision == "fp16":
                        facts["quantization"] = _cast_weights_fp16(path)
            except NotImplementedError:  # a cell this backend does not build for this model: the caller skips it, saying why
                raise
            except Exception as exc:
                raise RuntimeError(f"litert-torch could not convert the model: {_first_line(exc)}{_tail(log)}") from exc
            if (options or {}).get("sparse"):
                facts["sparse"] = _store_sparse(path, precision)
            facts["tflite_ops"] = tflite_ops(path)
        return Artifact(path=path, files=[path], facts=facts)

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        module, dist = _interpreter_module()
        threads = int(options.get("threads") or 1)
        use_xnnpack = options.get("xnnpack", True) is not False
        kwargs: dict[str, Any] = {"model_path": str(artifact), "num_threads": threads}
        if not use_xnnpack:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = module.Interpreter(**kwargs)
            detail = interp.get_input_details()[0]
            batch = int(options.get("batch") or detail["shape"][0])
            if batch != detail["shape"][0]:
                # Converted at batch 1; XNNPACK re-plans for the new shape once, at load.
                interp.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            interp.allocate_tensors()  # with XNNPACK, an unresolved custom op surfaces here, not above
        except (RuntimeError, ValueError) as exc:  # not a flatbuffer, a custom op not registered: the cause, one line
            raise tflite_load_error(artifact, exc, custom_ops(artifact)) from None
        ops = interp._get_ops_details()
        deleg = delegation(ops)
        densify = sum(op["op_name"] == "DENSIFY" for op in ops)
        info = Evidence(
            runtime="litert", version=f"{version_of(dist) or '?'} ({dist})", device="cpu", threads=threads,
            input_shape=[batch, *map(int, detail["shape"][1:])], input_layout="NHWC", input_dtype=np.dtype(detail["dtype"]).name,
            sparse_kernels=False, sparse_weights=densify,
            delegation=Delegation(
                delegate="XNNPACK" if deleg["partitions"] else "none (built-in kernels)", total_ops=deleg["total_ops"],
                delegated_ops=deleg["delegated_ops"], partitions=deleg["partitions"], undelegated=deleg["undelegated_ops"],
                expected=not use_xnnpack,  # asked for: built-in kernels are the point, not a warning
            ),
            details={"interpreter": f"{dist} {version_of(dist) or '?'}", "input_quantization": list(detail["quantization"])},
        )
        if densify:
            on_arm = platform.machine().lower() in ARM
            info.sparse_path = ("possible on this ARM CPU: XNNPACK decides when the delegate is built (not observable from Python)"
                                if on_arm else f"sparse path not exercised on this CPU ({platform.machine()}: XNNPACK's sparse kernels run on ARM only)")
        return LiteRTSession(interp, info)


def custom_ops(path: Path) -> list[str]:
    """Names of the custom operators a .tflite uses (from its operator codes; [] when unreadable here)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # tflite-runtime has no schema module: the interpreter's error still says it
        return []
    try:
        model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    except Exception:  # not a flatbuffer: the interpreter's load error says so
        return []
    custom = schema.BuiltinOperator.CUSTOM
    names = [c.customCode.decode() if isinstance(c.customCode, bytes) else str(c.customCode)
             for c in model.operatorCodes or [] if max(c.builtinCode, c.deprecatedBuiltinCode) == custom]
    return sorted(set(names))


def takes_nchw(model_item_shape: Any, data_item_shape: Any) -> bool:
    """Whether a .tflite takes the data's NCHW items as they are. edgebench's own artifacts take NHWC;
    a user's file converted without ``to_channel_last_io`` keeps NCHW. Where C == W the shape cannot
    tell, and NHWC (the converter's channel-last default) is assumed."""
    return list(model_item_shape) == list(data_item_shape) and data_item_shape[0] != data_item_shape[-1]


def _input_detail(path: Path) -> dict[str, Any] | None:
    """The input tensor's details of a .tflite (no delegate); None when this host cannot open it
    (no interpreter, unreadable, custom ops: the cell's load says why, with the op's name)."""
    try:
        module, _ = _interpreter_module()
        interp = module.Interpreter(model_path=str(path), experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception:
        return None
    return interp.get_input_details()[0]


def _nhwc(module: Any) -> Any:
    import litert_torch

    return litert_torch.to_channel_last_io(module.eval(), args=[0]).eval()


def _nhwc_sample(example: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(example.transpose(0, 2, 3, 1)))


def _convert_fp32(module: Any, example: np.ndarray, path: Path) -> None:
    import litert_torch

    litert_torch.convert(_nhwc(module), (_nhwc_sample(example),)).export(str(path))


def _convert_int8(module: Any, example: np.ndarray, calibration: Calibration | None, path: Path) -> dict[str, Any]:
    """Full-integer PT2E quantisation: observers run on the calibration images, batch 1."""
    import dataclasses

    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration is None:
        raise ValueError("int8 export needs calibration data (the recipe's calibration subset)")
    if calibration.qat is not None:
        return _convert_int8_qat(module, example, calibration, path)
    config = get_symmetric_quantization_config(is_per_channel=True)
    # litert-torch observes activations with a histogram (range chosen to minimise quantisation
    # error); ``minmax`` asks for the plain observed range instead.
    observer = MinMaxObserver if calibration.method == "minmax" else HistogramObserver
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    quantizer = PT2EQuantizer().set_global(config)
    sample = _nhwc_sample(example)
    graph = torch.export.export(_nhwc(module), (sample,)).module()
    marked = _tag_residual_adds(graph)
    prepared = prepare_pt2e(graph, quantizer)
    for image in calibration.data:
        prepared(_nhwc_sample(image[None].astype(np.float32)))
    converted = convert_pt2e(prepared, fold_quantize=False)
    converted.training = False  # an exported graph cannot .eval(); it was captured in eval mode
    litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return {"kind": "full-integer static (PT2E)", "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor", "residual_adds_quantized": marked,
            "io": "int8 (quantised/dequantised outside the timed loop)", "calibration": calibration.method,
            "observer": observer.__name__, "calibration_images": int(len(calibration.data))}


def _convert_int8_qat(module: Any, example: np.ndarray, calibration: Calibration, path: Path) -> dict[str, Any]:
    """Quantisation-aware training with litert-torch's own quantiser (QAT config: fake-quant with
    moving-average observers), then the same full-integer conversion as post-training int8."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from edgebench.models import qat as qat_lib

    # consistent_fake_quant: train on the weight grid convert_pt2e writes (models/qat.py says why)
    quantizer = PT2EQuantizer().set_global(qat_lib.consistent_fake_quant(get_symmetric_quantization_config(is_per_channel=True, is_qat=True)))
    # Traced with a dynamic batch (at batch 2: batch 1 would specialise it) so it trains on batches of
    # 64; the converter below traces the converted graph again at batch 1.
    batch = torch.export.Dim("batch", min=1, max=4096)
    traced = _nhwc_sample(np.concatenate([example[:1]] * 2))
    # to_channel_last_io's wrapper takes *args: its one positional input is the tuple's first item
    graph = torch.export.export(_nhwc(module), (traced,), dynamic_shapes=(({0: batch},),)).module()
    marked = _tag_residual_adds(graph)
    if marked:
        # Seen on ResNet-20 (litert-torch 0.10, torchao 0.18, torch 2.13): the first backward through
        # litert-torch's QAT-prepared graph kills the process in libtorch ("double free or corruption" /
        # SIGSEGV), with or without the residual adds annotated or the shared ReLU split; a graph without
        # residual adds (small_cnn) trains. A dead host process would lose the whole run: refuse instead.
        raise NotImplementedError(f"litert int8 QAT is not built for a model with residual adds ({marked} here): litert-torch's QAT "
                                  "graph crashes libtorch in training (seen on resnet20); measure litert int8 with the recipe's "
                                  "post-training twin, or QAT on onnxruntime")
    with _patterns_as_modules():
        prepared = prepare_qat_pt2e(graph, quantizer)
    trained = calibration.qat(_NCHWFeed(prepared))
    converted = convert_pt2e(prepared, fold_quantize=False)
    converted.training = False
    sample = _nhwc_sample(example)
    litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return {"kind": f"QAT (PT2E fake-quant, {trained['epochs']} epochs)", "quantizer": "litert-torch PT2EQuantizer (is_qat)",
            "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor", "residual_adds_quantized": marked,
            "io": "int8 (quantised/dequantised outside the timed loop)", "qat": trained}


@contextlib.contextmanager
def _patterns_as_modules():
    """litert-torch 0.10's QAT conv+BN annotator hands torchao a plain function as the pattern to
    export, which torchao 0.18's ``_get_aten_graph_module_for_pattern`` (torch.export) refuses ("Expected
    `mod` to be an instance of `torch.nn.Module`"): wrap it in torchao's own WrapperModule, for the
    annotation only, and put the original back."""
    import torch
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.export_utils import WrapperModule

    original = utils._get_aten_graph_module_for_pattern

    def wrapped(pattern: Any, *args: Any, **kwargs: Any) -> Any:
        return original(pattern if isinstance(pattern, torch.nn.Module) else WrapperModule(pattern), *args, **kwargs)

    utils._get_aten_graph_module_for_pattern = wrapped
    try:
        yield
    finally:
        utils._get_aten_graph_module_for_pattern = original


def _nchw_feed_class() -> Any:
    import torch

    class NCHWFeed(torch.nn.Module):
        """Feeds the NHWC-input prepared graph the NCHW batches the QAT loop trains on."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x.permute(0, 2, 3, 1).contiguous())

    return NCHWFeed


def _NCHWFeed(inner: Any) -> Any:  # noqa: N802 - reads as the class it builds (torch is imported late)
    return _nchw_feed_class()(inner)


def _tag_residual_adds(graph: Any) -> int:
    """Mark tensor adds (and a ReLU right after one) so litert-torch's PT2E quantiser annotates them.

    Its ``add``/``add_relu`` annotators find nodes through ``source_fn_stack`` metadata, which
    torch.export in torch 2.13 (non-strict) no longer records. Unmarked, every residual add of a ResNet
    stays in float between DEQUANTIZE/QUANTIZE pairs in the .tflite (seen: 9 QUANTIZE + 12 DEQUANTIZE
    in ResNet-20). Each add is marked as its own ``torch.add`` call, a ReLU it feeds as an ``nn.ReLU``.
    Returns how many adds were marked.
    """
    import torch

    adds = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor}
    relus = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
    marked = 0
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in adds or node.meta.get("source_fn_stack"):
            continue
        if not all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
            continue  # adding a constant: not a residual join
        node.meta["source_fn_stack"] = [(f"edgebench_add_{marked}", torch.add)]
        for user in node.users:
            if user.op == "call_function" and user.target in relus and not user.meta.get("source_fn_stack"):
                user.meta["source_fn_stack"] = [(f"edgebench_add_relu_{marked}", torch.nn.ReLU)]
        marked += 1
    return marked


def _cast_weights_fp16(path: Path) -> dict[str, Any]:
    """Store float weights as float16 (DEQUANTIZE to fp32 at load; XNNPACK computes in fp32)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=AlgorithmName.FLOAT_CASTING)
    result = quantizer.Quantizer(str(path), rm.get_quantization_recipe()).quantize(enable_progress_report=False)
    result.export_model(str(path), overwrite=True)
    return {"kind": "fp16 weights (ai-edge-quantizer float casting)", "weights": "float16", "activations": "float32"}


def _store_sparse(path: Path, precision: str) -> dict[str, Any]:
    """Check XNNPACK's sparse-inference rules and store qualifying 1x1 conv weights sparse."""
    rules = check_sparse_rules(path).to_dict()
    if precision != "fp32":
        return {"applied": False, "reason": f"XNNPACK's sparse inference is fp32 only; {precision} weights are stored dense", "rules": rules}
    dense = path.with_name("dense.tflite")
    path.replace(dense)
    try:
        report = tflite_sparsity.sparsify_tflite(dense, path).to_dict()
        check = tflite_sparsity.verify_sparsified(dense, path)  # same outputs, DENSIFY rebuilds the weights exactly
    finally:
        dense.unlink(missing_ok=True)
    if not check.ok:
        raise RuntimeError(f"{path}: the sparse copy does not match the dense model ({'; '.join(check.problems)}); run without sparse")
    verified = {k: v for k, v in check.to_dict().items() if k not in ("src", "dst")}
    return {"applied": True, "rules": rules, "stored": report, "verified": verified}


def tflite_ops(path: Path) -> dict[str, int]:
    """Operator counts in the ``.tflite`` as written (before any delegate)."""
    import collections

    module, _ = _interpreter_module()
    interp = module.Interpreter(model_path=str(path), experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return dict(sorted(collections.Counter(op["op_name"] for op in interp._get_ops_details()).items()))


@contextlib.contextmanager
def _captured_output():
    """Send the converter's progress lines and native (absl) logs to a temp file, at the fd level,
    so the user's terminal shows edgebench's lines; the file's tail goes into any error."""
    import sys

    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _tail(log: Any) -> str:
    log.seek(0)
    lines = [ln for ln in log.read().decode(errors="replace").splitlines() if "Error" in ln or "error" in ln]
    return f" ({lines[-1].strip()[:200]})" if lines else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
