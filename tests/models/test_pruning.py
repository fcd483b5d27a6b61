"""Pruning algorithms (models/pruning.py) through the recipe methods: each method's invariants on tiny
models with random data (schedules, exact sparsity, 2:4 pattern, channel pruning on residual and
depthwise blocks, network slimming)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from edgebench.bench.contracts.errors import ConfigError
from edgebench.models import pruning, recipes, zoo


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


# -- tiny models ---------------------------------------------------------------------------------------

class Block(nn.Module):
    """Basic residual block with an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        assert y.shape == x.shape, "residual add with mismatched shapes"
        return torch.relu(x + y)


class Inverted(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project, identity add."""

    def __init__(self, c: int, expand: int = 2) -> None:
        super().__init__()
        h = c * expand
        self.pw, self.b1 = nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h)
        self.dw, self.b2 = nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h)
        self.pj, self.b3 = nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b3(self.pj(torch.relu(self.b2(self.dw(torch.relu(self.b1(self.pw(x))))))))
        assert y.shape == x.shape, "residual add with mismatched shapes"
        return x + y


class ResNet(nn.Module):
    def __init__(self, depthwise: bool = False, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(Block(c), Inverted(c) if depthwise else Block(c))
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def resnet(depthwise: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = ResNet(depthwise)
    for bn in m.modules():  # trained-looking BN scales: distinct, so rankings have no ties
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.2, 1.5)
    return m.eval()


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.small_cnn(num_classes=10).eval()


EXAMPLE = torch.zeros(1, 3, 16, 16)


def random_batches(n: int, size: int = 16):
    gen = torch.Generator().manual_seed(n)
    for _ in range(n):
        yield torch.randn(8, 3, size, size, generator=gen), torch.randint(0, 10, (8,), generator=gen)


class FakeTrainer:
    """A PruneContext fine-tune that really trains (SGD on random data, ``3 * epochs`` steps), calls the
    hooks like models/train.py does, and records every call."""

    def __init__(self, size: int = 16, steps_per_epoch: int = 3, default_epochs: int = 1, on_call=None) -> None:
        self.calls: list[dict] = []
        self.size, self.steps_per_epoch, self.default_epochs = size, steps_per_epoch, default_epochs
        self.on_call = on_call

    def __call__(self, module, epochs=None, lr=None, before_step=None, after_step=None):
        self.calls.append({"epochs": epochs, "lr": lr, "before_step": before_step, "after_step": after_step})
        if self.on_call is not None:
            self.on_call(module)
        epochs = self.default_epochs if epochs is None else epochs
        gen = torch.Generator().manual_seed(len(self.calls))
        opt = torch.optim.SGD(module.parameters(), lr=lr or 0.05, momentum=0.9)
        module.train()
        for _ in range(epochs * self.steps_per_epoch):
            x = torch.randn(8, 3, self.size, self.size, generator=gen)
            y = torch.randint(0, 10, (8,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            if before_step is not None:
                before_step(module)
            opt.step()
            if after_step is not None:
                after_step()
        module.eval()
        return module

    def ctx(self, example=EXAMPLE) -> recipes.PruneContext:
        size = example.shape[-1]
        return recipes.PruneContext(finetune=self, example=example, batches=lambda n: random_batches(n, size))


def no_finetune_ctx(example=EXAMPLE) -> recipes.PruneContext:
    size = example.shape[-1]
    return recipes.PruneContext(finetune=lambda m, **kw: m, example=example, batches=lambda n: random_batches(n, size))


def recipe(method: str, params: dict, schedule: dict | None = None, epochs: int = 0) -> recipes.Recipe:
    data = {"name": "t", "method": method, "params": params, "finetune": {"epochs": epochs}}
    if schedule is not None:
        data["schedule"] = schedule
    return recipes.parse(data, "<test>")


def conv_linear(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def assert_clean(module: nn.Module) -> None:
    """No pruning re-parametrisation left: plain weights, no hooks."""
    for name, layer in conv_linear(module):
        assert not prune.is_pruned(layer), name
        assert isinstance(layer.weight, nn.Parameter) and len(layer._forward_pre_hooks) == 0, name
    assert not any(k.endswith(("_orig", "_mask")) for k in module.state_dict())


# -- schedules -------------------------------------------------------------------------------------------

def test_agp_values_hand_computed():
    # s_t = 0.9 * (1 - (1 - t/4)^3): 0.9 * (1 - 27/64), 0.9 * (1 - 1/8), 0.9 * (1 - 1/64), 0.9
    assert pruning.agp_sparsities(0.9, 4) == pytest.approx([0.5203125, 0.7875, 0.8859375, 0.9])
    # with a starting sparsity: s_t = 0.8 + (0.2 - 0.8) (1 - t/2)^3 -> 0.8 - 0.6/8, 0.8
    assert pruning.agp_sparsities(0.8, 2, initial=0.2) == pytest.approx([0.725, 0.8])
    assert pruning.agp_sparsities(0.5, 1) == [0.5]
    s = pruning.agp_sparsities(0.95, 10)
    assert s == sorted(s) and s[-1] == pytest.approx(0.95)
    # increments shrink: AGP prunes fast while there is redundancy, then slowly
    inc = [b - a for a, b in zip([0.0, *s], s)]
    assert inc == sorted(inc, reverse=True)


def test_schedule_targets():
    assert pruning.schedule_targets(0.6, None) == [0.6]
    assert pruning.schedule_targets(0.6, recipes.Schedule()) == [0.6]
    assert pruning.schedule_targets(0.6, recipes.Schedule(kind="iterative", steps=3)) == pytest.approx([0.2, 0.4, 0.6])
    assert pruning.schedule_targets(0.9, recipes.Schedule(kind="agp", steps=4)) == pytest.approx([0.5203125, 0.7875, 0.8859375, 0.9])


# -- unstructured magnitude under schedules --------------------------------------------------------------

def weights_of(module):
    return [l.weight.detach() for _, l in conv_linear(module)]


@pytest.mark.parametrize("kind", ["iterative", "agp"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_schedule_hits_each_target_then_final(kind, scope):
    final, steps = 0.8, 3
    targets = pruning.schedule_targets(final, recipes.Schedule(kind=kind, steps=steps))
    seen = []  # (per-layer zero masks, per-layer sizes) at every fine-tune call

    def record(module):
        ws = [pruning._current_weight(l) for _, l in conv_linear(module)]
        seen.append([w == 0 for w in ws])

    trainer = FakeTrainer(size=32, on_call=record)
    m = small_cnn(3)
    out = recipes.apply(recipe("magnitude_unstructured", {"sparsity": final, "scope": scope},
                               {"kind": kind, "steps": steps, "epochs_per_step": 2}, epochs=1), m, trainer.ctx(torch.zeros(1, 3, 32, 32)))
    assert out is m
    # fine-tune between steps with epochs_per_step, then the recipe's fine-tune (epochs left to the context)
    assert [c["epochs"] for c in trainer.calls] == [2] * (steps - 1) + [None]
    assert len(seen) == steps
    sizes = [w.numel() for w in weights_of(m)]
    for zeros, target in zip(seen, targets):  # the sparsity during each fine-tune is that step's target
        if scope == "global":
            assert abs(sum(int(z.sum()) for z in zeros) - target * sum(sizes)) <= 1
        else:
            for z, n in zip(zeros, sizes):
                assert abs(int(z.sum()) - target * n) <= 1
    for before, after in zip(seen, seen[1:]):  # a pruned weight stays pruned
        for a, b in zip(before, after):
            assert bool(b[a].all())
    final_w = weights_of(m)
    if scope == "global":
        assert abs(sum(int((w == 0).sum()) for w in final_w) - final * sum(sizes)) <= 1
        per_layer = [float((w == 0).float().mean()) for w in final_w]
        assert max(per_layer) - min(per_layer) > 0.05  # global: layers differ
    else:
        for w in final_w:
            assert abs(int((w == 0).sum()) - final * w.numel()) <= 1
    # the zeros after the last step are exactly those of the last fine-tune's mask (fine-tune kept them)
    for z, w in zip(seen[-1], final_w):
        assert torch.equal(z, w == 0)
    assert_clean(m)
    assert pruning.prune_report(m)["targets"] == pytest.approx(targets)


def test_magnitude_one_shot_exact_and_layer_reports():
    m = small_cnn(4)
    recipes.apply(recipe("magnitude_unstructured", {"sparsity": 0.37, "scope": "layer"}), m, no_finetune_ctx())
    rep = pruning.prune_report(m)
    for (name, layer) in conv_linear(m):
        n = layer.weight.numel()
        assert int((layer.weight == 0).sum()) == round(0.37 * n)
        assert rep["layers"][name]["sparsity"] == pytest.approx(round(0.37 * n) / n)
    total = sum(l.weight.numel() for _, l in conv_linear(m))
    assert rep["sparsity"] == pytest.approx(sum(round(0.37 * l.weight.numel()) for _, l in conv_linear(m)) / total)
    json.dumps(rep)  # JSON-serialisable, for manifests


def test_l1_masks_prune_smallest_current_weights():
    a = nn.Linear(4, 2, bias=False)
    b = nn.Linear(2, 2, bias=False)
    a.weight.data = torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.2, 4.0, 0.0, 1.0]])
    b.weight.data = torch.tensor([[3.0, -0.05], [0.4, 6.0]])
    ma, mb = pruning.l1_masks([a, b], 0.5, "global")
    # the 6 smallest of 12 |w|: 0.0, 0.05, 0.1, 0.2, 0.3, 0.4
    assert ma.tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]
    assert mb.tolist() == [[1, 0], [0, 1]]
    ma, mb = pruning.l1_masks([a, b], 0.5, "layer")
    assert int(ma.sum()) == 4 and int(mb.sum()) == 2


# -- 2:4 semi-structured --------------------------------------------------------------------------------

def test_nm_mask_groups_along_input_channels():
    # Conv weight [out=1, in=4, kh=1, kw=2]: at kw=0 the in-channels hold 1, 2, 3, 4; at kw=1 4, 3, 2, 1.
    w = torch.tensor([[[[1.0, 4.0]], [[2.0, 3.0]], [[3.0, 2.0]], [[4.0, 1.0]]]])
    mask = pruning.nm_mask(w)
    assert mask[0, :, 0, 0].tolist() == [0, 0, 1, 1]
    assert mask[0, :, 0, 1].tolist() == [1, 1, 0, 0]
    # grouping along kw instead would keep different weights: this is the [out, kh, kw, in] layout
    lin = torch.tensor([[0.5, -3.0, 2.0, 0.1, 9.0, -8.0, 7.0, 6.0]])
    assert pruning.nm_mask(lin).tolist() == [[0, 1, 1, 0, 1, 1, 0, 0]]
    assert pruning.nm_violations(lin) == (2, 2)
    assert pruning.nm_violations(lin * pruning.nm_mask(lin)) == (0, 2)


class MixedNet(nn.Module):
    """Eligible and ineligible layers: 3-channel stem, depthwise conv, grouped conv, odd Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # in=3: ineligible
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: ineligible
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=2)  # in/groups=4: eligible
        self.conv = nn.Conv2d(16, 12, 1)  # eligible
        self.fc1 = nn.Linear(12, 6)  # eligible
        self.fc2 = nn.Linear(6, 10)  # in=6: ineligible

    def forward(self, x):
        x = torch.relu(self.conv(torch.relu(self.grouped(torch.relu(self.dw(torch.relu(self.stem(x))))))))
        return self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))


