"""Read TensorRT's engine layer information: per layer the kernel (tactic), precision and 2:4 sparsity.

TensorRT writes it from ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
or ``trtexec --exportLayerInfo=FILE --profilingVerbosity=detailed``: ``{"Layers": [...],
"Bindings": [...]}`` where each layer is an object (detailed verbosity) or a plain string, the
layer name only (the default verbosity). :func:`parse_layer_info` turns either into
:class:`TrtLayer` rows; :func:`summary` counts them for the report ("sparse kernels: k of n").

Every rule below comes from real recorded output kept in ``tests/backends/data/trt_*`` with its
source (trex's A100 ResNet engines, NVIDIA/TensorRT issue #4020). What is not recognised is None,
never a guess: a wrong "int8 ran" or "sparse ran" is worse than "unknown".

Standard library only: it runs on the device (right after the build) and on the host.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# Precision from the first output's "Format/Datatype". The strings seen in real layer JSON:
#   "Row major linear FP32"                                     -> fp32
#   "Row major linear FP16 format"                              -> fp16
#   "Channel major FP16 format where channel % 4|8|16 == 0"     -> fp16
#   "Two wide channel vectorized row major FP16 format"         -> fp16
#   "Thirty-two wide channel vectorized row major FP16 format"  -> fp16
#   "Row major Int8 format"                                     -> int8 (issue #4020, TensorRT 10)
#   "Four wide channel vectorized row major Int8 format"        -> int8
#   "Thirty-two wide channel vectorized row major Int8 format"  -> int8
#   "N/A due to dynamic shapes"                                 -> None (the engine had dynamic shapes)
# The datatype is always one whole word in those strings, so the word decides. No recorded layer
# JSON with FP8 or BF16 tensors was found, so those formats are not mapped yet: they come out None
# (unknown) until a real string is recorded here.
_PRECISION_WORDS = {"FP32": "fp32", "FP16": "fp16", "INT8": "int8"}
_WORD = re.compile(r"\b(FP32|FP16|Int8|INT8)\b")

# Layer types that carry weights when the JSON has no "Weights" member (seen: CaskConvolution,
# CaskConvActPool; TensorRT also names CaskGemmConvolution, CaskDeconvolution, Gemm/FullyConnected
# kernels). Pooling, Reformat, NoOp, elementwise layers carry none.
_WEIGHTED_TYPE = re.compile(r"Conv|Gemm|FullyConnected|MatrixMultiply")


@dataclass
class TrtLayer:
    """One layer of a built engine, as the layer information printed it."""

    name: str
    layer_type: str | None  # "CaskConvolution", "Reformat", ... as printed
    tactic: str | None  # TacticName (or "Tactic") as printed
    precision: str | None  # fp32 | fp16 | int8 | None (fp8/bf16 once seen), from the first output
    sparse: bool | None  # HasSparseWeights; None where the key is absent
    weights: bool  # the layer carries weights
    # "Weights": {"Type": ...} as printed ("Half", "Int8", "Float" seen): the stored weight type, which
    # can differ from the output format (a QAT first conv runs int8 kernels and writes FP32).
    weights_type: str | None = None


def precision_of(format_datatype: str | None) -> str | None:
    """The precision a ``Format/Datatype`` string names, or None when it names none we know."""
    if not format_datatype:
        return None
    found = {_PRECISION_WORDS[w.upper()] for w in _WORD.findall(format_datatype)}
    # Two different datatype words in one string would be a format we have not seen: unknown.
    return found.pop() if len(found) == 1 else None


def _first_output_format(entry: dict[str, Any]) -> str | None:
    outputs = entry.get("Outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        value = outputs[0].get("Format/Datatype")
        return value if isinstance(value, str) else None
    return None


def _has_weights(entry: dict[str, Any], layer_type: str | None) -> bool:
    weights = entry.get("Weights")
    if isinstance(weights, dict) and "Count" in weights:
        return int(weights.get("Count") or 0) > 0
    return bool(layer_type and _WEIGHTED_TYPE.search(layer_type))


def _weights_type(entry: dict[str, Any]) -> str | None:
    weights = entry.get("Weights")
    value = weights.get("Type") if isinstance(weights, dict) else None
    return value if isinstance(value, str) else None


def _sparse(entry: dict[str, Any]) -> bool | None:
    if "HasSparseWeights" not in entry:
        return None
    return bool(int(entry["HasSparseWeights"]))


def layer_from_dict(entry: dict[str, Any]) -> TrtLayer:
    """One :class:`TrtLayer` from one detailed layer object (missing members become None)."""
    layer_type = entry.get("LayerType")
    tactic = entry.get("TacticName", entry.get("Tactic"))
    return TrtLayer(
        name=str(entry.get("Name", "")),
        layer_type=layer_type if isinstance(layer_type, str) else None,
        tactic=tactic if isinstance(tactic, str) else None,
        precision=precision_of(_first_output_format(entry)),
        sparse=_sparse(entry),
        weights=_has_weights(entry, layer_type if isinstance(layer_type, str) else None),
        weights_type=_weights_type(entry),
    )


def parse_layer_info(text_or_data: str | dict) -> list[TrtLayer]:
    """The layers of TensorRT's layer information (JSON text or the already-loaded dict).

    Entries that are plain strings (default profiling verbosity: names only) give layers with
    only the name. Raises ``ValueError`` when the text is not JSON with a ``Layers`` list.
    """
    data = json.loads(text_or_data) if isinstance(text_or_data, str) else text_or_data
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ValueError("TensorRT layer information has no 'Layers' list")
    out = []
    for entry in layers:
        if isinstance(entry, dict):
            out.append(layer_from_dict(entry))
        else:
            out.append(TrtLayer(str(entry), None, None, None, None, False))
    return out


def summary(layers: list[TrtLayer]) -> dict:
    """Counts for the report: layers, weighted layers, sparse layers, layers per precision.

    ``by_precision`` counts every layer under its precision ("unknown" where None).
    """
    return {
        "layers": len(layers),
        "weighted": sum(1 for layer in layers if layer.weights),
        "sparse": sum(1 for layer in layers if layer.sparse),
        "by_precision": dict(Counter(layer.precision or "unknown" for layer in layers)),
    }
