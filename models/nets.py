"""The built-in architectures, defined in-house (there is no CPU torchvision here).

PyTorch modules only: this module imports torch, so nothing that must load without torch (the
zoo, recipes, the CLI's ``list``) imports it at module level. The zoo names these factories as
``"edgebench.models.zoo:NAME"`` (see :mod:`edgebench.models.zoo`), which keeps the cache keys and
the ``arch.json`` files written before the factories moved here.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages and a linear classifier: trains on digits in seconds."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, w1),
            _conv_bn_relu(w1, w2, stride=2),
            _conv_bn_relu(w2, w3, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def small_cnn(num_classes: int = 10, in_channels: int = 3, widths: list[int] | tuple[int, ...] = (16, 32, 64)) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, tuple(widths))  # type: ignore[arg-type]


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut where the shape changes (option B)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet of basic blocks: CIFAR-style (3x3 stem, no max-pool) or ImageNet-style (7x7 stem + pool)."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, imagenet_stem: bool) -> None:
        super().__init__()
        w0 = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(3, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        layers, cin = [], w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))))


def resnet20(num_classes: int = 10) -> ResNet:
    """He et al.'s CIFAR ResNet-20 (3 stages x 3 blocks, 16/32/64 channels): the classic pruning benchmark."""
    return ResNet([3, 3, 3], [16, 32, 64], num_classes, imagenet_stem=False)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 at 224x224 (torchvision's layout, defined here: there is no CPU torchvision)."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, imagenet_stem=True)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; identity add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al.). ``small_input`` keeps early strides at 1 for 32x32 images."""

    # expansion t, channels c, repeats n, stride s
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, small_input: bool = False) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [nn.Conv2d(3, cin, 3, 1 if small_input else 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            cout = _make_divisible(c * width_mult)
            for j in range(n):
                stride = s if j == 0 else 1
                if small_input and i < 2:
                    stride = 1  # CIFAR variant: keep resolution for the first stages
                layers.append(InvertedResidual(cin, cout, stride, t))
                cin = cout
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def mobilenetv2(num_classes: int = 1000, width_mult: float = 1.0, small_input: bool = False) -> MobileNetV2:
    return MobileNetV2(num_classes, width_mult, small_input)


class WideMLP(nn.Module):
    """A flattened image through ``depth`` wide Linear layers: GEMMs big enough (4096 x 4096 at batch 32+)
    for 2:4 sparse tensor cores to matter, which the zoo's small CNNs are not. Latency only."""

    def __init__(self, num_classes: int = 1000, in_features: int = 3 * 32 * 32, hidden: int = 4096, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def wide_mlp(num_classes: int = 1000, in_features: int = 3 * 32 * 32, hidden: int = 4096, depth: int = 2) -> WideMLP:
    return WideMLP(num_classes, in_features, hidden, depth)
