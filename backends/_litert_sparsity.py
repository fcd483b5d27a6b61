"""Sparse FP32 weights in a .tflite file, for XNNPACK's sparse inference (Fast Sparse ConvNets).

XNNPACK (LiteRT's CPU delegate) runs a part of an FP32 graph in NCHW layout with sparse 1x1
convolutions when the model stores weights sparse (``DENSIFY`` operators over constant tensors with
``sparsity`` parameters). The TF converter's experimental sparsity option used to write such files;
the PyTorch -> LiteRT path (litert-torch) does not, so :func:`sparsify_tflite` rewrites the converted
flatbuffer, and :func:`verify_sparsified` runs the original and the rewritten model side by side.
:func:`delegated_indices` / :func:`delegated_ops` say which ops a delegate took (the LiteRT
backend's delegation accounting uses them too).

Beside it: :mod:`edgebench.backends._tflite_flatbuffer` (reading/writing the flatbuffer, the CSR
encoding, the graph view) and :mod:`edgebench.backends._xnnpack_sparse_rules` (whether a graph has
the shape XNNPACK's sparse path accepts).

This module imports only numpy, the flatbuffer module, and ai_edge_litert (inside functions): it
runs on a board.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends._tflite_flatbuffer import (Graph, encode_csr, read_model, schema, sparsity_parameters,
                                                   write_model)

_DENSIFY = 124  # BuiltinOperator.DENSIFY


# -- the rewrite -----------------------------------------------------------------------------------


@dataclass
class LayerSparsity:
    op_index: int  # the CONV_2D in the source model
    tensor: str
    shape: list[int]
    zero_fraction: float
    nonzeros: int
    dense_bytes: int
    sparse_bytes: int  # values + segments + indices
    segments_dtype: str
    indices_dtype: str


@dataclass
class SparsifyReport:
    src: str
    dst: str
    min_zero_fraction: float
    encoder: str = ""
    layers: list[LayerSparsity] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {op_index, tensor, reason}
    file_bytes_before: int = 0
    file_bytes_after: int = 0

    @property
    def dense_bytes(self) -> int:
        return sum(layer.dense_bytes for layer in self.layers)

    @property
    def sparse_bytes(self) -> int:
        return sum(layer.sparse_bytes for layer in self.layers)

    def summary(self) -> str:
        return (f"{self.dst}: {len(self.layers)} 1x1 conv weight(s) stored sparse "
                f"({self.dense_bytes} -> {self.sparse_bytes} bytes), {len(self.skipped)} left dense; "
                f"file {self.file_bytes_before} -> {self.file_bytes_after} bytes")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(dense_bytes=self.dense_bytes, sparse_bytes=self.sparse_bytes)
        return d


def _densify_opcode(model: Any) -> int:
    """Index of the DENSIFY operator code, added when missing."""
    S = schema()
    for k, code in enumerate(model.operatorCodes):
        if max(int(code.deprecatedBuiltinCode), int(code.builtinCode)) == _DENSIFY:
            return k
    model.operatorCodes.append(S.OperatorCodeT(deprecatedBuiltinCode=_DENSIFY, builtinCode=_DENSIFY, version=1))
    return len(model.operatorCodes) - 1


def _buffer_users(model: Any) -> dict[int, int]:
    users: dict[int, int] = {}
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            users[int(t.buffer)] = users.get(int(t.buffer), 0) + 1
    return users


def _sparse_weight_candidates(g: Graph, min_zero_fraction: float, report: SparsifyReport) -> list[tuple[int, int]]:
    """(op index, weight tensor) of every 1x1 CONV_2D whose FP32 constant weight gets stored sparse."""
    chosen, seen = [], set()
    for i, name in enumerate(g.names):
        if name != "CONV_2D":
            continue
        t = g.inputs(i)[1]
        shape = g.shape(t)
        if len(shape) != 4 or shape[1:3] != [1, 1] or t in seen:
            continue
        seen.add(t)
        why = ""
        if g.ttype(t) != 0 or g.buffer_bytes(t) is None or g.tensors[t].sparsity is not None:
            why = "not a dense FP32 constant"
        else:
            w = g.value(t)
            zf = float(np.count_nonzero(w == 0) / w.size)
            if zf < min_zero_fraction:
                why = f"{zf:.1%} zero < min_zero_fraction {min_zero_fraction:.1%}"
            elif zf == 1.0:
                # An empty buffer would read as a non-constant tensor, which DENSIFY rejects.
                why = "all zero (an empty sparse buffer is not a constant)"
        if why:
            report.skipped.append({"op_index": i, "tensor": g.name(t), "reason": why})
        else:
            chosen.append((i, t))
    return chosen


def sparsify_tflite(src: str | Path, dst: str | Path, min_zero_fraction: float = 0.0) -> SparsifyReport:
    """Write ``dst``: ``src`` with the FP32 weights of its 1x1 CONV_2D ops stored sparse.

    Only 1x1 convolutions: they are the ops XNNPACK runs as sparse matrix products (the 3x3 stem
    and depthwise convs stay dense in its sparse path, so sparse storage would only shrink the
    file). Each weight whose zero share is at least ``min_zero_fraction`` (TF's converter used 0.3)
    becomes a new constant tensor with ``sparsity`` parameters and a buffer of the non-zeros, and a
    DENSIFY op, inserted at the start of subgraph 0, recreates the original tensor (which loses its
    buffer) for the conv. Weights shared by several convs are converted once; all-zero weights are
    left dense. Other subgraphs are copied unchanged.
    """
    src, dst = Path(src), Path(dst)
    if not 0.0 <= min_zero_fraction <= 1.0:
        raise ValueError(f"min_zero_fraction must be within [0, 1], not {min_zero_fraction}")
    model = read_model(src)
    g = Graph(model)
    S = schema()
    report = SparsifyReport(src=str(src), dst=str(dst), min_zero_fraction=min_zero_fraction,
                            file_bytes_before=src.stat().st_size)
    candidates = _sparse_weight_candidates(g, min_zero_fraction, report)
    densify_ops = []
    if candidates:
        opcode = _densify_opcode(model)
        users = _buffer_users(model)
    for op_index, t in candidates:
        tensor = g.tensors[t]
        w = g.value(t)
        csr = encode_csr(w)
        report.encoder = csr.encoder
        params, facts = sparsity_parameters(csr)
        model.buffers.append(S.BufferT(data=np.frombuffer(csr.values.astype("<f4").tobytes(), np.uint8)))
        sparse = S.TensorT(shape=np.array(w.shape, dtype=np.int32), type=S.TensorType.FLOAT32,
                           buffer=len(model.buffers) - 1, name=(g.name(t) + "/sparse").encode(),
                           sparsity=params)
        g.sg.tensors.append(sparse)
        old = int(tensor.buffer)
        model.buffers.append(S.BufferT())  # the dense tensor is now computed: an empty buffer
        tensor.buffer = len(model.buffers) - 1
        users[old] -= 1
        if users[old] == 0:
            model.buffers[old].data = None  # nothing else reads it: drop the dense bytes
        densify_ops.append(S.OperatorT(opcodeIndex=opcode, inputs=[len(g.sg.tensors) - 1], outputs=[t],
                                       builtinOptionsType=S.BuiltinOptions.DensifyOptions,
                                       builtinOptions=S.DensifyOptionsT()))
        report.layers.append(LayerSparsity(
            op_index=op_index, tensor=g.name(t), shape=list(w.shape),
            zero_fraction=float(1 - csr.values.size / w.size), nonzeros=int(csr.values.size),
            dense_bytes=int(w.nbytes), sparse_bytes=facts["sparse_bytes"],
            segments_dtype=facts["segments_dtype"], indices_dtype=facts["indices_dtype"]))
    # The weights must exist before any conv runs: DENSIFY ops go first (they have no data inputs).
    g.sg.operators = densify_ops + list(g.sg.operators or [])
    report.file_bytes_after = write_model(model, dst)
    return report


# -- verification ----------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    src: str
    dst: str
    atol: float
    max_abs_diff_xnnpack: float = float("nan")  # default interpreter (XNNPACK delegate)
    max_abs_diff_reference: float = float("nan")  # reference kernels, no delegate
    densify_ops: list[int] = field(default_factory=list)
    densify_delegated: list[int] = field(default_factory=list)  # DENSIFY ops XNNPACK took
    conv_ops: list[int] = field(default_factory=list)
    conv_delegated: list[int] = field(default_factory=list)
    densified_equal: bool = False  # reference DENSIFY output == the dense weights, bit for bit
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interpreter(path: Path, reference: bool, preserve: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"experimental_preserve_all_tensors": preserve}
    if reference:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), **kwargs)
    it.allocate_tensors()
    return it


def _run(it: Any, feeds: list[np.ndarray]) -> list[np.ndarray]:
    for detail, x in zip(it.get_input_details(), feeds):
        it.set_tensor(detail["index"], x)
    it.invoke()
    return [np.array(it.get_tensor(d["index"])) for d in it.get_output_details()]


def delegated_indices(ops: list[dict[str, Any]]) -> set[int]:
    """Indices of the model's operators that a delegate took, from the interpreter's node list.

    After delegation the interpreter lists the model's nodes and then one ``DELEGATE`` node per
    partition; walking back from a partition's outputs over producers, stopping at its inputs,
    finds the nodes it replaced.
    """
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in originals for t in op["outputs"]}
    by_index = {op["index"]: op for op in originals}
    taken: set[int] = set()
    for part in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in part["inputs"]}
        stack = [int(t) for t in part["outputs"]]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node in taken:
                continue
            taken.add(node)
            stack.extend(int(t) for t in by_index[node]["inputs"] if int(t) >= 0 and int(t) not in boundary)
    return taken


def delegated_ops(interpreter: Any) -> set[int]:
    """Indices of the model's ops that a delegate replaced (the LiteRT backend's own accounting)."""
    return delegated_indices(interpreter._get_ops_details())


def verify_sparsified(src: str | Path, dst: str | Path, atol: float = 1e-5, seed: int = 0) -> VerifyReport:
    """Run ``src`` and ``dst``, its copy from :func:`sparsify_tflite`, on the same random inputs.

    Compares outputs both with the default interpreter (XNNPACK, which densifies static sparse weights at init) and
    with reference kernels (which run DENSIFY); checks that the reference DENSIFY output equals the
    dense weights of ``src`` exactly, and records which DENSIFY and CONV_2D ops XNNPACK took.
    """
    src, dst = Path(src), Path(dst)
    rep = VerifyReport(src=str(src), dst=str(dst), atol=atol)
    rng = np.random.default_rng(seed)
    probe = _interpreter(src, reference=True)
    feeds = [rng.standard_normal(d["shape"]).astype(d["dtype"]) if np.issubdtype(d["dtype"], np.floating)
             else np.zeros(d["shape"], d["dtype"]) for d in probe.get_input_details()]
    ref_src = _run(probe, feeds)
    for label, reference in (("xnnpack", False), ("reference", True)):
        a = ref_src if reference else _run(_interpreter(src, reference=False), feeds)
        b = _run(_interpreter(dst, reference=reference), feeds)
        diff = max((float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0)
                   for x, y in zip(a, b)) if a else 0.0
        setattr(rep, f"max_abs_diff_{label}", diff)
        if not diff <= atol:
            rep.problems.append(f"{label}: outputs differ by {diff:.3g} > {atol:g}")
    g_dst = Graph(read_model(dst))
    g_src = Graph(read_model(src))
    rep.densify_ops = [i for i, n in enumerate(g_dst.names) if n == "DENSIFY"]
    rep.conv_ops = [i for i, n in enumerate(g_dst.names) if n == "CONV_2D"]
    taken = delegated_ops(_interpreter(dst, reference=False))
    rep.densify_delegated = [i for i in rep.densify_ops if i in taken]
    rep.conv_delegated = [i for i in rep.conv_ops if i in taken]
    it = _interpreter(dst, reference=True, preserve=True)
    _run(it, feeds)
    rep.densified_equal = all(
        np.array_equal(it.get_tensor(g_dst.outputs(i)[0]), g_src.value(g_dst.outputs(i)[0]))
        for i in rep.densify_ops)
    if not rep.densified_equal:
        rep.problems.append("reference DENSIFY output differs from the dense weights")
    rep.ok = not rep.problems
    return rep
