"""Sparse FP32 weights in a .tflite file, for XNNPACK's sparse inference (Fast Sparse ConvNets).

XNNPACK (LiteRT's CPU delegate) runs a part of an FP32 graph in NCHW layout with sparse 1x1
convolutions when the model stores weights sparse (``DENSIFY`` operators over constant tensors with
``sparsity`` parameters). The TF converter's experimental sparsity option used to write such files;
the PyTorch -> LiteRT path (litert-torch) does not, so :func:`sparsify_tflite` rewrites the converted
flatbuffer, and :func:`check_sparse_rules` says whether a graph has the shape XNNPACK's sparse path
accepts. :func:`verify_sparsified` runs the original and the rewritten model side by side.

The sparse layout is the one TensorFlow's own ``DenseToSparse`` MLIR pass writes for a weight with
no block structure: traversal order ``[0, 1, 2, 3]``, every dimension ``DENSE`` except the last
(input channels of an OHWI filter), which is ``SPARSE_CSR``; the tensor keeps the dense shape and
its buffer holds only the non-zero values, in row-major order. Segments and indices are stored as
the smallest of Uint8/Uint16/Int32 vectors that holds their largest value, as TF's flatbuffer
exporter does. Values are encoded by TFLite's own ``FormatConverter`` (the pybind wrapper shipped in
ai-edge-litert) when it can be imported, else by an equivalent numpy routine.

This module imports only numpy and ai_edge_litert (inside functions): it runs on a board.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# XNNPACK enables sparse inference only when the 1x1 convolutions of the subgraph are *more* than
# 2/3 zeros (src/subgraph.c: disabled when zeros * 3 <= params * 2).
ZERO_FRACTION_THRESHOLD = 2.0 / 3.0

# Unary elementwise ops the XNNPACK README lists for sparse subgraphs (SIGMOID is LOGISTIC in TFLite).
SPARSE_UNARY_OPS = frozenset({
    "ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU", "RELU6",
    "RELU_N1_TO_1", "ROUND", "SQUARE",
})

_NUMPY_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
                 7: np.int16, 9: np.int8, 10: np.float64}
_FLOAT_TYPES = (0, 1)  # FLOAT32, FLOAT16: the only types XNNPACK's NCHW rewrite takes
_DELEGATE_ACTIVATIONS = (0, 1, 2, 3)  # NONE, RELU, RELU_N1_TO_1, RELU6; TANH/SIGN_BIT are not fused
_SAME = 0  # Padding.SAME; VALID is 1
_DENSIFY = 124


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@functools.lru_cache(maxsize=1)
def _op_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


# -- reading and writing ---------------------------------------------------------------------------


def _read_model(path: str | Path) -> Any:
    """The model as the flatbuffer object API's ``ModelT``; one-line errors for what we cannot edit."""
    path = Path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier); re-export it")
    try:
        model = _schema().ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct.error to IndexError
        raise ValueError(f"{path}: unreadable TFLite flatbuffer ({exc}); re-export it") from exc
    if not model.subgraphs:
        raise ValueError(f"{path}: model has no subgraph; re-export it")
    if model.externalBuffers or any((b.offset or 0) > 1 for b in model.buffers or []):
        # Data stored after the flatbuffer (the >2 GB layout) would be lost by re-packing.
        raise ValueError(f"{path}: weights are stored outside the flatbuffer (offset buffers); "
                         "export without external/offset buffers")
    return model


def _write_model(model: Any, path: str | Path) -> int:
    """Pack ``model`` to ``path``; returns the file size."""
    import flatbuffers

    # The generated Pack stores buffer data 4-byte aligned, enough for float32 (and what
    # litert-torch's own output has).
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    Path(path).write_bytes(out)
    return len(out)


# -- sparse tensors --------------------------------------------------------------------------------


@dataclass
class CsrWeights:
    """A weight in TFLite's sparse format: dims DENSE except the last, which is SPARSE_CSR."""

    shape: list[int]
    values: np.ndarray  # float32, the non-zeros in row-major order
    segments: np.ndarray  # int64, prod(shape[:-1]) + 1 entries
    indices: np.ndarray  # int64, last-axis index of every value
    encoder: str  # "tflite" (TFLite's FormatConverter) or "numpy"


