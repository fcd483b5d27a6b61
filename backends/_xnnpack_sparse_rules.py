"""XNNPACK's sparse-inference rules, checked statically on a .tflite graph.

XNNPACK (LiteRT's CPU delegate) runs a part of an FP32 graph in NCHW layout with sparse 1x1
convolutions (Fast Sparse ConvNets) when the model stores weights sparse and the part has the shape
its README documents: a 3x3 stride-2 CONV_2D to start, then only 1x1 convs, depthwise convs and a
few elementwise ops, up to a spatial MEAN (or DEPTH_TO_SPACE), with 1x1 weights more than 2/3 zero.
:func:`check_sparse_rules` says whether a graph has that shape, op by op, with the reasons when
not; storing the weights sparse is :func:`edgebench.backends._litert_sparsity.sparsify_tflite`.

This module imports only numpy and the flatbuffer view (:mod:`edgebench.backends._tflite_flatbuffer`):
it runs on a board.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends._tflite_flatbuffer import Graph, read_model

# XNNPACK enables sparse inference only when the 1x1 convolutions of the subgraph are *more* than
# 2/3 zeros (src/subgraph.c: disabled when zeros * 3 <= params * 2).
ZERO_FRACTION_THRESHOLD = 2.0 / 3.0

# Unary elementwise ops the XNNPACK README lists for sparse subgraphs (SIGMOID is LOGISTIC in TFLite).
SPARSE_UNARY_OPS = frozenset({
    "ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU", "RELU6",
    "RELU_N1_TO_1", "ROUND", "SQUARE",
})

_FLOAT_TYPES = (0, 1)  # FLOAT32, FLOAT16: the only types XNNPACK's NCHW rewrite takes
_DELEGATE_ACTIVATIONS = (0, 1, 2, 3)  # NONE, RELU, RELU_N1_TO_1, RELU6; TANH/SIGN_BIT are not fused
_SAME = 0  # Padding.SAME; VALID is 1


# -- the documented rules, op by op ----------------------------------------------------------------


def _pad_amounts(g: Graph, i: int) -> tuple[tuple[int, int, int, int] | None, str]:
    """(top, bottom, left, right) of a PAD/PADV2 that XNNPACK folds into the conv it feeds, else why not."""
    ins = g.inputs(i)
    pads = g.value(ins[1]) if len(ins) > 1 and ins[1] >= 0 else None
    if pads is None or pads.shape != (4, 2):
        return None, "padding amounts are not a constant 4x2 tensor"
    pads = pads.astype(np.int64)
    if pads[0].any() or pads[3].any():
        return None, "pads the batch or channel dimension"
    if g.names[i] == "PADV2" and len(ins) > 2 and ins[2] >= 0:
        fill = g.value(ins[2])
        if fill is None or np.any(fill != 0):
            return None, "pads with a non-zero value"
    out = g.outputs(i)[0]
    users = g.consumers.get(out, [])
    if out in g.graph_outputs or len(users) != 1:
        return None, "its output has other consumers or is a graph output"
    c = users[0]
    if g.names[c] not in ("CONV_2D", "DEPTHWISE_CONV_2D") or g.inputs(c)[0] != out:
        return None, f"feeds {g.names[c]}, not a convolution XNNPACK folds padding into"
    opt = g.options(c)
    if opt.padding == _SAME and (opt.strideH, opt.strideW) != (1, 1):
        return None, "feeds a convolution with TF SAME padding and stride > 1"
    return (int(pads[1, 0]), int(pads[1, 1]), int(pads[2, 0]), int(pads[2, 1])), ""


def _conv_padding(g: Graph, i: int, kernel: tuple[int, int]) -> tuple[tuple[int, ...] | None, str]:
    """Explicit (top, bottom, left, right) padding XNNPACK ends up with for conv ``i``, else why not.

    XNNPACK turns TF SAME padding into explicit padding only at stride 1; at stride 2 it keeps the
    implicit form, which its sparse (NCHW) rewrite rejects. A preceding zero PAD is folded in.
    """
    opt = g.options(i)
    kh, kw = kernel
    dh, dw = opt.dilationHFactor or 1, opt.dilationWFactor or 1
    if opt.padding == _SAME:
        if (opt.strideH, opt.strideW) != (1, 1):
            return None, ("TF SAME padding at stride > 1 (XNNPACK keeps it implicit, which sparse "
                          "inference rejects; export with explicit symmetric padding)")
        ph, pw = (kh - 1) * dh, (kw - 1) * dw
        own = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    else:
        own = (0, 0, 0, 0)
    p = g.producer.get(g.inputs(i)[0])
    if p is not None and g.names[p] in ("PAD", "PADV2"):
        extra, _ = _pad_amounts(g, p)
        if extra is not None:
            own = tuple(a + b for a, b in zip(own, extra))
    return own, ""


def _start_mismatch(g: Graph, i: int) -> list[str]:
    """How CONV_2D ``i`` differs from the required start: 3x3, stride 2, padding 1 each side, 3 inputs."""
    ins = g.inputs(i)
    fshape, xshape = g.shape(ins[1]), g.shape(ins[0])
    if len(fshape) != 4 or len(xshape) != 4:
        return ["filter or input is not 4D"]
    _, kh, kw, cin = fshape
    opt = g.options(i)
    out = []
    if (kh, kw) != (3, 3):
        out.append(f"kernel {kh}x{kw}")
    if (opt.strideH, opt.strideW) != (2, 2):
        out.append(f"stride {opt.strideH}x{opt.strideW}")
    pad, why = _conv_padding(g, i, (kh, kw))
    if pad is None:
        out.append(why)
    elif pad != (1, 1, 1, 1):
        out.append(f"padding top/bottom/left/right {pad}")
    if cin != 3:
        out.append(f"{cin} input channels")
    if xshape[3] > 0 and xshape[3] != cin:
        out.append(f"{xshape[3] // max(cin, 1)} groups")
    if (opt.dilationHFactor or 1, opt.dilationWFactor or 1) != (1, 1):
        out.append("dilation")
    return out


_START = "a 3x3 stride-2 CONV_2D with padding 1 on each side and 3 input channels"


def _conv_rule(g: Graph, i: int) -> tuple[bool, str, str]:
    """(allowed inside a sparse subgraph, why not, role) for a CONV_2D; role "start" or "1x1"."""
    ins = g.inputs(i)
    fshape, xshape = g.shape(ins[1]), g.shape(ins[0])
    if len(fshape) != 4 or len(xshape) != 4:
        return False, "filter or input is not 4D", ""
    _, kh, kw, cin = fshape
    opt = g.options(i)
    if xshape[3] > 0 and xshape[3] != cin:
        return False, f"grouped CONV_2D ({xshape[3] // max(cin, 1)} groups)", ""
    if (opt.dilationHFactor or 1, opt.dilationWFactor or 1) != (1, 1):
        return False, "dilated CONV_2D", ""
    if opt.fusedActivationFunction not in _DELEGATE_ACTIVATIONS:
        return False, "fused activation XNNPACK does not support", ""
    if not g.is_static(ins[1]):
        return False, "filter is not a constant", ""
    if (kh, kw) == (1, 1):
        pad, why = _conv_padding(g, i, (kh, kw))
        if (opt.strideH, opt.strideW) != (1, 1):
            return False, f"1x1 CONV_2D with stride {opt.strideH}x{opt.strideW} (must be 1)", ""
        if pad is None or any(pad):
            return False, f"1x1 CONV_2D with padding {why or pad} (must have none)", ""
        return True, "", "1x1"
    mismatch = _start_mismatch(g, i)
    if not mismatch:
        return True, "", "start"
    if (kh, kw) == (3, 3):
        return False, f"3x3 CONV_2D that is not {_START}: " + "; ".join(mismatch), ""
    return False, f"{kh}x{kw} CONV_2D (only 1x1 convs, and {_START} to start, are allowed)", ""


def _depthwise_rule(g: Graph, i: int) -> tuple[bool, str]:
    ins = g.inputs(i)
    fshape, xshape = g.shape(ins[1]), g.shape(ins[0])
    if len(fshape) != 4 or len(xshape) != 4:
        return False, "filter or input is not 4D"
    _, kh, kw, cout = fshape
    opt = g.options(i)
    mult = opt.depthMultiplier or (cout // xshape[3] if xshape[3] > 0 else 1)
    if mult != 1 or (xshape[3] > 0 and cout != xshape[3]):
        return False, "depth multiplier is not 1"
    if (opt.dilationHFactor or 1, opt.dilationWFactor or 1) != (1, 1):
        return False, "dilated DEPTHWISE_CONV_2D"
    if opt.fusedActivationFunction not in _DELEGATE_ACTIVATIONS:
        return False, "fused activation XNNPACK does not support"
    if kh != kw or kh not in (3, 5):
        return False, f"{kh}x{kw} kernel (must be 3x3 or 5x5)"
    if opt.strideH != opt.strideW or opt.strideH not in (1, 2):
        return False, f"stride {opt.strideH}x{opt.strideW} (must be 1x1 or 2x2)"
    pad, why = _conv_padding(g, i, (kh, kw))
    if pad is None:
        return False, why
    want = (kh // 2,) * 4
    if pad != want:
        return False, f"padding top/bottom/left/right {pad} (must be {kh // 2} on each side)"
    return True, ""


def _mean_is_spatial(g: Graph, i: int) -> bool:
    ins = g.inputs(i)
    axes = g.value(ins[1]) if len(ins) > 1 else None
    if len(g.shape(ins[0])) != 4 or axes is None:
        return False
    return sorted({int(a) % 4 for a in np.ravel(axes)}) == [1, 2]


def _op_rule(g: Graph, i: int) -> tuple[bool, str, str]:
    """(allowed inside a sparse subgraph, why not, role) for op ``i``, from the XNNPACK README."""
    name = g.names[i]
    ins = [t for t in g.inputs(i) if t >= 0]
    if name == "CONV_2D":
        return _conv_rule(g, i)
    if name == "DEPTHWISE_CONV_2D":
        ok, why = _depthwise_rule(g, i)
        return ok, why, ""
    if name in ("PAD", "PADV2"):
        pads, why = _pad_amounts(g, i)
        return (True, "", "folded pad") if pads is not None else (False, f"{name} that XNNPACK keeps: {why}", "")
    if name in ("DENSIFY", "DEQUANTIZE") and g.outputs(i) and g.is_static(g.outputs(i)[0]):
        return True, "", "weights"
    if name == "MEAN":
        if _mean_is_spatial(g, i):
            return True, "", "end"
        return False, "MEAN not over the spatial axes (1, 2) of a 4D NHWC tensor", ""
    if name == "DEPTH_TO_SPACE":
        return True, "", "end"
    if name in ("ADD", "MUL"):
        if len(ins) != 2 or any(len(g.shape(t)) != 4 for t in ins):
            return False, f"{name} inputs are not both 4D", ""
        for t in ins:
            v = g.value(t)
            if v is not None and sum(d != 1 for d in v.shape) > 1:
                return False, f"{name} with a constant that is not a scalar or per-channel vector", ""
        return True, "", ""
    if name == "RESIZE_BILINEAR":
        s = g.shape(ins[0])
        if len(s) != 4 or s[1] <= 1 or s[2] <= 1:
            return False, "RESIZE_BILINEAR input is not 4D with height and width > 1", ""
        return True, "", ""
    if name in SPARSE_UNARY_OPS:
        if len(g.shape(ins[0])) != 4:
            return False, f"{name} input is not 4D", ""
        return True, "", ""
    return False, f"{name} is not allowed in a sparse subgraph", ""


# -- the check -------------------------------------------------------------------------------------


@dataclass
class OpCheck:
    index: int
    op: str
    in_span: bool = False  # between the start conv and the final MEAN, on the data path
    allowed: bool = True  # would be allowed inside a sparse subgraph
    reason: str = ""  # why not allowed
    role: str = ""  # "start", "1x1", "end", "folded pad", "weights" or ""
    weights: int | None = None  # 1x1 CONV_2D: filter elements
    zero_fraction: float | None = None  # 1x1 CONV_2D: share of zero filter elements


@dataclass
class SparseRulesReport:
    path: str
    start_op: int | None = None  # the 3x3 stride-2 conv the sparse subgraph starts with
    start_reason: str = ""  # why there is none
    end_op: int | None = None  # the MEAN (or DEPTH_TO_SPACE) it ends with
    end_kind: str = ""
    span: list[int] = field(default_factory=list)
    ops: list[OpCheck] = field(default_factory=list)
    weights_1x1: int = 0
    zeros_1x1: int = 0
    threshold: float = ZERO_FRACTION_THRESHOLD
    eligible: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def zero_fraction_1x1(self) -> float | None:
        return self.zeros_1x1 / self.weights_1x1 if self.weights_1x1 else None

    @property
    def ends_with_mean(self) -> bool:
        return self.end_kind == "MEAN"

    def summary(self) -> str:
        zf = self.zero_fraction_1x1
        share = f"1x1 weights {zf:.1%} zero" if zf is not None else "no 1x1 conv"
        if self.eligible:
            return (f"{self.path}: eligible for XNNPACK sparse inference: ops {self.start_op}..{self.end_op}, "
                    f"{share} (> {self.threshold:.1%})")
        return f"{self.path}: not eligible: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["zero_fraction_1x1"] = self.zero_fraction_1x1
        d["ends_with_mean"] = self.ends_with_mean
        return d


def _find_start(g: Graph, rules: dict[int, tuple[bool, str, str]]) -> tuple[list[int], str]:
    """Candidate start convs in op order, or why there is none (about the first CONV_2D)."""
    starts = [i for i, r in rules.items() if r[2] == "start"]
    if starts:
        return starts, ""
    convs = [i for i, n in enumerate(g.names) if n == "CONV_2D"]
    if not convs:
        return [], "no CONV_2D in the graph; a sparse subgraph starts with a 3x3 stride-2 CONV_2D"
    first = convs[0]
    why = "; ".join(_start_mismatch(g, first)) or rules[first][1]
    return [], f"no qualifying start conv: the first CONV_2D (op {first}) is not {_START}: {why}"


def _walk_span(g: Graph, start: int) -> tuple[list[int], list[int]]:
    """(span ops, end ops) downstream of ``start``: ops on a data path from it to a spatial MEAN
    (or DEPTH_TO_SPACE). Disallowed ops are walked through so they can be named."""
    reached, ends = {start}, []
    queue = deque([start])
    while queue:
        i = queue.popleft()
        for t in g.outputs(i):
            for c in g.consumers.get(t, []):
                if c in reached:
                    continue
                reached.add(c)
                name = g.names[c]
                is_end = name == "DEPTH_TO_SPACE" or (name == "MEAN" and _mean_is_spatial(g, c))
                if is_end:
                    ends.append(c)
                # A MEAN that keeps 4D (squeeze-and-excite) may feed more of the subgraph.
                keeps_4d = name == "MEAN" and len(g.shape(g.outputs(c)[0])) == 4
                if not is_end or keeps_4d:
                    queue.append(c)
    # Keep only what leads to an end: walk back from the ends over producers within ``reached``.
    on_path, back = set(ends), deque(ends)
    while back:
        i = back.popleft()
        for t in g.inputs(i):
            p = g.producer.get(t)
            if p is not None and p in reached and p not in on_path:
                on_path.add(p)
                back.append(p)
    span = sorted(on_path | {start}) if ends else [start]
    return span, sorted(ends)


def _span_problems(g: Graph, span: list[int], ends: list[int],
                   rules: dict[int, tuple[bool, str, str]]) -> list[str]:
    """One line per thing inside the span that the documented rules exclude."""
    inside, problems = set(span), []
    start = span[0]
    for i in span:
        ok, why, role = rules[i]
        if i != start and (not ok or role == "start"):
            problems.append(f"{g.label(i)} inside the sparse subgraph: "
                            f"{why or 'a 3x3 stride-2 CONV_2D can only start it'}")
        data_ins = [t for t in g.inputs(i)[: (1 if g.names[i] in ('CONV_2D', 'DEPTHWISE_CONV_2D') else None)]
                    if t >= 0 and not g.is_static(t)]
        for t in data_ins:
            if g.ttype(t) not in _FLOAT_TYPES:
                problems.append(f"{g.label(i)} reads a non-float tensor '{g.name(t)}'")
            if i != start and g.producer.get(t) not in inside:
                problems.append(f"{g.label(i)} takes '{g.name(t)}' from outside the sparse subgraph")
        if i in ends:
            continue
        for t in g.outputs(i):
            if t in g.graph_outputs:
                problems.append(f"{g.label(i)} output '{g.name(t)}' is a graph output inside the sparse subgraph")
            for c in g.consumers.get(t, []):
                if c not in inside:
                    problems.append(f"{g.label(c)} consumes '{g.name(t)}' from inside the sparse subgraph "
                                    "and does not lead to the MEAN")
    return list(dict.fromkeys(problems))  # an op reading two span tensors is named once


def _first_disallowed(g: Graph, start: int, rules: dict[int, tuple[bool, str, str]]) -> list[int]:
    """The disallowed ops where the data path from ``start`` first leaves the allowed ops."""
    seen, hits, queue = {start}, [], deque([start])
    while queue:
        i = queue.popleft()
        for c in (c for t in g.outputs(i) for c in g.consumers.get(t, [])):
            if c in seen:
                continue
            seen.add(c)
            ok, _, role = rules[c]
            if ok and role != "start":
                queue.append(c)
            else:
                hits.append(c)
    return sorted(hits)


def _evaluate_start(g: Graph, start: int, rules: dict[int, tuple[bool, str, str]]) -> dict[str, Any]:
    span, ends = _walk_span(g, start)
    if ends:
        problems = _span_problems(g, span, ends, rules)
    else:
        exits = [f"{g.label(i)}: {rules[i][1] or 'a 3x3 stride-2 CONV_2D can only start it'}"
                 for i in _first_disallowed(g, start, rules)]
        problems = [f"no spatial MEAN (or DEPTH_TO_SPACE) downstream of the start conv {g.label(start)}"
                    + ("; the data path leaves the allowed ops at " + ", ".join(exits) if exits else "")]
    weights = zeros = 0
    for i in span:
        if rules[i][2] == "1x1":
            w = g.value(g.inputs(i)[1])
            weights += w.size
            zeros += int(np.count_nonzero(w == 0))
    if ends and not weights:
        problems.append("no 1x1 CONV_2D inside the sparse subgraph")
    elif weights and zeros * 3 <= weights * 2:
        problems.append(f"1x1 CONV_2D weights are {zeros / weights:.1%} zero; XNNPACK needs more than "
                        f"{ZERO_FRACTION_THRESHOLD:.1%}")
    return {"start": start, "span": span, "ends": ends, "problems": problems, "weights": weights,
            "zeros": zeros}


def check_sparse_rules(path: str | Path) -> SparseRulesReport:
    """Whether subgraph 0 of a .tflite has the shape XNNPACK's sparse inference documents.

    A static check of the rules in TensorFlow's ``tensorflow/lite/delegates/xnnpack/README.md``
    ("Sparse Inference") on the operator list, with the few details of XNNPACK's own check that
    decide them for converter output: a zero PAD feeding a conv is folded into its padding, TF SAME
    padding becomes explicit at stride 1 only, the 1x1 zero share must exceed 2/3. It is not a
    reimplementation of XNNPACK's partitioner: it does not know which ops the delegate takes, runs
    no connected-components clustering, and stays with the README where newer XNNPACK accepts more
    (all unary ops, FULLY_CONNECTED). It also does not check that weights are stored sparse:
    XNNPACK only tries sparse inference when the model has DENSIFY'd weights (see
    :func:`sparsify_tflite`).

    The sparse subgraph is taken as the ops on a data path from the first qualifying 3x3 stride-2
    CONV_2D to a spatial MEAN (or DEPTH_TO_SPACE): ops outside it (an input TRANSPOSE, a
    RESHAPE/FULLY_CONNECTED head) do not matter; disallowed ops inside it are listed in ``reasons``.
    """
    g = Graph(read_model(path))
    rules = {i: _op_rule(g, i) for i in range(len(g.ops))}
    report = SparseRulesReport(path=str(path))
    report.ops = [OpCheck(i, g.names[i], allowed=r[0], reason=r[1], role=r[2]) for i, r in rules.items()]
    for c in report.ops:
        if c.role == "1x1":
            w = g.value(g.inputs(c.index)[1])
            c.weights, c.zero_fraction = int(w.size), float(np.count_nonzero(w == 0) / w.size)
    starts, report.start_reason = _find_start(g, rules)
    if not starts:
        report.reasons = [report.start_reason]
        return report
    # Several candidate stems: take the first that works, else report on the first.
    results = [_evaluate_start(g, s, rules) for s in starts]
    best = next((r for r in results if not r["problems"]), results[0])
    report.start_op, report.span = best["start"], best["span"]
    if best["ends"]:
        report.end_op = best["ends"][-1]
        report.end_kind = g.names[report.end_op]
    report.weights_1x1, report.zeros_1x1 = best["weights"], best["zeros"]
    for c in report.ops:
        c.in_span = c.index in set(best["span"])
    report.reasons = best["problems"]
    report.eligible = not best["problems"]
    return report
