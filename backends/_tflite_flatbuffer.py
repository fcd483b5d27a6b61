"""The .tflite flatbuffer: reading and writing it, its sparse tensors, and a view of its graph.

The shared ground of the LiteRT sparsity tools (:mod:`edgebench.backends._xnnpack_sparse_rules`
checks a graph, :mod:`edgebench.backends._litert_sparsity` rewrites one): the model as the
flatbuffer object API's ``ModelT`` (:func:`read_model`, :func:`write_model`), sparse tensors in
TFLite's format (:func:`encode_csr`, :func:`sparsity_parameters`, :func:`decode_sparse`) and
subgraph 0 with its producers, consumers and constant values (:class:`Graph`).

The sparse layout is the one TensorFlow's own ``DenseToSparse`` MLIR pass writes for a weight with
no block structure: traversal order ``[0, 1, 2, 3]``, every dimension ``DENSE`` except the last
(input channels of an OHWI filter), which is ``SPARSE_CSR``; the tensor keeps the dense shape and
its buffer holds only the non-zero values, in row-major order. Segments and indices are stored as
the smallest of Uint8/Uint16/Int32 vectors that holds their largest value, as TF's flatbuffer
exporter does. Values are encoded by TFLite's own ``FormatConverter`` (the pybind wrapper shipped in
ai-edge-litert) when it can be imported, else by an equivalent numpy routine.

This module imports only numpy, and ai_edge_litert / flatbuffers inside functions: it runs on a board.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_NUMPY_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
                 7: np.int16, 9: np.int8, 10: np.float64}


def schema() -> Any:
    """The generated TFLite schema module (``schema_py_generated``) of ai-edge-litert."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@functools.lru_cache(maxsize=1)
def op_names() -> dict[int, str]:
    """BuiltinOperator code -> name."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


# -- reading and writing ---------------------------------------------------------------------------


def read_model(path: str | Path) -> Any:
    """The model as the flatbuffer object API's ``ModelT``; one-line errors for what we cannot edit."""
    path = Path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier); re-export it")
    try:
        model = schema().ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct.error to IndexError
        raise ValueError(f"{path}: unreadable TFLite flatbuffer ({exc}); re-export it") from exc
    if not model.subgraphs:
        raise ValueError(f"{path}: model has no subgraph; re-export it")
    if model.externalBuffers or any((b.offset or 0) > 1 for b in model.buffers or []):
        # Data stored after the flatbuffer (the >2 GB layout) would be lost by re-packing.
        raise ValueError(f"{path}: weights are stored outside the flatbuffer (offset buffers); "
                         "export without external/offset buffers")
    return model


def write_model(model: Any, path: str | Path) -> int:
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
    S = schema()
    top = int(values.max()) if values.size else 0
    for kind, table, dtype in ((S.SparseIndexVector.Uint8Vector, S.Uint8VectorT, np.uint8),
                               (S.SparseIndexVector.Uint16Vector, S.Uint16VectorT, np.uint16),
                               (S.SparseIndexVector.Int32Vector, S.Int32VectorT, np.int32)):
        if top <= np.iinfo(dtype).max:
            return kind, table(values=values.astype(dtype)), np.dtype(dtype).name
    raise ValueError(f"sparse index {top} does not fit int32")


def sparsity_parameters(csr: CsrWeights) -> tuple[Any, dict[str, Any]]:
    """``SparsityParametersT`` for ``csr`` and facts about it (index dtypes, bytes)."""
    S = schema()
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
        if md.format == schema().DimensionType.DENSE:
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


class Graph:
    """Subgraph 0 of a model with what the checks need: op names, producers, consumers, constants."""

    def __init__(self, model: Any):
        self.model = model
        self.sg = model.subgraphs[0]
        self.ops = list(self.sg.operators or [])
        self.tensors = list(self.sg.tensors or [])
        names = op_names()
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

