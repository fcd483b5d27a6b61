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


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: its factory, the dataset it trains on and its default training schedule."""

    factory: str
    dataset: str
    input_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_epochs: int = 10
    lr: float = 0.05
    accuracy_bearing: bool = True


ZOO: dict[str, ZooEntry] = {
    "small_cnn": ZooEntry("edgebench.models.zoo:small_cnn", "digits", 32, {"num_classes": 10}, train_epochs=10, lr=0.05),
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