def test_semi_structured_pattern_report_and_finetune():
    torch.manual_seed(0)
    m = MixedNet().eval()
    before = {n: l.weight.detach().clone() for n, l in conv_linear(m)}
    masks_during = {}

    def record(module):
        for n, l in conv_linear(module):
            if prune.is_pruned(l):
                masks_during[n] = l.weight_mask.clone()

    trainer = FakeTrainer(on_call=record)
    recipes.apply(recipes.load("semi-structured-2-4"), m, trainer.ctx())
    assert len(trainer.calls) == 1
    report = pruning.prune_report(m)
    assert sorted(report["eligible"]) == ["conv", "fc1", "grouped"]
    assert set(report["ineligible"]) == {"stem", "dw", "fc2"}
    assert "divisible by 4" in report["ineligible"]["stem"] and "divisible by 4" in report["ineligible"]["fc2"]
    assert "depthwise" in report["ineligible"]["dw"]
    assert set(masks_during) == {"conv", "fc1", "grouped"}
    for name, layer in conv_linear(m):
        w = layer.weight.detach()
        if name in masks_during:
            # every group of 4 consecutive input-channel weights has at most 2 non-zeros: exactly 2 kept
            grouped = (pruning._to_groups_layout(w) != 0).reshape(-1, 4).sum(1)
            assert int(grouped.max()) <= 2
            assert float((w == 0).float().mean()) == pytest.approx(0.5)
            assert torch.equal(w == 0, masks_during[name] == 0)  # the mask held through fine-tuning
            assert not torch.allclose(w[w != 0], before[name][w != 0])  # and training moved the kept ones
            assert report["layers"][name]["pattern_ok"] and report["layers"][name]["violating_groups"] == 0
        else:
            assert int((w == 0).sum()) == 0  # ineligible layers stay dense
    assert_clean(m)
    json.dumps(report)


