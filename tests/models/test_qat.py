"""models/qat.py: the QAT loop on a PT2E-prepared small_cnn (torchao's x86 QAT quantiser): seeded and
deterministic, it really trains weights and fake-quant scales, freezes observers and BN statistics
for its last epoch, and keeps a pruned model's zeros."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from edgebench.models import data as datasets  # noqa: E402
from edgebench.models import qat  # noqa: E402

TRAIN_IMAGES = 64  # 1 step an epoch at batch 64: the loop, not the accuracy, is under test (kept lean: 2 cores)


@pytest.fixture(scope="module")
def tiny() -> datasets.Dataset:
    data = datasets.digits(32)
    return dataclasses.replace(data, x_train=data.x_train[:TRAIN_IMAGES], y_train=data.y_train[:TRAIN_IMAGES])


def _prepared(module):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    example = torch.zeros(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},)).module()
    return prepare_qat_pt2e(graph, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True)))


def _fake_quants(module):
    return [m for m in module.modules() if hasattr(m, "scale") and hasattr(m, "observer_enabled")]


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def runs(built, tiny):
    """The same QAT twice from the same dense weights, and the weights it started from."""
    start = _prepared(built.module())
    before = _state(start)
    out = []
    for _ in range(2):
        prepared = _prepared(built.module())
        report = qat.finetune(prepared, tiny, epochs=2, lr=0.01, seed=3)
        out.append((prepared, report))
    return before, out


def test_qat_is_deterministic_for_a_seed(runs):
    _, ((a, ra), (b, rb)) = runs
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert ra.facts() == rb.facts()


def test_qat_trains_weights_and_scales_then_freezes_them(runs, tiny):
    before, ((prepared, report), _) = runs
    after = _state(prepared)
    weights = [k for k in before if k.endswith("weight") and before[k].dim() >= 2]
    assert weights and all(not torch.equal(before[k], after[k]) for k in weights)  # every conv/linear weight moved
    scales = [k for k in before if k.endswith(".scale")]
    assert scales and all(not torch.equal(before[k], after[k]) for k in scales)  # every scale was learned
    # torchao's QAT recipe: observers and BN statistics frozen for the last epoch
    steps_per_epoch = TRAIN_IMAGES // 64
    assert report.steps == 2 * steps_per_epoch and report.frozen_from_step == steps_per_epoch
    assert all(int(fq.observer_enabled[0]) == 0 for fq in _fake_quants(prepared))
    assert report.facts()["epochs"] == 2 and report.facts()["seed"] == 3
    # frozen means frozen: one more training step moves no scale
    prepared.train()  # allow_exported_model_train_eval was applied by finetune
    qat.freeze(prepared)
    loss = torch.nn.functional.cross_entropy(prepared(torch.from_numpy(tiny.x_train[:64])), torch.from_numpy(tiny.y_train[:64]))
    loss.backward()
    assert all(torch.equal(after[k], prepared.state_dict()[k]) for k in scales)


def test_pruned_zeros_stay_zero_and_one_epoch_never_freezes(built, tiny):
    module = built.module()
    with torch.no_grad():  # half of every conv's weights zeroed, as unstructured pruning leaves them
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                w = m.weight
                w.mul_(w.abs() > w.abs().flatten().median())
    prepared = _prepared(module)
    zeros = {k: v == 0 for k, v in prepared.named_parameters() if v.dim() == 4}
    report = qat.finetune(prepared, tiny, epochs=1, lr=0.05)
    params = dict(prepared.named_parameters())
    assert zeros and all(bool((params[k][mask] == 0).all()) for k, mask in zeros.items())
    assert report.masked_tensors == len(zeros) and report.masked_zeros == sum(int(m.sum()) for m in zeros.values())
    assert all(bool((params[k][~mask] != 0).any()) for k, mask in zeros.items())
    assert report.frozen_from_step is None and report.steps == TRAIN_IMAGES // 64
    assert all(int(fq.observer_enabled[0]) == 1 for fq in _fake_quants(prepared))
