"""Check what sparsity survived export: read the weights of an ONNX file, not the PyTorch module.

:func:`check_2_4_onnx` verifies the N:M (2:4) pattern of every Conv and Gemm/MatMul weight along the
input-channel axis, grouped exactly as :func:`edgebench.models.pruning.nm_mask` prunes it (the
TensorRT / cuSPARSELt layout: 4 consecutive input channels at a fixed output channel and kernel
position). ONNX weight layouts:

* Conv: ``[out, in/groups, kh, kw]`` -> viewed as ``[out, kh, kw, in/groups]``, groups along the last axis;
* Gemm: ``transB=1`` -> ``B`` is ``[out, in]``; ``transB=0`` -> ``B`` is ``[in, out]``;
* MatMul with a constant right operand: ``[in, out]`` (a ``Transpose`` of a constant is followed).

BatchNorm folded into the preceding Conv by the exporter scales each output channel by a constant,
which keeps zeros zero, so the pattern survives folding. Weights in external data (``.onnx.data``
beside the model) are loaded too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LayerCheck:
    node: str  # ONNX node name
    op: str  # Conv, Gemm or MatMul
    weight: str  # initializer name
    shape: list[int]
    eligible: bool
    reason: str = ""  # why not eligible
    pattern_ok: bool | None = None  # None when not eligible
    groups: int = 0
    violating_groups: int = 0
    sparsity: float = 0.0  # zero fraction of the weight


@dataclass
class Report:
    path: str
    n: int
    m: int
    layers: list[LayerCheck] = field(default_factory=list)

    @property
    def eligible(self) -> list[LayerCheck]:
        return [l for l in self.layers if l.eligible]

    @property
    def ineligible(self) -> list[LayerCheck]:
        return [l for l in self.layers if not l.eligible]

    @property
    def violations(self) -> int:
        return sum(l.violating_groups for l in self.layers)

    @property
    def ok(self) -> bool:
        """At least one eligible layer, and the pattern holds in every one."""
        return bool(self.eligible) and all(l.pattern_ok for l in self.eligible)

    def summary(self) -> str:
        bad = [l for l in self.eligible if not l.pattern_ok]
        verdict = "ok" if self.ok else ("no eligible layer" if not self.eligible else f"{len(bad)} layer(s) violate it")
        return (f"{self.path}: {self.n}:{self.m} {verdict}; {len(self.eligible)} eligible layer(s), "
                f"{len(self.ineligible)} ineligible, {self.violations} violating group(s)")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "n": self.n, "m": self.m, "ok": self.ok, "violations": self.violations,
                "layers": [asdict(l) for l in self.layers]}


def _load(path: str | Path) -> Any:
    import onnx

    # load_external_data=True (the default) reads a sibling .onnx.data file
    return onnx.load(str(path), load_external_data=True)


def _constants(model: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of the main graph, as numpy arrays."""
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _nm_check(w_in_last: np.ndarray, n: int, m: int) -> tuple[int, int]:
    """(violating groups, groups) of a weight whose input axis is last."""
    nonzero = (w_in_last != 0).reshape(-1, m).sum(axis=1)
    return int((nonzero > n).sum()), int(nonzero.size)


def _dequantized(name: str, consts: dict[str, np.ndarray], producers: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """A weight that reaches its op through DequantizeLinear (a Q/DQ int8 model): its stored integers minus
    the zero point, so a real zero reads 0 as in the float model; (None, name) when it is not a constant."""
    node = producers.get(name)
    if name in consts or node is None or node.op_type != "DequantizeLinear" or node.input[0] not in consts:
        return consts.get(name), name
    q = consts[node.input[0]].astype(np.int64)
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is not None and zp.size > 1:  # per-channel: along the node's axis (default 1)
        shape = [1] * q.ndim
        shape[int(_attr(node, "axis", 1)) % q.ndim] = zp.size
        q = q - zp.astype(np.int64).reshape(shape)
    elif zp is not None:
        q = q - int(zp.reshape(-1)[0])
    return q, node.input[0]


def _weights(model: Any) -> list[tuple[Any, str, np.ndarray, np.ndarray | None, str]]:
    """(node, weight name, weight as stored, weight with the input axis last or None, why not)."""
    consts = _constants(model)
    producers = {o: node for node in model.graph.node for o in node.output}
    rows = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, name = _dequantized(node.input[1], consts, producers)
            if w is None:
                continue
            group = int(_attr(node, "group", 1))
            if w.ndim != 4:
                rows.append((node, name, w, None, f"{w.ndim}-D conv weight (only 2-D convs are checked)"))
            elif group > 1 and w.shape[1] == 1:
                rows.append((node, name, w, None, f"depthwise conv (group={group}): one input channel per group"))
            else:
                rows.append((node, name, w, np.transpose(w, (0, 2, 3, 1)), ""))
        elif node.op_type in ("Gemm", "MatMul"):
            w, name = _dequantized(node.input[1], consts, producers)
            transposed = False
            if w is None and name in producers and producers[name].op_type == "Transpose":
                t = producers[name]
                src = consts.get(t.input[0])
                if src is not None and src.ndim == 2 and list(_attr(t, "perm", [1, 0])) == [1, 0]:
                    w, name, transposed = src, t.input[0], True  # stored [out, in], used as [in, out]
            if w is None:
                continue  # both operands are activations
            if w.ndim != 2:
                rows.append((node, name, w, None, f"{w.ndim}-D {node.op_type} weight (only 2-D weights are checked)"))
                continue
            if node.op_type == "Gemm":
                trans_b = int(_attr(node, "transB", 0))
                in_last = w if trans_b else w.T  # transB=1: [out, in]; else [in, out]
            else:
                in_last = w if transposed else w.T  # MatMul: x @ W with W [in, out]
            rows.append((node, name, w, in_last, ""))
    return rows


def check_2_4_onnx(path: str | Path, n: int = 2, m: int = 4) -> Report:
    """Verify the N:M pattern (default 2:4) in every Conv and Gemm/MatMul weight of an ONNX model."""
    report = Report(str(path), n, m)
    for node, name, w, in_last, why in _weights(_load(path)):
        sparsity = float((w == 0).mean()) if w.size else 0.0
        row = LayerCheck(node.name or node.output[0], node.op_type, name, list(w.shape), eligible=False, reason=why, sparsity=sparsity)
        if in_last is not None:
            if in_last.shape[-1] % m:
                row.reason = f"input dimension {in_last.shape[-1]} not divisible by {m}"
            else:
                bad, total = _nm_check(in_last, n, m)
                row.eligible, row.pattern_ok, row.groups, row.violating_groups = True, bad == 0, total, bad
        report.layers.append(row)
    return report


def weight_sparsity_onnx(path: str | Path) -> dict[str, float]:
    """Zero fraction of every initializer (and Constant) of an ONNX model, by name."""
    return {name: float((a == 0).mean()) if a.size else 0.0 for name, a in _constants(_load(path)).items()}
