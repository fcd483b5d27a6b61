"""LiteRT backend (backends/litert.py): conversion fp32/fp16/int8, XNNPACK delegation evidence, batch
resizing, the int8 input path, clear failures. Real conversions of the trained small_cnn."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import yaml

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")

from edgebench.backends import base  # noqa: E402
from edgebench.backends.litert import delegation  # noqa: E402
from edgebench.bench.worker import evaluate  # noqa: E402
from edgebench.models import recipes  # noqa: E402
from edgebench.models.cache import Cache  # noqa: E402
from edgebench.bench.prepare import Preparer  # noqa: E402


@pytest.fixture(scope="module")
def litert_artifacts(built):
    """fp32, fp16 and int8 .tflite of the trained dense small_cnn, built through the Preparer (cached)."""
    prep = Preparer(Cache(built.cache_root), log=lambda _: None)
    dense = recipes.load("dense")
    entries = {p: prep.artifact("small_cnn", dense, "litert", p) for p in ("fp32", "fp16", "int8")}
    return {p: (e.dir / e.manifest["facts"]["artifact"], e.manifest["facts"]) for p, e in entries.items()}


def test_available_with_version():
    a = base.get("litert").availability()
    assert a.available and "ai-edge-litert" in a.version


def test_missing_interpreter_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    a = base.get("litert").availability()
    assert not a.available and "pip install 'edgebench[litert]'" in a.reason


def test_missing_converter_names_the_host_extra(monkeypatch, built, tmp_path):
    from edgebench.models import zoo

    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(RuntimeError, match=r"edgebench\[litert-convert\]"):
        base.get("litert").export(zoo.PreparedModel(built.module(), {}), np.zeros((1, 3, 32, 32), np.float32), "fp32", tmp_path)


@pytest.mark.parametrize("batch", [1, 8])
def test_fp32_matches_pytorch_and_is_fully_delegated(built, litert_artifacts, batch):
    import torch

    path, facts = litert_artifacts["fp32"]
    assert facts["export_check"]["reference"] == "pytorch" and facts["export_check"]["ok"]
    inputs = built.eval_data()["inputs"][:batch]
    session = base.get("litert").load(path, "fp32", {"threads": 1, "batch": batch})
    with torch.inference_mode():
        want = built.module()(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(session.run(np.ascontiguousarray(inputs)), want, atol=1e-4, rtol=0)
    info = session.evidence()
    assert info.delegation.delegate == "XNNPACK" and info.delegation.partitions >= 1
    assert info.delegation.undelegated == [] and info.delegation.delegated_ops == info.delegation.total_ops > 0
    assert (info.input_layout, info.input_dtype, info.input_shape, info.details["input_quantization"]) == ("NHWC", "float32", [batch, 32, 32, 3], [0.0, 0])
    assert info.threads == 1


def test_int8_is_integer_and_within_one_point_of_fp32(built, litert_artifacts):
    path, facts = litert_artifacts["int8"]
    check = facts["export_check"]
    assert check["reference"] == "litert fp32" and check["n"] == 360
    assert abs(check["delta_pts"]) <= 1.0 and check["ok"] and check["agreement"] >= 0.97
    assert facts["quantization"]["weights"] == "int8 symmetric per-channel" and facts["quantization"]["calibration_images"] == 128
    session = base.get("litert").load(path, "int8", {"threads": 1, "batch": 32})
    info = session.evidence()
    assert info.input_dtype == "int8" and info.details["input_quantization"][0] > 0
    assert info.delegation.undelegated == []
    # the worker's path: prepare once (NHWC, quantised), run prepared; the output stays int8
    d = built.eval_data()
    prepared = session.prepare_input(np.ascontiguousarray(d["inputs"][:32]))
    assert prepared.dtype == np.int8 and prepared.shape == (32, 32, 32, 3)
    assert session.run_prepared(prepared).dtype == np.int8
    logits = evaluate(session, d["inputs"], 32)
    assert np.mean(logits.argmax(1) == d["labels"]) == pytest.approx(check["top1"])
    assert path.stat().st_size < 0.5 * litert_artifacts["fp32"][0].stat().st_size


def test_fp16_stores_half_weights(litert_artifacts):
    path, facts = litert_artifacts["fp16"]
    assert facts["tflite_ops"].get("DEQUANTIZE", 0) >= 4  # every conv/fc weight goes through one
    assert facts["export_check"]["agreement"] >= 0.99
    assert path.stat().st_size < 0.65 * litert_artifacts["fp32"][0].stat().st_size


def test_without_xnnpack_runs_builtin_kernels(litert_artifacts, built):
    path, _ = litert_artifacts["fp32"]
    session = base.get("litert").load(path, "fp32", {"threads": 1, "xnnpack": False})
    info = session.evidence()
    assert info.delegation.partitions == 0 and info.delegation.delegate.startswith("none")
    x = np.ascontiguousarray(built.eval_data()["inputs"][:1])
    fast = base.get("litert").load(path, "fp32", {"threads": 1})
    np.testing.assert_allclose(session.run(x), fast.run(x), atol=1e-4)


def _op(index, name, inputs, outputs):
    return {"index": index, "op_name": name, "inputs": np.array(inputs), "outputs": np.array(outputs)}


def test_delegation_counts_ops_left_outside_the_partition():
    # 0: CONV(t0)->t1, 1: CUSTOM(t1)->t2 (not delegated), 2: CONV(t2)->t3, 3: FC(t3)->t4;
    # the delegate took nodes 2 and 3 (inputs t2 and weights; output t4).
    ops = [_op(0, "CONV_2D", [0, 10], [1]), _op(1, "CUSTOM", [1], [2]), _op(2, "CONV_2D", [2, 11], [3]),
           _op(3, "FULLY_CONNECTED", [3, 12, -1], [4]), _op(4, "DELEGATE", [2, 11, 12], [4])]
    d = delegation(ops)
    assert d == {"partitions": 1, "total_ops": 4, "delegated_ops": 2, "undelegated_ops": ["CONV_2D", "CUSTOM"]}
    assert delegation([o for o in ops if o["op_name"] != "DELEGATE"])["delegated_ops"] == 0


def test_report_warns_about_undelegated_ops():
    from edgebench.bench.contracts.evidence import Delegation
    from edgebench.reports.tables import _delegation_warning

    text = _delegation_warning(Delegation("XNNPACK", total_ops=4, delegated_ops=3, partitions=1, undelegated=["CUSTOM"])).text
    assert text.startswith("ops not delegated: 1 op(s)") and "CUSTOM" in text
    assert _delegation_warning(Delegation("XNNPACK", total_ops=4, delegated_ops=4, partitions=1, undelegated=[])) is None


def test_torchscript_is_refused_with_the_fix(tmp_path):
    import torch

    from edgebench.models import zoo

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()))
    with pytest.raises(ValueError, match="give factory and weights"):
        base.get("litert").export(zoo.PreparedModel(scripted, {}), np.zeros((1, 3, 8, 8), np.float32), "fp32", tmp_path)


UNCONVERTIBLE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class DataDependent(nn.Module):
        """Branches on a tensor's value: torch.export (and so litert-torch) cannot trace it."""

        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            if y.sum() > 0:
                y = y * 2
            return self.fc(y)

    def build(num_classes=10):
        return DataDependent(num_classes)
