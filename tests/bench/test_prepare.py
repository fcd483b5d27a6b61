"""The host pipeline (bench/prepare.py): the session's real build, and a rebuild that is all cache hits."""

from __future__ import annotations

import pytest

from edgebench.bench.prepare import Preparer
from edgebench.models import recipes
from edgebench.models.cache import Cache


def snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_session_build_trained_and_exported(built):
    c = built.counters
    assert (c.trained, c.pruned, c.exported, c.cache_hits) == (1, 0, 2, 0)
    assert built.ort_path.name == "model.onnx" and built.ort_path.stat().st_size > 0
    assert built.torch_path.name == "model.pt" and (built.torch_path.parent / "arch.json").exists()
    assert built.dense_facts["top1_torch"] > 0.9
    assert built.dense_facts["weight_sparsity"] < 0.01
    assert built.dense_facts["nonzero_params"] <= built.dense_facts["params"]
    assert built.dense_facts["params"] == sum(p.numel() for p in built.module().parameters())
    for facts, path in ((built.ort_facts, built.ort_path), (built.torch_facts, built.torch_path)):
        check = facts["export_check"]
        assert check["ok"] is True and check["max_abs_diff"] < 1e-4 and check["n"] == 360
        assert facts["size_bytes"] == sum((path.parent / f).stat().st_size for f in facts["files"])
    assert built.torch_facts["files"] == ["model.pt", "arch.json"]
    assert any("trained" in line for line in built.log)


def test_second_preparer_rebuilds_nothing(built, restore_torch_threads):
    before = snapshot(built.cache_root)
    log: list[str] = []
    prep = Preparer(Cache(built.cache_root), log=log.append)
    dense = recipes.load("dense")
    ort = prep.artifact("small_cnn", dense, "onnxruntime", "fp32")
    tor = prep.artifact("small_cnn", dense, "torch", "fp32")
    c = prep.counters
    assert (c.trained, c.pruned, c.exported) == (0, 0, 0)
    assert c.cache_hits == 3  # the dense model once, each artifact once
    assert ort.hit and tor.hit
    assert ort.dir / "model.onnx" == built.ort_path
    assert all("cached" in line for line in log)
    assert snapshot(built.cache_root) == before


def test_steps_run_once_per_preparer(built):
    prep = Preparer(Cache(built.cache_root), log=lambda m: None)
    a = prep.dense("small_cnn")
    b = prep.dense("small_cnn")
    assert a is b
    assert prep.pruned("small_cnn", recipes.load("dense")) is a  # the dense recipe is the dense model
    assert prep.counters.cache_hits == 1


def test_unknown_model_is_a_clear_error(built):
    prep = Preparer(Cache(built.cache_root), log=lambda m: None)
    with pytest.raises(KeyError, match="small_cnn"):
        prep.dense("no_such_model")


def test_checking_a_torch_artifact_gives_torch_its_threads_back():
    # The torch backend's load sets torch's global thread count (1 for a check); left there, every later
    # training in the host process ran on 1 thread and the same cache key held different bits.
    import torch

    from edgebench.bench.artifact_checks import host_threads_kept

    before = torch.get_num_threads()
    with host_threads_kept():
        torch.set_num_threads(1 if before != 1 else 2)
    assert torch.get_num_threads() == before