def test_semi_structured_keeps_the_two_largest():
    m = small_cnn(5)
    before = {n: l.weight.detach().clone() for n, l in conv_linear(m)}
    recipes.apply(recipe("semi_structured_2_4", {}), m, no_finetune_ctx())
    for name, layer in conv_linear(m):
        if name == "features.0.0":  # in_channels 3
            continue
        w = pruning._to_groups_layout(layer.weight.detach()).reshape(-1, 4)
        b = pruning._to_groups_layout(before[name]).reshape(-1, 4)
        kept = torch.where(w != 0, b.abs(), torch.full_like(b, float("inf"))).min(1).values
        dropped = torch.where(w == 0, b.abs(), torch.full_like(b, -1.0)).max(1).values
        assert bool((dropped <= kept).all())
        assert torch.equal(w[w != 0], b[w != 0])  # no fine-tune: kept weights untouched
    assert pruning.semi_structured_report(m)["features.0.0"]["eligible"] is False


def test_semi_structured_rejects_schedules():
    with pytest.raises(ConfigError, match=r"^<test>: schedule\.kind: method 'semi_structured_2_4' does not support schedule kind agp"):
        recipe("semi_structured_2_4", {}, {"kind": "agp", "steps": 4})
    r = recipe("semi_structured_2_4", {})
    bad = r.model_copy(update={"schedule": recipes.Schedule(kind="iterative", steps=2)})
    with pytest.raises(ValueError, match="does not support schedule kind iterative"):
        recipes.apply(bad, small_cnn(), no_finetune_ctx())


