"""The ONNX sparsity checker (backends/_onnx_checks.py): hand-built graphs for each weight layout, and
real torch.onnx exports (BatchNorm folded) of a 2:4-pruned and of a dense conv net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgebench.backends import _onnx_checks as sparsity_check
from edgebench.models import pruning, recipes

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


# -- hand-built graphs -----------------------------------------------------------------------------------

def nm_along_last(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random weights, 2:4 along the last axis, and *not* 2:4 along any other axis."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    groups = w.reshape(-1, 4)
    groups[:, [0, 1]] = 0.0  # the first two of every 4 consecutive along the last axis
    return groups.reshape(shape)


def save(tmp_path, nodes, inits, inputs, outputs, name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_layouts_gemm_matmul_conv(tmp_path):
    w_out_in = nm_along_last((8, 16), 0)  # [out, in], 2:4 along in
    inits = {
        "gemm_t": w_out_in,  # Gemm transB=1: [out, in] -> ok
        "gemm_n": np.ascontiguousarray(w_out_in.T),  # Gemm transB=0: [in, out] -> ok (same weights)
        "gemm_bad": w_out_in,  # Gemm transB=0 with [out, in] data: groups run along the wrong axis
        "mm": np.ascontiguousarray(w_out_in.T),  # MatMul x @ W, W [in, out] -> ok
        "mm_t": w_out_in,  # MatMul x @ Transpose(W), W [out, in] -> ok
        "conv": np.transpose(nm_along_last((4, 3, 3, 16), 1), (0, 3, 1, 2)).copy(),  # [out, in, kh, kw], 2:4 along in
        "conv_kw": nm_along_last((4, 16, 3, 4), 2),  # 2:4 along kw only -> violates along in
        "dw": np.ones((16, 1, 3, 3), np.float32),
        "odd": np.ones((4, 6), np.float32),  # Gemm transB=1 with in=6
    }
    nodes = [
        helper.make_node("Gemm", ["x", "gemm_t"], ["y1"], transB=1, name="gemm_t"),
        helper.make_node("Gemm", ["x", "gemm_n"], ["y2"], transB=0, name="gemm_n"),
        helper.make_node("Gemm", ["x8", "gemm_bad"], ["y3"], transB=0, name="gemm_bad"),
        helper.make_node("MatMul", ["x", "mm"], ["y4"], name="mm"),
        helper.make_node("Transpose", ["mm_t"], ["mm_tt"], perm=[1, 0], name="tr"),
        helper.make_node("MatMul", ["x", "mm_tt"], ["y5"], name="mm_t"),
        helper.make_node("Conv", ["img", "conv"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Conv", ["img4", "conv_kw"], ["c2"], pads=[1, 1, 1, 1], name="conv_kw"),
        helper.make_node("Conv", ["img", "dw"], ["c3"], group=16, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Gemm", ["x6", "odd"], ["y6"], transB=1, name="odd"),
        helper.make_node("MatMul", ["x", "x_t"], ["y7"], name="act_matmul"),  # no constant operand: skipped
    ]
    inputs = [vi("x", [2, 16]), vi("x8", [2, 8]), vi("img", [1, 16, 5, 5]), vi("img4", [1, 16, 5, 4]), vi("x6", [2, 6]), vi("x_t", [16, 3])]
    outputs = [vi(n, None) for n in ["y1", "y2", "y3", "y4", "y5", "c1", "c2", "c3", "y6", "y7"]]
    path = save(tmp_path, nodes, inits, inputs, outputs)

    report = sparsity_check.check_2_4_onnx(path)
    by = {l.node: l for l in report.layers}
    assert set(by) == {"gemm_t", "gemm_n", "gemm_bad", "mm", "mm_t", "conv", "conv_kw", "dw", "odd"}
    for ok in ("gemm_t", "gemm_n", "mm", "mm_t", "conv"):
        assert by[ok].eligible and by[ok].pattern_ok and by[ok].violating_groups == 0, ok
    assert by["mm_t"].weight == "mm_t"  # the Transpose was followed back to the initializer
    assert by["gemm_t"].groups == 8 * 16 // 4 and by["conv"].groups == 4 * 3 * 3 * 16 // 4
    for bad in ("gemm_bad", "conv_kw"):
        assert by[bad].eligible and not by[bad].pattern_ok and by[bad].violating_groups > 0, bad
    assert not by["dw"].eligible and "depthwise" in by["dw"].reason and by["dw"].pattern_ok is None
    assert not by["odd"].eligible and "not divisible by 4" in by["odd"].reason
    assert not report.ok
    assert report.violations == by["gemm_bad"].violating_groups + by["conv_kw"].violating_groups
    assert "2 layer(s) violate it" in report.summary()
    d = report.to_dict()
    assert d["ok"] is False and len(d["layers"]) == 9

    sp = sparsity_check.weight_sparsity_onnx(path)
    assert sp["gemm_t"] == pytest.approx(0.5) and sp["dw"] == 0.0


def test_no_eligible_layer_is_not_ok(tmp_path):
    path = save(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="g")], {"w": np.zeros((2, 3), np.float32)},
                [vi("x", [1, 3])], [vi("y", None)])
    report = sparsity_check.check_2_4_onnx(path)
    assert not report.ok and report.summary().endswith("0 violating group(s)") and "no eligible layer" in report.summary()


# -- real exports ------------------------------------------------------------------------------------------

class ConvNet(nn.Module):
    """Conv-BN stages (folded by the exporter), a depthwise conv and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),  # in=3: ineligible
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),  # depthwise
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = ConvNet()
    for bn in m.modules():  # non-trivial BN so folding really rescales the conv weights
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.5, 2.0)
            bn.running_var.uniform_(0.3, 3.0)
            bn.running_mean.uniform_(-1, 1)
    return m.eval()


