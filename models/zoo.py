"""Architectures defined in-house (there is no CPU torchvision here).

Each entry is a factory named by ``"edgebench.models.zoo:NAME"`` plus keyword arguments, so an
exported artifact can rebuild the module from data (``arch.json``) instead of unpickling it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: its factory, the dataset it trains on and its default training schedule."""

    factory: str
    dataset: str
    input_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_epochs: int = 10
    lr: float = 0.05
    weights: str | None = None  # a user's state_dict: loaded instead of training
    onnx: str | None = None  # a user's plain ONNX file: latency and fidelity only, no pruning
    torchscript: str | None = None  # a user's TorchScript archive: runs and exports as given, no pruning

    @property
    def accuracy_bearing(self) -> bool:
        """False for models measured for latency only (no dataset of their shape ships offline)."""
        return self.dataset != "synthetic"

    def arch(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}


ZOO: dict[str, ZooEntry] = {
    "small_cnn": ZooEntry("edgebench.models.zoo:small_cnn", "digits", 32, {"num_classes": 10}, train_epochs=10, lr=0.05),
    "resnet20": ZooEntry("edgebench.models.zoo:resnet20", "digits", 32, {"num_classes": 10}, train_epochs=6, lr=0.1),
    "mobilenetv2_32": ZooEntry("edgebench.models.zoo:mobilenetv2", "digits", 32, {"num_classes": 10, "width_mult": 0.5, "small_input": True}, train_epochs=6, lr=0.05),
    # 224x224 models are for latency realism: random (seeded) weights, synthetic inputs, no accuracy.
    "resnet18_224": ZooEntry("edgebench.models.zoo:resnet18", "synthetic", 224, {"num_classes": 1000}, train_epochs=0),
    "mobilenetv2_224": ZooEntry("edgebench.models.zoo:mobilenetv2", "synthetic", 224, {"num_classes": 1000}, train_epochs=0),
}


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; built-in models: {', '.join(sorted(ZOO))}") from None


@dataclass
class PreparedModel:
    """A PyTorch module plus the data that rebuilds its architecture (what backends export)."""

    module: nn.Module
    arch: dict[str, Any]