def _csr_numpy(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = w.reshape(-1, w.shape[-1])
    mask = rows != 0
    segments = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    return rows[mask].astype(np.float32), segments, np.nonzero(mask)[1].astype(np.int64)


def _csr_tflite(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ai_edge_litert import format_converter_wrapper_pybind11 as fc

    n = w.ndim
    formats = [fc.TF_LITE_DIM_DENSE] * (n - 1) + [fc.TF_LITE_DIM_SPARSE_CSR]
    conv = fc.FormatConverterFp32(list(w.shape), list(range(n)), formats, [], [])
    # The converter reads the buffer as float32 in place: hand it a contiguous float32 copy.
    status = conv.DenseToSparse(np.ascontiguousarray(w, dtype=np.float32).ravel())
    if status != fc.TfLiteStatus.TF_LITE_OK:
        raise RuntimeError(f"TFLite FormatConverter failed on a {list(w.shape)} weight ({status})")
    meta = conv.GetDimMetadata()  # two entries per dim: [dense size], [] or segments, indices
    return (np.asarray(conv.GetData(), dtype=np.float32), np.asarray(meta[2 * n - 2], dtype=np.int64),
            np.asarray(meta[2 * n - 1], dtype=np.int64))


def encode_csr(weight: np.ndarray, encoder: str = "auto") -> CsrWeights:
    """Encode ``weight`` with the last axis SPARSE_CSR and the others DENSE.

    ``encoder``: "tflite" uses TFLite's FormatConverter (ai_edge_litert's pybind wrapper), "numpy"
    the equivalent numpy code, "auto" the first when it imports. Zeros (including -0.0) are dropped.
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim < 1 or w.size == 0:
        raise ValueError(f"cannot encode a weight of shape {list(w.shape)} as sparse")
    if encoder == "auto":
        try:
            from ai_edge_litert import format_converter_wrapper_pybind11  # noqa: F401
            encoder = "tflite"
        except ImportError:
            encoder = "numpy"
    if encoder not in ("tflite", "numpy"):
        raise ValueError(f"encoder must be 'auto', 'tflite' or 'numpy', not {encoder!r}")
    values, segments, indices = (_csr_tflite if encoder == "tflite" else _csr_numpy)(w)
    return CsrWeights(list(w.shape), values, segments, indices, encoder)


def _index_vector(values: np.ndarray) -> tuple[int, Any, str]:
    """(SparseIndexVector type, union table, dtype name): the smallest type holding ``values``."""
    S = _schema()
    top = int(values.max()) if values.size else 0
    for kind, table, dtype in ((S.SparseIndexVector.Uint8Vector, S.Uint8VectorT, np.uint8),
                               (S.SparseIndexVector.Uint16Vector, S.Uint16VectorT, np.uint16),
                               (S.SparseIndexVector.Int32Vector, S.Int32VectorT, np.int32)):
        if top <= np.iinfo(dtype).max:
            return kind, table(values=values.astype(dtype)), np.dtype(dtype).name
    raise ValueError(f"sparse index {top} does not fit int32")


def sparsity_parameters(csr: CsrWeights) -> tuple[Any, dict[str, Any]]:
    """``SparsityParametersT`` for ``csr`` and facts about it (index dtypes, bytes)."""
    S = _schema()
    dims = [S.DimensionMetadataT(format=S.DimensionType.DENSE, denseSize=int(d)) for d in csr.shape[:-1]]
    seg_kind, seg_table, seg_dtype = _index_vector(csr.segments)
    idx_kind, idx_table, idx_dtype = _index_vector(csr.indices)
    dims.append(S.DimensionMetadataT(format=S.DimensionType.SPARSE_CSR, arraySegmentsType=seg_kind,
                                     arraySegments=seg_table, arrayIndicesType=idx_kind,
                                     arrayIndices=idx_table))
    params = S.SparsityParametersT(traversalOrder=list(range(len(csr.shape))), dimMetadata=dims)
    nbytes = (csr.values.nbytes + seg_table.values.nbytes + idx_table.values.nbytes)
    return params, {"segments_dtype": seg_dtype, "indices_dtype": idx_dtype, "sparse_bytes": nbytes}


def _index_values(kind: int, table: Any) -> np.ndarray:
    if kind == 0 or table is None or table.values is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(table.values, dtype=np.int64)


def decode_sparse(shape: list[int], sparsity: Any, values: np.ndarray) -> np.ndarray:
    """The dense array of a sparse tensor (``SparsityParametersT``), as TFLite's DENSIFY computes it.

    Handles any mix of DENSE and SPARSE_CSR dimensions in the identity traversal order without
    blocks (what TF writes for unstructured sparsity); raises ValueError for other layouts.
    """
    order = list(sparsity.traversalOrder if sparsity.traversalOrder is not None else [])
    if order != list(range(len(shape))) or (sparsity.blockMap is not None and len(sparsity.blockMap)):
        raise ValueError(f"sparse layout with traversal order {order} / block map is not supported")
    prefix = np.zeros(1, dtype=np.int64)  # linear index into the dense array, per stored position
    pos = np.zeros(1, dtype=np.int64)  # position within the dimension's storage, per element
    for size, md in zip(shape, sparsity.dimMetadata):
        size = int(size)
        if md.format == _schema().DimensionType.DENSE:
            # Dense dims enumerate every child: position and linear index both scale by the size.
            pos = (pos[:, None] * size + np.arange(size)).ravel()
            prefix = (prefix[:, None] * size + np.arange(size)).ravel()
        else:
            seg = _index_values(md.arraySegmentsType, md.arraySegments)
            idx = _index_values(md.arrayIndicesType, md.arrayIndices)
            counts = seg[pos + 1] - seg[pos]
            starts = np.repeat(seg[pos], counts)
            child = starts + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            prefix = np.repeat(prefix, counts) * size + idx[child]
            pos = child
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    dense[prefix] = values[pos]
    return dense.reshape([int(d) for d in shape])


# -- the graph -------------------------------------------------------------------------------------


class _Graph:
    """Subgraph 0 of a model with what the checks need: op names, producers, consumers, constants."""

    def __init__(self, model: Any):
        self.model = model
        self.sg = model.subgraphs[0]
        self.ops = list(self.sg.operators or [])
        self.tensors = list(self.sg.tensors or [])
        names = _op_names()
        self.names = []
        for op in self.ops:
            code = model.operatorCodes[op.opcodeIndex]
            # Codes above 127 live only in builtinCode; older files fill only the deprecated field.
            builtin = max(int(code.deprecatedBuiltinCode), int(code.builtinCode))
            self.names.append(names.get(builtin, f"BUILTIN_{builtin}")
                              if builtin != 32 else f"CUSTOM({(code.customCode or b'').decode()})")
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in self._ids(op.outputs):
                self.producer[t] = i
            for t in set(self._ids(op.inputs)):
                self.consumers.setdefault(t, []).append(i)
        self.graph_outputs = set(self._ids(self.sg.outputs))

    @staticmethod
    def _ids(seq: Any) -> list[int]:
        return [int(t) for t in (seq if seq is not None else []) if int(t) >= 0]

    def inputs(self, i: int) -> list[int]:
        return [int(t) for t in (self.ops[i].inputs if self.ops[i].inputs is not None else [])]

    def outputs(self, i: int) -> list[int]:
        return self._ids(self.ops[i].outputs)

    def shape(self, t: int) -> list[int]:
        s = self.tensors[t].shape
        return [int(d) for d in (s if s is not None else [])]

    def name(self, t: int) -> str:
        n = self.tensors[t].name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n or "")

    def ttype(self, t: int) -> int:
        return int(self.tensors[t].type)

    def buffer_bytes(self, t: int) -> bytes | None:
        b = self.model.buffers[self.tensors[t].buffer]
        return None if b.data is None or len(b.data) == 0 else np.asarray(b.data, np.uint8).tobytes()

    def unpacked_from(self, t: int) -> int | None:
        """The tensor that ``t`` is unpacked from by DENSIFY, or by DEQUANTIZE of FP16, else None.

        XNNPACK runs these ops once at delegate init when their input is constant, so their output
        counts as a constant weight (its "quasi-static" tensors).
        """
        p = self.producer.get(t)
        if p is None or self.names[p] not in ("DENSIFY", "DEQUANTIZE"):
            return None
        src = self.inputs(p)[0]
        return src if self.names[p] == "DENSIFY" or self.ttype(src) == 1 else None

    def value(self, t: int) -> np.ndarray | None:
        """The constant value of tensor ``t`` (see :meth:`unpacked_from`), or None when computed."""
        raw = self.buffer_bytes(t)
        tensor = self.tensors[t]
        if raw is not None:
            dtype = _NUMPY_DTYPES.get(self.ttype(t))
            if dtype is None:
                return None
            flat = np.frombuffer(raw, dtype=dtype)
            if tensor.sparsity is not None:
                return decode_sparse(self.shape(t), tensor.sparsity, flat)
            return flat.reshape(self.shape(t)) if flat.size == int(np.prod(self.shape(t))) else flat
        src = self.unpacked_from(t)
        value = None if src is None else self.value(src)
        return None if value is None else value.astype(np.float32)

    def is_static(self, t: int) -> bool:
        src = self.unpacked_from(t)
        return self.buffer_bytes(t) is not None or (src is not None and self.is_static(src))

    def options(self, i: int) -> Any:
        return self.ops[i].builtinOptions

    def label(self, i: int) -> str:
        return f"op {i} ({self.names[i]})"


# -- the documented rules, op by op ----------------------------------------------------------------


def _pad_amounts(g: _Graph, i: int) -> tuple[tuple[int, int, int, int] | None, str]:
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


def _conv_padding(g: _Graph, i: int, kernel: tuple[int, int]) -> tuple[tuple[int, ...] | None, str]:
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


def _start_mismatch(g: _Graph, i: int) -> list[str]:
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


def _conv_rule(g: _Graph, i: int) -> tuple[bool, str, str]:
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


def _depthwise_rule(g: _Graph, i: int) -> tuple[bool, str]:
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


def _mean_is_spatial(g: _Graph, i: int) -> bool:
    ins = g.inputs(i)
    axes = g.value(ins[1]) if len(ins) > 1 else None
    if len(g.shape(ins[0])) != 4 or axes is None:
        return False
    return sorted({int(a) % 4 for a in np.ravel(axes)}) == [1, 2]


def _op_rule(g: _Graph, i: int) -> tuple[bool, str, str]:
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


def _find_start(g: _Graph, rules: dict[int, tuple[bool, str, str]]) -> tuple[list[int], str]:
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


def _walk_span(g: _Graph, start: int) -> tuple[list[int], list[int]]:
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


def _span_problems(g: _Graph, span: list[int], ends: list[int],
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


def _first_disallowed(g: _Graph, start: int, rules: dict[int, tuple[bool, str, str]]) -> list[int]:
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


def _evaluate_start(g: _Graph, start: int, rules: dict[int, tuple[bool, str, str]]) -> dict[str, Any]:
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
    g = _Graph(_read_model(path))
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
    S = _schema()
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


def _sparse_weight_candidates(g: _Graph, min_zero_fraction: float, report: SparsifyReport) -> list[tuple[int, int]]:
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
    model = _read_model(src)
    g = _Graph(model)
    S = _schema()
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
    report.file_bytes_after = _write_model(model, dst)
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


def delegated_ops(interpreter: Any) -> set[int]:
    """Indices of the model's ops that a delegate replaced (the LiteRT backend's own accounting)."""
    from edgebench.backends.litert import delegated_indices

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
    g_dst = _Graph(_read_model(dst))
    g_src = _Graph(_read_model(src))
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
