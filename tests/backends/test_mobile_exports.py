"""The squeeze-excite models (models/nets_mobile.py) export to every backend: torch, ONNX Runtime fp32
and int8, LiteRT fp32 and int8, dense and channel-pruned, each artifact checked by the Preparer
(fp32 against PyTorch, int8 against the backend's fp32 artifact).

One dense model per architecture, trained on the zoo's schedule (module-scoped cache: a 1-epoch model
predicts one class in eval mode, which would make the int8 agreement checks vacuous), so the dense
top-1 is checked too; the pruned one fine-tunes as the built-in recipe does. LiteRT's XNNPACK delegate
takes every op except hard-swish in int8 (the known gap below); ONNX Runtime's int8 runs its convs as
QLinearConv.
"""

from __future__ import annotations

import pytest

from edgebench.backends import base
from edgebench.bench.prepare import Preparer
from edgebench.models import recipes
from edgebench.models.cache import Cache

pytestmark = pytest.mark.slow

MODELS = ("mobilenetv3_small_32", "efficientnet_b0_32")
CELLS = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("litert", "fp32"), ("litert", "int8")]


# The built-in recipe with its 5-epoch fine-tune: after 1 epoch the pruned MobileNetV3 is at 45% top-1
# and its int8 cells miss the 1-point check for that reason alone.
RECIPES = {"dense": recipes.load("dense"), "channel": recipes.load("channel-l2-50")}
# XNNPACK (ai-edge-litert 2.3) has no int8 HARD_SWISH: each of MobileNetV3's 19 runs on TFLite's
# reference kernel between XNNPACK partitions (the cell's report flags it). Everything else is delegated.
UNDELEGATED = {("mobilenetv3_small_32", "int8"): {"HARD_SWISH"}}


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    """One Preparer (and cache) for every cell: each model trains once."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Preparer(Cache(tmp_path_factory.mktemp("mobile-cache")), log=lambda _: None)
    torch.set_num_threads(threads)


def _needs(backend: str) -> None:
    a = base.get(backend).availability()
    if not a.available:
        pytest.skip(f"{backend}: {a.reason}")
    if backend == "litert":
        pytest.importorskip("litert_torch")


@pytest.mark.parametrize("backend,precision", CELLS)
@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("model", MODELS)
def test_exports_and_checks(prep, model, recipe, backend, precision):
    _needs(backend)
    entry = prep.artifact(model, RECIPES[recipe], backend, precision)
    facts = entry.manifest["facts"]
    check = facts["export_check"]
    assert check["ok"], check
    if precision == "int8":
        assert check["reference"] == f"{backend} fp32" and check["agreement"] >= 0.9, check
    else:
        assert check["reference"] == "pytorch", check
    if backend == "onnxruntime" and precision == "int8":
        ops = facts["optimized_ops"]
        assert ops.get("QLinearConv", 0) >= 10 and "Conv" not in ops, ops  # every conv runs as an int8 kernel
    if backend == "litert":
        session = base.get("litert").load(entry.dir / facts["artifact"], precision, {"threads": 1, "batch": 1})
        delegation = session.evidence().delegation
        assert delegation.delegate == "XNNPACK" and set(delegation.undelegated) == UNDELEGATED.get((model, precision), set()), delegation
    if recipe == "dense" and backend == "torch":
        assert prep.dense(model).manifest["facts"]["top1_torch"] >= 0.95  # trainable at 32x32 on digits
    if recipe == "channel":
        pruned = prep.pruned(model, RECIPES[recipe]).manifest["facts"]
        assert pruned["params"] < 0.6 * prep.dense(model).manifest["facts"]["params"]
