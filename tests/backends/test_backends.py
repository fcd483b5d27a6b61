"""Backends (backends/base.py, ort.py, torch_eager.py): the registry, availability, and the real artifacts."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from edgebench.backends import base


def test_registry_names():
    names = base.names()
    assert {"torch", "onnxruntime"} <= set(names)
    assert names == sorted(names)
    for name in names:
        b = base.get(name)
        assert isinstance(b, base.Backend) and b.name == name


def test_unknown_backend_lists_known():
    with pytest.raises(KeyError) as info:
        base.get("nope")
    msg = str(info.value)
    assert "'nope'" in msg and "onnxruntime" in msg and "torch" in msg


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_available_here(name):
    a = base.get(name).availability()
    assert a.available is True and a.version
    mod = {"torch": "torch", "onnxruntime": "onnxruntime"}[name]
    assert a.version == __import__(mod).__version__


@pytest.mark.parametrize("name,module,extra", [("onnxruntime", "onnxruntime", "onnxruntime"), ("torch", "torch", "prune")])
def test_runtime_that_cannot_be_imported_is_not_installed(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    a = base.get(name).availability()
    assert a.available is False
    assert "not installed" in a.reason
    assert f"pip install 'edgebench[{extra}]'" in a.reason


def test_unsupported_precision_is_explained():
    b = base.get("onnxruntime")
    assert b.unsupported("fp32") is None and b.unsupported("int8") is None
    reason = base.get("torch").unsupported("int8")
    assert reason is not None and "int8" in reason and "fp32" in reason


def _reference_logits(built, inputs):
    with torch.inference_mode():
        return built.module()(torch.from_numpy(inputs)).numpy()


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_onnxruntime_artifact_matches_pytorch(built, batch):
    inputs = built.eval_data()["inputs"][:batch]
    session = base.get("onnxruntime").load(built.ort_path, "fp32", {"threads": 1})
    got = session.run(np.ascontiguousarray(inputs))
    want = _reference_logits(built, inputs)
    assert got.shape == want.shape == (batch, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 32])
def test_torch_artifact_matches_pytorch(built, restore_torch_threads, batch):
    inputs = built.eval_data()["inputs"][:batch]
    session = base.get("torch").load(built.torch_path, "fp32", {"threads": 1})
    got = session.run(np.ascontiguousarray(inputs))
    want = _reference_logits(built, inputs)
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_artifacts_agree_with_stored_reference_logits(built, restore_torch_threads):
    """The eval.npz reference logits are the dense model's; both artifacts reproduce them."""
    d = built.eval_data()
    for name, path in (("onnxruntime", built.ort_path), ("torch", built.torch_path)):
        s = base.get(name).load(path, "fp32", {"threads": 1})
        got = np.concatenate([s.run(np.ascontiguousarray(d["inputs"][i:i + 64])) for i in range(0, 360, 64)])
        np.testing.assert_allclose(got, d["reference_logits"], atol=1e-4, rtol=0)


def test_onnxruntime_describe_reports_threads(built):
    session = base.get("onnxruntime").load(built.ort_path, "fp32", {"threads": 2})
    info = session.evidence()
    assert info.threads == 2
    assert info.providers == ["CPUExecutionProvider"]
    assert info.sparse_kernels is False
    assert base.get("onnxruntime").load(built.ort_path, "fp32", {"threads": 1}).evidence().threads == 1


def test_torch_describe_reports_threads(built, restore_torch_threads):
    for threads in (1, 2):
        info = base.get("torch").load(built.torch_path, "fp32", {"threads": threads}).evidence()
        assert info.threads == threads
        assert info.sparse_kernels is False


def test_torch_artifact_without_arch_file_fails_clearly(built, tmp_path, restore_torch_threads):
    lonely = tmp_path / "model.pt"
    lonely.write_bytes(built.torch_path.read_bytes())
    with pytest.raises(FileNotFoundError, match="arch.json"):
        base.get("torch").load(lonely, "fp32", {"threads": 1})


def test_artifact_size_counts_every_file(tmp_path):
    a, b = tmp_path / "model.onnx", tmp_path / "model.onnx.data"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 32)
    assert base.Artifact(path=a, files=[a, b]).size_bytes == 42
    assert base.Artifact(path=a).size_bytes == 10