# -- structured channel pruning --------------------------------------------------------------------------

def macs_params(m, example=EXAMPLE):
    import torch_pruning as tp

    return tp.utils.count_ops_and_params(m, example)


def assert_block_consistency(m: ResNet) -> None:
    c = m.stem[0].out_channels
    assert m.stem[1].num_features == c
    for blk in m.blocks:
        if isinstance(blk, Block):
            assert blk.c1.in_channels == c and blk.c2.out_channels == c and blk.b2.num_features == c
            assert blk.c1.out_channels == blk.b1.num_features == blk.c2.in_channels
        else:
            h = blk.pw.out_channels
            assert blk.pw.in_channels == c and blk.pj.out_channels == c and blk.b3.num_features == c
            assert blk.dw.in_channels == blk.dw.out_channels == blk.dw.groups == h == blk.b2.num_features == blk.pj.in_channels
    assert m.fc.in_features == c and m.fc.out_features == 10


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "taylor"])
@pytest.mark.parametrize("depthwise", [False, True])
def test_channel_pruning_residual_and_depthwise(importance, depthwise):
    m = resnet(depthwise)
    x = torch.randn(2, 3, 16, 16)
    macs0, params0 = macs_params(m)
    widths0 = pruning.widths(m)
    out = recipes.apply(recipe("channel", {"ratio": 0.5, "importance": importance}), m, no_finetune_ctx())
    assert out is m
    assert m(x).shape == (2, 10)  # the residual adds assert matching shapes inside forward
    assert_block_consistency(m)
    macs1, params1 = macs_params(m)
    assert params1 < 0.5 * params0 and macs1 < 0.5 * macs0
    # per-layer ratio 0.5: every pruned conv keeps exactly half its channels; the classifier keeps 10 outputs
    for name, w in pruning.widths(m).items():
        assert w == (10 if name == "fc" else widths0[name] // 2), name
    rep = pruning.prune_report(m)
    assert (rep["params_before"], rep["params_after"]) == (params0, params1)
    assert (rep["macs_before"], rep["macs_after"]) == (macs0, macs1)


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_channel_magnitude_removes_the_weak_channels(importance):
    m = small_cnn(6)
    weak = [1, 5, 9, 14]  # channels of the first stage made negligible in every layer they touch
    with torch.no_grad():
        m.features[0][0].weight[weak] *= 1e-3
        m.features[0][1].weight[weak] *= 1e-3
        m.features[1][0].weight[:, weak] *= 1e-3
    strong = m.features[0][0].weight.detach()[[i for i in range(16) if i not in weak]].clone()
    recipes.apply(recipe("channel", {"ratio": 0.25, "importance": importance}), m, no_finetune_ctx(torch.zeros(1, 3, 32, 32)))
    assert m.features[0][0].out_channels == 12 and m.features[0][1].num_features == 12 and m.features[1][0].in_channels == 12
    assert torch.equal(m.features[0][0].weight.detach(), strong)  # exactly the weak ones went, order kept


def test_channel_agp_schedule_finetunes_between_steps():
    m = resnet(seed=1)
    widths_seen = []
    trainer = FakeTrainer(on_call=lambda mod: widths_seen.append(mod.stem[0].out_channels))
    recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "l2"}, {"kind": "agp", "steps": 3, "epochs_per_step": 1}, epochs=1), m, trainer.ctx())
    targets = pruning.agp_sparsities(0.5, 3)
    # widths after each step follow the schedule (of the original 16), the last call is the final fine-tune
    assert widths_seen == [int(16 * (1 - t)) for t in targets] == [10, 8, 8]
    assert [c["epochs"] for c in trainer.calls] == [1, 1, None]
    assert_block_consistency(m)
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_channel_global_and_round_to():
    m = resnet(seed=2)
    recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "l1", "global": True, "round_to": 4}), m, no_finetune_ctx())
    assert_block_consistency(m)
    w = pruning.widths(m)
    assert all(v % 4 == 0 for k, v in w.items() if k != "fc")
    assert sum(v for k, v in w.items() if k != "fc") < sum(pruning.widths(resnet(seed=2)).values()) - 10


