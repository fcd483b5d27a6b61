"""backends/_litert_sparsity.py, _xnnpack_sparse_rules.py and _tflite_flatbuffer.py on real
litert-torch exports: a MobileNet-like net with 80% zero 1x1 weights (eligible), the same net with a
MaxPool inside, with a 5x5 stride-1 stem, with a ``mean((2, 3))`` head (which the converter turns
into TRANSPOSE + MEAN), and with only 50% zero 1x1 weights; each converted once per module."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from edgebench.backends import _litert_sparsity as ts  # noqa: E402
from edgebench.backends._tflite_flatbuffer import decode_sparse, encode_csr, sparsity_parameters  # noqa: E402
from edgebench.backends._xnnpack_sparse_rules import check_sparse_rules  # noqa: E402

ZERO_SHARE = 0.8  # of every 1x1 conv weight
KINDS = ("ok", "maxpool", "conv5", "transpose", "half")


class Net(nn.Module):
    """stem conv, 1x1, depthwise 3x3 stride 2, 1x1, depthwise 3x3, 1x1, global average pool, linear."""

    def __init__(self, kind: str = "ok"):
        super().__init__()
        first = (nn.Conv2d(3, 16, 5, stride=1, padding=2) if kind == "conv5"
                 else nn.Conv2d(3, 16, 3, stride=2, padding=1))
        layers: list[nn.Module] = [first, nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU()]
        if kind == "maxpool":
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
                   nn.Conv2d(32, 64, 1), nn.ReLU6(),
                   nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU(),
                   nn.Conv2d(64, 96, 1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.kind = kind
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # mean over NCHW's (2, 3) converts to TRANSPOSE + MEAN; the pool converts to a spatial MEAN.
        x = x.mean((2, 3)) if self.kind == "transpose" else self.pool(x).flatten(1)
        return self.fc(x)


def pointwise(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]


def build(kind: str) -> nn.Module:
    """The net for ``kind``; "half" is the eligible architecture with only half its 1x1 weights zero."""
    torch.manual_seed(0)
    model = Net(kind).eval()
    gen = torch.Generator().manual_seed(1)
    share = 0.5 if kind == "half" else ZERO_SHARE
    with torch.no_grad():
        for conv in pointwise(model):
            conv.weight[torch.rand(conv.weight.shape, generator=gen) < share] = 0.0
    return model


@contextmanager
def quiet():
    """Silence the converter's progress lines and absl logs, which write to fds 1 and 2 directly."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()  # what Python buffered goes to /dev/null too
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def convert(model: nn.Module, path: Path) -> Path:
    import litert_torch

    with quiet():
        wrapped = litert_torch.to_channel_last_io(model, args=[0]).eval()
        litert_torch.convert(wrapped, (torch.randn(1, 32, 32, 3),)).export(str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite-sparsity")
    return {kind: convert(build(kind), root / f"{kind}.tflite") for kind in KINDS}


@pytest.fixture(scope="module")
def sparsified(exported) -> tuple[ts.SparsifyReport, Path]:
    dst = exported["ok"].with_name("ok.sparse.tflite")
    return ts.sparsify_tflite(exported["ok"], dst), dst


def model_t(path: Path):
    from ai_edge_litert import schema_py_generated as S

    return S.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def weight(model, t: int) -> np.ndarray:
    tensor = model.subgraphs[0].tensors[t]
    return np.frombuffer(model.buffers[tensor.buffer].data.tobytes(), np.float32).reshape(tensor.shape)


# -- the rules -------------------------------------------------------------------------------------


def test_eligible_mobilenet_like(exported):
    report = check_sparse_rules(exported["ok"])
    assert report.eligible, report.reasons
    assert report.reasons == []
    ops = {c.index: c for c in report.ops}
    assert ops[report.start_op].op == "CONV_2D" and ops[report.start_op].role == "start"
    assert report.end_kind == "MEAN" and report.ends_with_mean
    # The FULLY_CONNECTED head is not allowed, but it is outside the span and does not count.
    head = [c for c in report.ops if c.op == "FULLY_CONNECTED"]
    assert head and not head[0].allowed and not head[0].in_span
    # litert-torch writes the stride-2 convs as PAD + VALID conv; the PADs fold into the convs.
    assert any(c.op == "PAD" and c.role == "folded pad" and c.in_span for c in report.ops)
    # The 1x1 zero shares are the torch model's, weighted by weight count.
    convs = pointwise(build("ok"))
    expected = sorted(float((c.weight == 0).float().mean()) for c in convs)
    assert sorted(c.zero_fraction for c in report.ops if c.role == "1x1") == pytest.approx(expected)
    zeros = sum(int((c.weight == 0).sum()) for c in convs)
    assert report.weights_1x1 == sum(c.weight.numel() for c in convs) and report.zeros_1x1 == zeros
    assert report.zero_fraction_1x1 > 2 / 3
    json.dumps(report.to_dict())
    assert "eligible" in report.summary()


def test_maxpool_inside_is_named(exported):
    report = check_sparse_rules(exported["maxpool"])
    assert not report.eligible
    pool = next(c for c in report.ops if c.op == "MAX_POOL_2D")
    assert pool.in_span and not pool.allowed
    assert len(report.reasons) == 1 and f"op {pool.index} (MAX_POOL_2D)" in report.reasons[0]


def test_5x5_stride_1_stem_is_not_a_start(exported):
    report = check_sparse_rules(exported["conv5"])
    assert not report.eligible and report.start_op is None
    assert "no qualifying start conv" in report.reasons[0]
    assert "kernel 5x5" in report.reasons[0] and "stride 1x1" in report.reasons[0]


def test_transpose_before_mean_is_named(exported):
    report = check_sparse_rules(exported["transpose"])
    assert not report.eligible and report.end_op is None
    assert "no spatial MEAN" in report.reasons[0] and "(TRANSPOSE)" in report.reasons[0]


def test_too_few_zeros(exported):
    report = check_sparse_rules(exported["half"])
    assert not report.eligible and report.start_op is not None and report.end_kind == "MEAN"
    assert 0.4 < report.zero_fraction_1x1 < 0.6
    assert len(report.reasons) == 1 and "XNNPACK needs more than 66.7%" in report.reasons[0]


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model\.tflite: not a TFLite flatbuffer.*re-export"):
        check_sparse_rules(bad)


# -- the rewrite -----------------------------------------------------------------------------------


def test_sparsify_layout(exported, sparsified):
    from ai_edge_litert import schema_py_generated as S

    report, dst = sparsified
    src_model, dst_model = model_t(exported["ok"]), model_t(dst)
    sg = dst_model.subgraphs[0]
    codes = [max(c.deprecatedBuiltinCode, c.builtinCode) for c in dst_model.operatorCodes]
    densify = [op for op in sg.operators if codes[op.opcodeIndex] == S.BuiltinOperator.DENSIFY]
    assert len(densify) == len(report.layers) == 3
    assert list(sg.operators[:3]) == densify  # inserted first
    assert report.encoder in ("tflite", "numpy") and report.skipped == []
    for op, layer in zip(densify, report.layers):
        sparse_t, dense_t = int(op.inputs[0]), int(op.outputs[0])
        dense = weight(src_model, dense_t)  # tensor indices are unchanged; new tensors are appended
        nonzero = dense[dense != 0]  # row-major order, as TFLite stores CSR values
        sparse = sg.tensors[sparse_t]
        values = np.frombuffer(dst_model.buffers[sparse.buffer].data.tobytes(), np.float32)
        assert np.array_equal(values, nonzero)
        assert layer.nonzeros == nonzero.size and layer.shape == list(dense.shape)
        assert layer.zero_fraction == pytest.approx(1 - nonzero.size / dense.size)
        # The dense tensor lost its bytes; DENSIFY computes it.
        assert dst_model.buffers[sg.tensors[dense_t].buffer].data is None
        assert list(sparse.shape) == list(dense.shape)
        sp = sparse.sparsity
        assert list(sp.traversalOrder) == [0, 1, 2, 3] and not sp.blockMap
        formats = [m.format for m in sp.dimMetadata]
        assert formats == [S.DimensionType.DENSE] * 3 + [S.DimensionType.SPARSE_CSR]
        assert [m.denseSize for m in sp.dimMetadata[:3]] == list(dense.shape[:3])
        assert np.array_equal(decode_sparse(list(dense.shape), sp, values), dense)
    assert report.file_bytes_after == dst.stat().st_size < report.file_bytes_before == exported["ok"].stat().st_size
    assert report.sparse_bytes < report.dense_bytes


def test_runtime_reads_the_sparse_format(exported, sparsified):
    """The interpreter's parsed sparsity (segments, indices) is plain CSR over the last axis."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    report, dst = sparsified
    it = Interpreter(model_path=str(dst),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    parsed = [d for d in it.get_tensor_details() if d.get("sparsity_parameters")]
    src_model = model_t(exported["ok"])
    dst_sg = model_t(dst).subgraphs[0]
    assert len(parsed) == 3
    for d in parsed:
        densify = next(op for op in dst_sg.operators if int(op.inputs[0]) == d["index"])
        rows = weight(src_model, int(densify.outputs[0])).reshape(-1, d["shape"][-1])
        csr = d["sparsity_parameters"]["dim_metadata"][3]
        assert np.array_equal(csr["array_segments"], np.concatenate([[0], np.cumsum((rows != 0).sum(1))]))
        assert np.array_equal(csr["array_indices"], np.nonzero(rows)[1])


def test_sparsified_model_matches_original(exported, sparsified):
    _, dst = sparsified
    v = ts.verify_sparsified(exported["ok"], dst, atol=1e-5)
    assert v.ok, v.problems
    assert v.max_abs_diff_xnnpack <= 1e-5 and v.max_abs_diff_reference <= 1e-5
    assert v.densified_equal  # the reference DENSIFY kernel rebuilds the dense weights exactly
    assert len(v.densify_ops) == 3 and v.densify_delegated == v.densify_ops  # XNNPACK takes them
    assert v.conv_delegated == v.conv_ops
    # Still eligible, with the same zero share, read through DENSIFY.
    before, after = check_sparse_rules(exported["ok"]), check_sparse_rules(dst)
    assert after.eligible and after.zeros_1x1 == before.zeros_1x1 and after.weights_1x1 == before.weights_1x1


def test_min_zero_fraction_leaves_layers_dense(exported, tmp_path):
    report = ts.sparsify_tflite(exported["ok"], tmp_path / "none.tflite", min_zero_fraction=0.95)
    assert report.layers == [] and len(report.skipped) == 3
    assert all("< min_zero_fraction" in s["reason"] for s in report.skipped)
    assert ts.verify_sparsified(exported["ok"], tmp_path / "none.tflite").ok


# -- the encoder -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, keep", [((7, 1, 1, 9), 0.2), ((3, 2, 2, 4), 1.0), ((300, 1, 1, 300), 0.9)])
def test_encoders_agree_and_round_trip(shape, keep):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(shape) * (rng.random(shape) < keep)).astype(np.float32)
    w[0] = 0.0  # an empty row
    a, b = encode_csr(w, "tflite"), encode_csr(w, "numpy")
    for name in ("values", "segments", "indices"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    params, facts = sparsity_parameters(a)
    assert np.array_equal(decode_sparse(list(shape), params, a.values), w)
    if shape[0] == 300:  # ~81k non-zeros: segments need int32, indices (< 300) uint16
        assert (facts["segments_dtype"], facts["indices_dtype"]) == ("int32", "uint16")
