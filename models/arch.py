"""A PyTorch module rebuilt from data: ``arch.json`` names a factory, its arguments and the widths
that channel pruning changed, so no model file is ever unpickled.

Importing this module imports no torch (the torch backend and the prepare pipeline import it at
module level); torch is imported when a module is actually built or resized.
"""

from __future__ import annotations

import importlib
from typing import Any

_WIDTHS = {"Conv2d": ("in_channels", "out_channels", "groups"), "Linear": ("in_features", "out_features"), "BatchNorm2d": ("num_features",)}


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