def test_channel_pruned_model_reloads_from_arch(tmp_path):
    """What prepare.save_module writes (state_dict + resized widths) rebuilds the pruned model."""
    from edgebench.models.arch import build_module, resized_layers

    arch = {"factory": "edgebench.models.zoo:small_cnn", "kwargs": {"num_classes": 10}}
    m = build_module(arch).eval()
    recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "fpgm"}), m, no_finetune_ctx(torch.zeros(1, 3, 32, 32)))
    full = {**arch, "resized": resized_layers(m, build_module(arch))}
    assert set(full["resized"]) >= {"features.0.0", "features.0.1", "features.1.0", "fc"}
    again = build_module(json.loads(json.dumps(full))).eval()
    again.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(again(x), m(x))


def test_taylor_needs_batches():
    ctx = recipes.PruneContext(finetune=lambda m, **kw: m, example=EXAMPLE, batches=lambda n: iter(()))
    with pytest.raises(ValueError, match="taylor importance needs training batches"):
        recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "taylor"}), resnet(), ctx)


def test_classifier_from_context_is_kept():
    m = resnet()
    ctx = no_finetune_ctx()
    ctx.classifier = m.fc
    recipes.apply(recipe("channel", {"ratio": 0.5}), m, ctx)
    assert m.fc.out_features == 10


# -- network slimming ------------------------------------------------------------------------------------

def test_bn_l1_subgradient_adds_sign_times_l1():
    bn = nn.BatchNorm2d(3)
    bn.weight.data = torch.tensor([0.5, -0.2, 0.0])
    bn.weight.grad = torch.tensor([1.0, 1.0, 1.0])
    pruning.bn_l1_subgradient(0.1)(nn.Sequential(bn))
    assert bn.weight.grad.tolist() == pytest.approx([1.1, 0.9, 1.0])


def gamma_l1(m):
    return sum(float(b.weight.detach().abs().sum()) for b in m.modules() if isinstance(b, nn.BatchNorm2d))


def test_network_slimming_l1_drives_gammas_down_and_removes_channels():
    results = {}
    for l1 in (0.0, 0.05):
        m = resnet(depthwise=True, seed=3)
        trainer = FakeTrainer(steps_per_epoch=4)
        params0 = sum(p.numel() for p in m.parameters())
        recipes.apply(recipe("network_slimming", {"ratio": 0.5, "l1": l1, "epochs": 2}, epochs=1), m, trainer.ctx())
        rep = pruning.prune_report(m)
        # sparsity training (with the L1 hook), then the plain fine-tune
        assert [c["epochs"] for c in trainer.calls] == [2, None]
        assert trainer.calls[0]["before_step"] is not None and trainer.calls[1]["before_step"] is None
        assert sum(p.numel() for p in m.parameters()) < params0
        assert_block_consistency(m)
        assert m(torch.randn(1, 3, 16, 16)).shape == (1, 10)
        results[l1] = rep["bn_gamma_l1_after_sparsity_training"]
        assert rep["bn_gamma_l1_before"] == pytest.approx(gamma_l1(resnet(depthwise=True, seed=3)), rel=1e-5)
    # same seed and data: only the L1 term differs, and it shrinks the BN scales
    assert results[0.05] < results[0.0] - 0.05 * 12 * 0.5


