"""The built-in models: each a factory named by ``"edgebench.models.zoo:NAME"`` plus keyword
arguments, the dataset it trains on and its training schedule, registered in :data:`MODELS`.

An exported artifact rebuilds its module from that data (``arch.json``, see
:mod:`edgebench.models.arch`) instead of unpickling it. The architectures themselves are PyTorch
code in :mod:`edgebench.models.nets`; this module imports no torch, so the CLI's ``list`` and the
suite config can read the zoo on a machine without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgebench.bench.contracts.registry import Registry, UnknownName

# The factories "edgebench.models.zoo:NAME" resolve to (module-level __getattr__ below): the names
# stay those of the zoo so cache keys and arch.json files written before the move keep working.
NETS = ("small_cnn", "resnet20", "resnet18", "mobilenetv2", "SmallCNN", "BasicBlock", "ResNet", "InvertedResidual", "MobileNetV2")


def __getattr__(name: str) -> Any:
    """``zoo.small_cnn`` and the other architectures, imported from :mod:`.nets` (torch) on first use."""
    if name in NETS:
        from edgebench.models import nets

        return getattr(nets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ZooEntry:
    """A model: its factory, the dataset it trains on and its default training schedule; a suite's
    user model gives its own weights or a ready file (``onnx``, ``torchscript``, ``tflite``) instead."""

    factory: str
    dataset: str
    input_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_epochs: int = 10
    lr: float = 0.05
    weights: str | None = None  # a user's state_dict: loaded instead of training
    onnx: str | None = None  # a user's plain ONNX file: latency and fidelity only, no pruning
    torchscript: str | None = None  # a user's TorchScript archive: runs and exports as given, no pruning
    tflite: str | None = None  # a user's .tflite file: runs on LiteRT as given, no pruning

    def arch(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    def given(self) -> tuple[str, str] | None:
        """(kind, path) of the user's file that enters the pipeline at the portable stage (an ONNX or
        .tflite file, run as given), or None for a model built from a factory or TorchScript."""
        if self.onnx:
            return "onnx", self.onnx
        return ("tflite", self.tflite) if self.tflite else None


MODELS: Registry[ZooEntry] = Registry("model")
ZOO = MODELS  # the name its users have always read (``name in zoo.ZOO``, ``zoo.ZOO.items()``)

MODELS.add("small_cnn", ZooEntry("edgebench.models.zoo:small_cnn", "digits", 32, {"num_classes": 10}, train_epochs=10, lr=0.05))
MODELS.add("resnet20", ZooEntry("edgebench.models.zoo:resnet20", "digits", 32, {"num_classes": 10}, train_epochs=6, lr=0.1))
MODELS.add("mobilenetv2_32", ZooEntry("edgebench.models.zoo:mobilenetv2", "digits", 32, {"num_classes": 10, "width_mult": 0.5, "small_input": True}, train_epochs=6, lr=0.05))
# SE models (models/nets_mobile.py, named there: the zoo re-exports only the factories that predate it)
MODELS.add("mobilenetv3_small_32", ZooEntry("edgebench.models.nets_mobile:mobilenetv3_small", "digits", 32, {"num_classes": 10, "width_mult": 0.5, "small_input": True}, train_epochs=5, lr=0.05))
MODELS.add("efficientnet_b0_32", ZooEntry("edgebench.models.nets_mobile:efficientnet_b0", "digits", 32, {"num_classes": 10, "width_mult": 0.25, "small_input": True}, train_epochs=3, lr=0.05))
# 224x224 models are for latency realism: random (seeded) weights, synthetic inputs, no accuracy.
MODELS.add("resnet18_224", ZooEntry("edgebench.models.zoo:resnet18", "synthetic", 224, {"num_classes": 1000}, train_epochs=0))
MODELS.add("mobilenetv2_224", ZooEntry("edgebench.models.zoo:mobilenetv2", "synthetic", 224, {"num_classes": 1000}, train_epochs=0))
MODELS.add("mobilenetv3_small_224", ZooEntry("edgebench.models.nets_mobile:mobilenetv3_small", "synthetic", 224, {"num_classes": 1000}, train_epochs=0))
MODELS.add("efficientnet_b0_224", ZooEntry("edgebench.models.nets_mobile:efficientnet_b0", "synthetic", 224, {"num_classes": 1000}, train_epochs=0))
# GPU-sized GEMMs for the 2:4 question (bench/suites/gpu.yaml): 3072->4096->4096 and a 1000-class head (134 MB fp32)
MODELS.add("wide_mlp", ZooEntry("edgebench.models.nets:wide_mlp", "synthetic", 32, {"num_classes": 1000}, train_epochs=0))


def entry(name: str) -> ZooEntry:
    """The built-in model ``name``; :class:`UnknownName` (a KeyError) lists the built-in ones."""
    if name not in MODELS:
        raise UnknownName(f"unknown model {name!r}; built-in models: {', '.join(MODELS.names())}")
    return MODELS.get(name)


@dataclass
class PreparedModel:
    """A PyTorch module plus the data that rebuilds its architecture (what backends export)."""

    module: Any  # a torch.nn.Module
    arch: dict[str, Any]
