"""PyTorch eager on the CPU: the reference every other backend is compared with.

Artifact: ``model.pt`` (a state_dict, loaded with ``weights_only=True``) beside ``arch.json``, which
names the architecture factory and its arguments, so nothing is unpickled from a model file.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends.base import Artifact, Availability, Backend, Session, missing, register


class TorchSession(Session):
    def __init__(self, module: Any, torch: Any, threads: int) -> None:
        self._module = module
        self._torch = torch
        self._threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._module(self._torch.from_numpy(batch)).numpy()

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        return {
            "runtime": "torch eager",
            "torch_version": torch.__version__,
            "device": "cpu",
            "sparse_kernels": False,  # eager conv/linear run dense whatever the zeros
            "intra_op_threads": torch.get_num_threads(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.is_available()),
            "parallel_info": torch.__config__.parallel_info().splitlines()[:6],
        }


def build_module(arch: dict[str, Any]) -> Any:
    """Instantiate ``arch = {"factory": "pkg.module:callable", "kwargs": {...}, "resized": {...}}``.

    ``resized`` (written by :func:`resized_layers` for channel-pruned models) gives the new widths
    of the layers that pruning changed; they are rebuilt with those widths before weights load.
    """
    module_name, _, attr = arch["factory"].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    module = factory(**arch.get("kwargs", {}))
    for name, dims in arch.get("resized", {}).items():
        _replace(module, name, _rebuilt(module.get_submodule(name), dims))
    return module


_WIDTHS = {"Conv2d": ("in_channels", "out_channels", "groups"), "Linear": ("in_features", "out_features"), "BatchNorm2d": ("num_features",)}


def resized_layers(module: Any, reference: Any) -> dict[str, dict[str, int]]:
    """The layers of ``module`` whose widths differ from the freshly built ``reference``."""
    ref = dict(reference.named_modules())
    out = {}
    for name, layer in module.named_modules():
        keys = _WIDTHS.get(type(layer).__name__)
        if keys and name in ref:
            dims = {k: int(getattr(layer, k)) for k in keys}
            if any(getattr(ref[name], k) != v for k, v in dims.items()):
                out[name] = dims
    return out


def _rebuilt(layer: Any, dims: dict[str, int]) -> Any:
    from torch import nn

    kind = type(layer).__name__
    if kind == "Conv2d":
        return nn.Conv2d(dims["in_channels"], dims["out_channels"], layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, dims["groups"], layer.bias is not None, layer.padding_mode)
    if kind == "Linear":
        return nn.Linear(dims["in_features"], dims["out_features"], layer.bias is not None)
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(dims["num_features"], layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
    raise ValueError(f"cannot resize a {kind} layer")


def _replace(root: Any, name: str, new: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


@register
class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32",)

    def availability(self) -> Availability:
        try:
            import torch
        except ImportError:
            return missing("torch", "prune")
        return Availability(True, version=torch.__version__)

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path, calibration: Any = None, options: Any = None) -> Artifact:
        import torch

        out_dir.mkdir(parents=True, exist_ok=True)
        weights = out_dir / "model.pt"
        arch_file = out_dir / "arch.json"
        if model.arch.get("torchscript"):  # a user's TorchScript archive runs as it was given
            weights = out_dir / "model.ts"
            torch.jit.save(model.module, str(weights))
        else:
            torch.save(model.module.state_dict(), weights)
        arch_file.write_text(json.dumps(model.arch, indent=2, sort_keys=True))  # includes pruned widths
        return Artifact(path=weights, files=[weights, arch_file])

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import torch

        threads = int(options.get("threads") or 1)
        torch.set_num_threads(threads)
        arch_file = artifact.with_name("arch.json")
        if not arch_file.exists():
            raise FileNotFoundError(f"{arch_file}: missing architecture file beside {artifact.name}; re-export the model")
        arch = json.loads(arch_file.read_text())
        if arch.get("torchscript"):
            module = torch.jit.load(str(artifact), map_location="cpu").eval()
            return TorchSession(module, torch, threads)
        module = build_module(arch)
        state = torch.load(artifact, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        module.eval()
        return TorchSession(module, torch, threads)