def export(module, path, external_data):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True, external_data=external_data)
    finally:
        torch.set_num_threads(old)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    pytest.importorskip("onnxscript")
    d = tmp_path_factory.mktemp("onnx")
    pruned = convnet(0)
    ctx = recipes.PruneContext(finetune=lambda m, **kw: m, example=torch.zeros(1, 3, 16, 16), batches=lambda n: iter(()))
    recipes.apply(recipes.load("semi-structured-2-4").model_copy(update={"finetune": recipes.FineTune(epochs=0)}), pruned, ctx)
    return {
        "pruned": pruned,
        "pruned_path": export(pruned, d / "pruned.onnx", external_data=False),
        "dense_path": export(convnet(0), d / "dense.onnx", external_data=True),
    }


def test_real_2_4_export_passes_after_bn_folding(exports):
    path, module = exports["pruned_path"], exports["pruned"]
    model = onnx.load(str(path))
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded into the convs
    report = sparsity_check.check_2_4_onnx(path)
    assert report.ok, report.summary()
    assert [l.op for l in report.layers] == ["Conv", "Conv", "Conv", "Conv", "Gemm"]
    eligible = report.eligible
    assert len(eligible) == 3 and all(l.groups > 0 and l.violating_groups == 0 for l in eligible)
    reasons = [l.reason for l in report.ineligible]
    assert any("not divisible by 4" in r for r in reasons) and any("depthwise" in r for r in reasons)
    # folding scaled the weights per output channel, and zeros stayed exactly where pruning put them
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    torch_convs = [l for l in module.modules() if isinstance(l, nn.Conv2d)]
    onnx_convs = [inits[l.weight] for l in report.layers if l.op == "Conv"]
    for tw, ow in zip(torch_convs, onnx_convs):
        tw = tw.weight.detach().numpy()
        assert ow.shape == tw.shape
        assert not np.allclose(ow, tw)
        assert np.array_equal(ow == 0, tw == 0)
    # the same verdict as the PyTorch-side report for every layer
    torch_report = pruning.semi_structured_report(module)
    assert [v["eligible"] for v in torch_report.values()] == [l.eligible for l in report.layers]
    sp = sparsity_check.weight_sparsity_onnx(path)
    assert sp[report.layers[2].weight] == pytest.approx(0.5)


def test_real_dense_export_fails_with_violations_and_reads_external_data(exports):
    path = exports["dense_path"]
    assert path.with_name(path.name + ".data").exists()  # weights live in external data
    report = sparsity_check.check_2_4_onnx(path)
    assert not report.ok
    assert len(report.eligible) == 3 and all(not l.pattern_ok and l.violating_groups == l.groups for l in report.eligible)
    assert report.violations == sum(l.groups for l in report.eligible)
    assert all(s == 0.0 for name, s in sparsity_check.weight_sparsity_onnx(path).items() if name.endswith("weight"))


def test_q_dq_weights_are_checked_through_dequantize_linear_with_their_zero_points(tmp_path):
    """An int8 Q/DQ model (onnxruntime's and TensorRT's explicit quantisation) feeds each weight through
    DequantizeLinear: the pattern is read from the stored integers minus the zero point."""
    w = nm_along_last((8, 16), 3)  # [out, in], 2:4 along in
    q_sym = np.round(w * 50).astype(np.int8)  # symmetric: zero point 0, zeros stay 0
    zp = np.arange(1, 9, dtype=np.int8)  # per-output-channel zero points: a real zero is stored as zp
    q_asym = (q_sym.astype(np.int16) + zp[:, None]).astype(np.int8)
    inits = {"q_sym": q_sym, "s": np.full(8, 0.02, np.float32), "z0": np.zeros(8, np.int8), "q_asym": q_asym, "z": zp,
             "q_dense": np.ones((8, 16), np.int8)}
    nodes = [
        helper.make_node("DequantizeLinear", ["q_sym", "s", "z0"], ["w_sym"], axis=0),
        helper.make_node("Gemm", ["x", "w_sym"], ["y1"], transB=1, name="sym"),
        helper.make_node("DequantizeLinear", ["q_asym", "s", "z"], ["w_asym"], axis=0),
        helper.make_node("Gemm", ["x", "w_asym"], ["y2"], transB=1, name="asym"),
        helper.make_node("DequantizeLinear", ["q_dense", "s", "z0"], ["w_dense"], axis=0),
        helper.make_node("Gemm", ["x", "w_dense"], ["y3"], transB=1, name="dense"),
    ]
    path = save(tmp_path, nodes, inits, [vi("x", [1, 16])], [vi("y1", [1, 8]), vi("y2", [1, 8]), vi("y3", [1, 8])])
    rows = {r.node: r for r in sparsity_check.check_2_4_onnx(path).layers}
    assert rows["sym"].pattern_ok and rows["sym"].weight == "q_sym"
    assert rows["asym"].pattern_ok  # without the zero point every stored value would be non-zero
    assert rows["dense"].eligible and not rows["dense"].pattern_ok