''')


def test_converter_failure_fails_its_cells_not_the_run(tmp_path, monkeypatch):
    from edgebench.backends import litert
    from edgebench.bench.config import load_suite
    from edgebench.bench.runner import Paths, Runner
    from edgebench.bench.store import Store

    (tmp_path / "unconvertible_net.py").write_text(UNCONVERTIBLE)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "unconvertible", "recipes": ["dense"], "backends": ["torch", {"name": "litert", "precisions": ["fp32", "int8"]}],
        "models": [{"name": "branchy", "factory": "unconvertible_net:build", "train_epochs": 0}], "batch_sizes": [1],
        "measure": {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05}, "cell_timeout_s": 120,
    }))
    attempts = []
    real = litert._convert_fp32
    monkeypatch.setattr(litert, "_convert_fp32", lambda *a: (attempts.append(1), real(*a)))
    paths = Paths(home=tmp_path / "home")
    log: list[str] = []
    summary = Runner(paths, log=log.append).run(load_suite(suite))
    assert (summary.cells_ok, summary.cells_failed) == (1, 2)
    cells = {c.cell_key: c for c in Store(paths.store_location).cells(summary.run_id)}
    for precision in ("fp32", "int8"):
        error = cells[f"branchy/dense/litert/{precision}/b1/local"].error
        assert "litert-torch could not convert the model" in error and "\n" not in error
    assert cells["branchy/dense/torch/fp32/b1/local"].status == "ok"
    assert len(attempts) == 1  # the int8 cell needs the fp32 artifact: its failure is remembered, not retried


def test_sparse_option_stores_1x1_weights_sparse_and_says_the_path_is_not_exercised_on_x86(built, tmp_path):
    """A MobileNet-like stem with 80%-zero 1x1 convs: rules checked, DENSIFY written, outputs unchanged."""
    import platform

    import torch
    import torch.nn as nn

    from edgebench.backends.base import Calibration
    from edgebench.models import zoo

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
                m.weight[torch.rand_like(m.weight) < 0.8] = 0
    x = built.eval_data()["inputs"][:1]
    backend = base.get("litert")
    art = backend.export(zoo.PreparedModel(net, {}), x, "fp32", tmp_path, Calibration(x), {"sparse": True})
    sparse = art.facts["sparse"]
    assert sparse["applied"] and sparse["rules"]["eligible"], sparse["rules"]
    assert sparse["verified"]["ok"] and sparse["verified"]["densified_equal"]
    assert art.facts["tflite_ops"]["DENSIFY"] == 2
    session = backend.load(art.path, "fp32", {"threads": 1})
    with torch.inference_mode():
        np.testing.assert_allclose(session.run(np.ascontiguousarray(x)), net(torch.from_numpy(x)).numpy(), atol=1e-4)
    info = session.evidence()
    assert info.sparse_weights == 2 and info.sparse_kernels is False
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert info.sparse_path.startswith("sparse path not exercised on this CPU")


def test_int8_residual_adds_stay_integer(tmp_path):
    """A residual block with one ReLU module used twice (as torchvision's ResNet does): every add is
    quantised, so the .tflite has no QUANTIZE/DEQUANTIZE islands between int8 ops."""
    import torch
    import torch.nn as nn

    from edgebench.backends.base import Calibration
    from edgebench.models import zoo

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.stem(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)) + x)
            return self.fc(out.mean((2, 3)))

    torch.manual_seed(0)
    images = np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)
    art = base.get("litert").export(zoo.PreparedModel(Block().eval(), {}), images[:1], "int8", tmp_path, Calibration(images))
    assert art.facts["quantization"]["residual_adds_quantized"] == 1
    ops = art.facts["tflite_ops"]
    assert ops.get("ADD") == 1 and "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
