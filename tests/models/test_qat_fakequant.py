"""models/qat.py's two preparation fixes: consistent_fake_quant (QAT trains on the weight grid that
convert_pt2e writes, checked at 4 bits where the shipped fused fake-quant is 7% off) and
split_shared_module_calls (a residual block that applies one ReLU module twice prepares for QAT)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from torch import nn  # noqa: E402

from edgebench.models import qat  # noqa: E402


class _Block(nn.Module):
    """conv-bn-relu, conv-bn, + identity, the same relu again: ResNet's BasicBlock in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.head(self.relu(self.bn2(self.conv2(out)) + x))


def _graph(module: nn.Module) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(module.eval(), (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},)).module()


def _x86_config(bits: int):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import get_default_x86_inductor_quantization_config

    config = get_default_x86_inductor_quantization_config(is_qat=True)
    weight = dataclasses.replace(config.weight, quant_min=-(2 ** (bits - 1)), quant_max=2 ** (bits - 1) - 1)
    return dataclasses.replace(config, weight=weight)


def _prepared(config) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    torch.manual_seed(0)
    graph = _graph(_Block())
    qat.split_shared_module_calls(graph)
    return prepare_qat_pt2e(graph, X86InductorQuantizer().set_global(config))


def test_consistent_config_swaps_only_the_symmetric_fused_fake_quants():
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize

    shipped = _x86_config(8)
    fixed = qat.consistent_fake_quant(shipped)
    assert fixed.weight.observer_or_fake_quant_ctr.p.func is FakeQuantize
    assert fixed.weight.observer_or_fake_quant_ctr.p.keywords == shipped.weight.observer_or_fake_quant_ctr.p.keywords
    assert (fixed.weight.quant_min, fixed.weight.quant_max, fixed.weight.qscheme) == (-128, 127, torch.per_channel_symmetric)
    assert fixed.input_activation == shipped.input_activation  # affine: the fused module agrees with its observer
    assert fixed.input_activation.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize
    assert fixed.is_qat and qat.consistent_fake_quant(fixed) == fixed


def test_litert_qat_config_gets_the_same_fix():
    pytest.importorskip("litert_torch")
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize

    shipped = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    fixed = qat.consistent_fake_quant(shipped)
    assert type(fixed) is type(shipped)
    assert fixed.weight.observer_or_fake_quant_ctr.p.func is FakeQuantize
    assert (fixed.weight.quant_min, fixed.weight.quant_max) == (-127, 127)
    assert fixed.input_activation == shipped.input_activation


def test_qat_graph_computes_what_convert_writes_at_4_bits():
    """The fake-quant graph QAT trains and the converted graph give the same logits (observers
    stopped, BN on running statistics): the weights learn the grid they are deployed on."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = _prepared(qat.consistent_fake_quant(_x86_config(4)))
    allow_exported_model_train_eval(prepared)
    torch.manual_seed(1)
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        prepared.train()
        prepared(x)  # observers see data, BN statistics move
        prepared.apply(disable_observer)
        move_exported_model_to_eval(prepared)
        trained_on = prepared(x)
        deployed = convert_pt2e(prepared)(x)
    assert torch.allclose(trained_on, deployed, atol=1e-4), float((trained_on - deployed).abs().max())


def test_shared_relu_calls_are_split_and_the_block_prepares():
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    graph = _graph(_Block())
    assert qat.split_shared_module_calls(graph) == ["relu"]
    names = [list(n.meta["nn_module_stack"].values())[-1][0] for n in graph.graph.nodes
             if n.op == "call_function" and n.meta.get("nn_module_stack") and "relu" in str(n.target)]
    assert sorted(names) == ["relu.call0", "relu.call1", "stem.2"]
    assert qat.split_shared_module_calls(graph) == []  # idempotent: nothing shared is left
    prepared = prepare_qat_pt2e(graph, X86InductorQuantizer().set_global(_x86_config(8)))
    assert any("activation_post_process" in n.name for n in prepared.graph.nodes)