def test_network_slimming_removes_smallest_gammas_per_layer():
    m = small_cnn(7)
    gen = torch.Generator().manual_seed(0)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data = torch.rand(bn.num_features, generator=gen) + 0.01
    gammas = [bn.weight.detach().clone() for bn in m.modules() if isinstance(bn, nn.BatchNorm2d)]
    recipes.apply(recipe("network_slimming", {"ratio": 0.5, "epochs": 0, "global": False}), m, no_finetune_ctx(torch.zeros(1, 3, 32, 32)))
    after = [bn.weight.detach() for bn in m.modules() if isinstance(bn, nn.BatchNorm2d)]
    for g0, g1 in zip(gammas, after):
        assert g1.numel() == g0.numel() // 2
        assert torch.equal(torch.sort(g1).values, torch.sort(g0).values[g0.numel() // 2:])


def test_network_slimming_global_keeps_a_collapsed_layer_alive():
    """A layer whose |gamma| all fall under the global threshold keeps its best 10% (torch-pruning
    alone would skip that group and keep all of it), and the global channel count is still met."""
    m = resnet(seed=4)
    m.blocks[0].b1.weight.data *= 1e-3  # block 0's inner channels collapsed during sparsity training
    recipes.apply(recipe("network_slimming", {"ratio": 0.5, "epochs": 0, "global": True}), m, no_finetune_ctx())
    assert m.blocks[0].c1.out_channels == math.ceil(0.1 * 16)
    # groups: stem+residual (16), block0 inner (16), block1 inner (16): 24 of 48 removed
    assert m.stem[0].out_channels + m.blocks[0].c1.out_channels + m.blocks[1].c1.out_channels == 24
    assert_block_consistency(m)


@pytest.mark.parametrize("method", ["network_slimming", "channel"])
def test_global_ranking_with_tied_scores_prunes_the_target_evenly(method):
    """An untrained model's BN scales are all 1: torch-pruning alone removes every channel tied with
    the global threshold (nearly all of them); ties are broken so exactly the target goes, evenly."""
    torch.manual_seed(0)
    m = ResNet().eval()  # BN weights all 1
    if method == "channel":  # equal filter norms too
        for _, layer in conv_linear(m):
            layer.weight.data = torch.ones_like(layer.weight)
    params = {"ratio": 0.5, "global": True, **({"epochs": 0} if method == "network_slimming" else {"importance": "l1"})}
    recipes.apply(recipe(method, params), m, no_finetune_ctx())
    assert (m.stem[0].out_channels, m.blocks[0].c1.out_channels, m.blocks[1].c1.out_channels) == (8, 8, 8)


def test_network_slimming_needs_batchnorm():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match="needs BatchNorm2d"):
        recipes.apply(recipe("network_slimming", {"ratio": 0.5, "epochs": 0}), m, no_finetune_ctx())


# -- every built-in recipe runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in recipes.builtin_names() if n != "dense"])
def test_builtin_recipe_applies_to_a_residual_net(name):
    r = recipes.load(name)
    m = resnet(depthwise=True, seed=5)
    params0 = sum(p.numel() for p in m.parameters())
    trainer = FakeTrainer(steps_per_epoch=1)
    ctx = trainer.ctx()
    init = {k: v.clone() for k, v in resnet(depthwise=True, seed=6).state_dict().items()}
    ctx.rewind = lambda epoch: init  # lottery tickets rewind to an earlier checkpoint of the dense training
    out = recipes.apply(r, m, ctx)
    assert out(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    assert_clean(out)
    rep = pruning.prune_report(out)
    assert rep is not None
    json.dumps(rep)
    if r.method in ("channel", "network_slimming"):
        assert sum(p.numel() for p in out.parameters()) < params0
    else:
        assert sum(int((l.weight == 0).sum()) for _, l in conv_linear(out)) > 0
