"""models/nets_mobile.py: MobileNetV3-Small and EfficientNet-B0 (shapes, parameter counts, the 32x32
variants), their zoo entries, and squeeze-excite consistency under channel pruning (widths, arch.json
rebuild, fit's channel groups)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgebench.models import arch, fit, nets_mobile, recipes, zoo


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


EX32 = torch.zeros(1, 3, 32, 32)
SMALL = {  # the digits variants, as the zoo builds them
    "mobilenetv3_small": {"num_classes": 10, "width_mult": 0.5, "small_input": True},
    "efficientnet_b0": {"num_classes": 10, "width_mult": 0.25, "small_input": True},
}


def _trained_looking(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = getattr(nets_mobile, name)(**SMALL[name])
    for bn in m.modules():  # distinct BN scales, so rankings have no ties
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.2, 1.5)
    return m.eval()


def _se_blocks(m: nn.Module) -> list[tuple[str, nets_mobile.SqueezeExcite, nn.Conv2d]]:
    """(name, SE module, the depthwise conv of its block) for every SE block."""
    out = []
    for name, se in m.named_modules():
        if isinstance(se, nets_mobile.SqueezeExcite):
            block = m.get_submodule(name.rsplit(".", 1)[0])
            (dw,) = [l for l in block.modules() if isinstance(l, nn.Conv2d) and l.groups > 1]
            out.append((name, se, dw))
    return out


# -- architectures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,se_blocks,acts", [
    ("mobilenetv3_small", 2_542_856, 9, (nn.Hardswish, nn.Hardsigmoid, nn.ReLU)),
    ("efficientnet_b0", 5_288_548, 16, (nn.SiLU, nn.Sigmoid)),
])
def test_full_width_matches_the_papers_layout(name, params, se_blocks, acts):
    # torchvision's parameter counts for the same layouts (mobilenet_v3_small, efficientnet_b0)
    m = getattr(nets_mobile, name)().eval()
    assert sum(p.numel() for p in m.parameters()) == params
    assert len(_se_blocks(m)) == se_blocks
    kinds = {type(l) for l in m.modules()}
    assert all(a in kinds for a in acts)
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_input_keeps_a_4x4_map_at_32(name):
    factory = getattr(nets_mobile, name)
    with torch.no_grad():
        assert factory(**SMALL[name]).eval().features(EX32).shape[-2:] == (4, 4)
        assert factory(10, 0.5).eval().features(EX32).shape[-2:] == (1, 1)  # ImageNet strides: 32x downsampling


def test_width_and_depth_multipliers():
    full, half = nets_mobile.efficientnet_b0(), nets_mobile.efficientnet_b0(depth_mult=0.5)
    blocks = lambda m: sum(isinstance(l, nets_mobile.MBConv) for l in m.modules())  # noqa: E731
    assert blocks(full) == 16 and blocks(half) == 1 + 1 + 1 + 2 + 2 + 2 + 1  # ceil(n * 0.5) per stage
    m = nets_mobile.mobilenetv3_small(width_mult=0.5)
    assert all(l.out_channels % 8 == 0 for l in m.modules() if isinstance(l, nn.Conv2d) and l.groups > 1)


def test_zoo_entries():
    for name in ("mobilenetv3_small_32", "efficientnet_b0_32"):
        e = zoo.entry(name)
        assert (e.dataset, e.input_size) == ("digits", 32) and e.train_epochs > 0
        assert arch.build_module(e.arch())(EX32).shape == (1, 10)
    for name in ("mobilenetv3_small_224", "efficientnet_b0_224"):
        e = zoo.entry(name)
        assert (e.dataset, e.input_size, e.train_epochs, e.kwargs) == ("synthetic", 224, 0, {"num_classes": 1000})
    assert zoo.entry("efficientnet_b0_32").kwargs == {"num_classes": 10, **SMALL["efficientnet_b0"]}


# -- squeeze-excite under channel pruning -----------------------------------------------------------------

def _no_finetune() -> recipes.PruneContext:
    return recipes.PruneContext(finetune=lambda m, **kw: m, example=EX32, batches=lambda n: iter(()))


@pytest.mark.parametrize("name", list(SMALL))
def test_channel_pruning_keeps_se_consistent_and_rebuilds(name):
    m = _trained_looking(name)
    before = {n: (se.reduce.out_channels, dw.out_channels) for n, se, dw in _se_blocks(m)}
    recipes.apply(recipes.load("channel-l2-50"), m, _no_finetune())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = m(x)
    assert out.shape == (2, 10)
    blocks = _se_blocks(m)
    assert len(blocks) == len(before)
    for n, se, dw in blocks:
        c = dw.out_channels
        assert se.reduce.in_channels == c == se.expand.out_channels, n
        assert se.reduce.out_channels == se.expand.in_channels, n
        assert c < before[n][1] and se.reduce.out_channels <= before[n][0], n  # both the block and the bottleneck shrank
    # arch.json's rebuild: factory + kwargs + resized widths, then the pruned state_dict loads
    rebuilt = arch.build_module({"factory": f"edgebench.models.nets_mobile:{name}", "kwargs": SMALL[name],
                                 "resized": arch.resized_layers(m, getattr(nets_mobile, name)(**SMALL[name]))})
    rebuilt.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), out)


@pytest.mark.parametrize("name", list(SMALL))
def test_fit_groups_cover_se_layers(name):
    m = _trained_looking(name)
    groups = fit.channel_groups(m, EX32)
    owner = {l: g for g in groups for l in g.layers}
    for n, se, dw in _se_blocks(m):
        # the bottleneck is a group of its own; the gate's expand conv moves with the block's channels
        assert owner[f"{n}.reduce"].layers == [f"{n}.reduce"] and owner[f"{n}.reduce"].width == se.reduce.out_channels
        dw_name = next(k for k, v in m.named_modules() if v is dw)
        assert owner[f"{n}.expand"] is owner[dw_name] and owner[dw_name].width == dw.out_channels
    names = {id(v): k for k, v in m.named_modules()}
    assert names[id(m.classifier[-1])] not in owner  # the classifier keeps its outputs
    # every conv is in exactly one group
    layers = [l for g in groups for l in g.layers]
    assert len(layers) == len(set(layers))
    assert {k for k, v in m.named_modules() if isinstance(v, nn.Conv2d)} <= set(layers)
