"""ONNX Runtime, CPU execution provider.

Export uses the torch.onnx dynamo exporter with a dynamic batch axis and the weights inside the
``.onnx`` file (no ``.onnx.data`` side file for models under 2 GB). Sessions run with full graph
optimisation and a recorded thread count.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends.base import Artifact, Availability, Backend, Session, missing, register


class OrtSession(Session):
    def __init__(self, session: Any, options: dict[str, Any]) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._options = options

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "providers": self._session.get_providers(),
            "sparse_kernels": False,  # the CPU EP has no sparse conv kernels; zeros are stored and run dense
            "input": {i.name: i.shape for i in self._session.get_inputs()},
            **self._options,
        }


@register
class OrtBackend(Backend):
    name = "onnxruntime"
    precisions = ("fp32",)

    def availability(self) -> Availability:
        try:
            import onnxruntime
        except ImportError:
            return missing("onnxruntime", "onnxruntime")
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider in this build")
        return Availability(True, version=onnxruntime.__version__)

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path) -> Artifact:
        import torch

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
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
        files = [path] + [p for p in [path.with_name(path.name + ".data")] if p.exists()]
        return Artifact(path=path, files=files, facts={"opset": _opset(path)})

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import onnxruntime as ort

        threads = int(options.get("threads") or 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(artifact), sess_options=so, providers=["CPUExecutionProvider"])
        recorded = {
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "onnxruntime_version": ort.__version__,
        }
        return OrtSession(session, recorded)


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
