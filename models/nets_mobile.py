"""MobileNetV3-Small and EfficientNet-B0: the mobile architectures with squeeze-and-excitation.

Both are stacks of :class:`MBConv` blocks (1x1 expand, kxk depthwise, squeeze-excite, 1x1 project,
identity add when the shape allows), defined in-house as :mod:`edgebench.models.nets` is (there is no
CPU torchvision here) and laid out as torchvision lays them out, so the full-width models have
torchvision's parameter counts (2,542,856 and 5,288,548 at 1000 classes).

The squeeze-excite gate multiplies the block's channels by a per-channel scale computed from them:
torch-pruning's dependency graph couples the SE ``expand`` conv's outputs (and ``reduce``'s inputs)
with the depthwise conv's channels through that multiplication, so channel pruning shrinks all of
them together; the SE bottleneck (``reduce``'s outputs) is a group of its own.

Like :mod:`edgebench.models.nets` this module imports torch; the zoo names its factories as
``"edgebench.models.zoo:NAME"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgebench.models.nets import _make_divisible


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Hu et al. (2018): global average pool, 1x1 ``reduce`` to ``squeeze`` channels, activation,
    1x1 ``expand`` back, gate; the input is scaled channel-wise by the gate."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted residual with optional squeeze-excite (MobileNetV3's bneck, EfficientNet's MBConv).

    ``hidden == cin`` has no expand conv (MobileNetV3's first block, EfficientNet's MBConv1);
    ``se`` is ``(squeeze channels, SE activation, gate)`` or None.
    """

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, act: type[nn.Module],
                 se: tuple[int, type[nn.Module], type[nn.Module]] | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(_conv_bn(cin, hidden, 1, act=act))
        layers.append(_conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se is not None:
            layers.append(SqueezeExcite(hidden, *se))
        layers.append(_conv_bn(hidden, cout, 1))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small, Howard et al. (2019) "Searching for MobileNetV3", Table 2.

    Hard-swish in the later blocks and the head, ReLU in the first three; squeeze-excite with a
    hard-sigmoid gate and ``make_divisible(exp / 4)`` bottleneck. ``width_mult`` scales every width
    (rounded to multiples of 8, as the paper's multipliers); ``small_input`` keeps the stem and the
    first block at stride 1 for 32x32 images (a 4x4 map before pooling instead of 1x1).
    """

    # kernel, expansion size, output channels, SE, hard-swish (else ReLU), stride: Table 2's bnecks
    SETTINGS = [
        (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
        (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
    ]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, small_input: bool = False) -> None:
        super().__init__()
        cin = _make_divisible(16 * width_mult)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 1 if small_input else 2, act=nn.Hardswish)]
        for i, (k, exp, c, se, hs, s) in enumerate(self.SETTINGS):
            hidden, cout = _make_divisible(exp * width_mult), _make_divisible(c * width_mult)
            stride = 1 if small_input and i == 0 else s
            gate = (_make_divisible(hidden // 4), nn.ReLU, nn.Hardsigmoid) if se else None
            layers.append(MBConv(cin, hidden, cout, k, stride, nn.Hardswish if hs else nn.ReLU, gate))
            cin = cout
        last_conv, head = 6 * cin, _make_divisible(1024 * width_mult)
        layers.append(_conv_bn(cin, last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(last_conv, head), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class EfficientNet(nn.Module):
    """EfficientNet, Tan & Le (2019) "EfficientNet: Rethinking Model Scaling for CNNs"; Table 1 is B0.

    Compound scaling: ``width_mult`` scales channels (multiples of 8), ``depth_mult`` the repeats of
    every stage (rounded up); B0 is 1.0/1.0. SiLU (swish) everywhere; squeeze-excite with a sigmoid
    gate and a bottleneck of a quarter of the block's *input* channels. No stochastic depth (a
    training-time regulariser for long ImageNet schedules, identity at inference). ``small_input``
    keeps the stem and stage 3 at stride 1 for 32x32 images (a 4x4 map before pooling).
    """

    # expansion, kernel, stride, output channels, repeats: Table 1, stages 2-8
    SETTINGS = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, depth_mult: float = 1.0, small_input: bool = False,
                 dropout: float = 0.2) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 1 if small_input else 2, act=nn.SiLU)]
        for i, (t, k, s, c, n) in enumerate(self.SETTINGS):
            cout = _make_divisible(c * width_mult)
            stage: list[nn.Module] = []
            for j in range(math.ceil(n * depth_mult)):
                stride = s if j == 0 and not (small_input and i == 1) else 1
                stage.append(MBConv(cin, cin * t, cout, k, stride, nn.SiLU, (max(1, cin // 4), nn.SiLU, nn.Sigmoid)))
                cin = cout
            layers.append(nn.Sequential(*stage))
        last = 4 * cin
        layers.append(_conv_bn(cin, last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def mobilenetv3_small(num_classes: int = 1000, width_mult: float = 1.0, small_input: bool = False) -> MobileNetV3Small:
    """MobileNetV3-Small (Howard et al. 2019, Table 2): 2.54 M parameters, 56 M MACs at 224x224."""
    return MobileNetV3Small(num_classes, width_mult, small_input)


def efficientnet_b0(num_classes: int = 1000, width_mult: float = 1.0, depth_mult: float = 1.0, small_input: bool = False) -> EfficientNet:
    """EfficientNet-B0 (Tan & Le 2019, Table 1): 5.29 M parameters, 0.39 G MACs at 224x224;
    other ``width_mult``/``depth_mult`` give the compound-scaled family's shapes (not its resolutions)."""
    return EfficientNet(num_classes, width_mult, depth_mult, small_input)
