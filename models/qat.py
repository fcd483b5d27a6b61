"""Quantisation-aware training of a PT2E-prepared module (``prepare_qat_pt2e``), seeded.

A backend exports the pruned fp32 model, prepares it with its own quantiser for QAT and hands the
prepared graph (or a thin wrapper around it, e.g. one that feeds NHWC) to :func:`finetune`, which
trains its weights through the fake-quant nodes with :func:`edgebench.models.train.train` (the same
SGD, cosine schedule and batch order as every other fine-tune here). What is QAT-specific:

- an exported graph cannot ``.train()``/``.eval()`` like a module: torchao's
  ``allow_exported_model_train_eval`` makes those calls switch its batch norms (and dropout);
- torchao's QAT recipe (its PT2E QAT tutorial, after torchvision's ``train_quantization.py``):
  train with observers and BN statistics live, then freeze both for the last epoch(s), so the
  weights settle against fixed scales and fixed BN statistics before ``convert_pt2e`` folds them.
  Here the last epoch is frozen when there are at least 2 (one epoch stays fully live);
- weights that are exactly zero (unstructured or 2:4 pruning) are kept zero after every step:
  QAT must not regrow what the recipe pruned;
- :func:`consistent_fake_quant`: the QAT configs of torchao's x86 quantiser and litert-torch's build
  symmetric (weight) fake-quants on ``FusedMovingAvgObsFakeQuantize``, whose fused kernel picks a
  different scale (max(|min|/-qmin, max/qmax)) than its own observer's ``calculate_qparams``
  (amax / ((qmax - qmin) / 2)), which ``convert_pt2e`` uses: training sees one weight grid, the
  converted model another (scales up to 0.4% apart at 8 bits, 7% at 4 bits, where it undoes QAT).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgebench.models import train
from edgebench.models.data import Dataset

# Bump when QAT would train or write a different artifact for the same inputs: part of every QAT
# artifact's cache key (bench/prepare.py), so an artifact trained by an older QAT is never reused.
# 2: weights fake-quantised on the grid convert_pt2e writes (consistent_fake_quant), a module called
# twice (ResNet's shared ReLU) split into one module per call (split_shared_module_calls).
QAT_VERSION = 2


@dataclass
class QatReport:
    """What :func:`finetune` did (goes into the artifact's facts)."""

    epochs: int
    lr: float
    seed: int
    steps: int = 0
    frozen_from_step: int | None = None  # observers and BN statistics frozen from this step on (None: never)
    masked_tensors: int = 0  # weight tensors whose zeros were kept
    masked_zeros: int = 0

    def facts(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "seed": self.seed, "steps": self.steps,
                "observers_and_bn_frozen_from_step": self.frozen_from_step,
                "zeros_kept": {"tensors": self.masked_tensors, "zeros": self.masked_zeros}}


def consistent_fake_quant(config: Any) -> Any:
    """A PT2E QAT ``QuantizationConfig`` (torchao's or litert-torch's frozen dataclass) whose symmetric
    specs (the weights') fake-quantise with the plain ``FakeQuantize`` on the same observer and
    arguments instead of ``FusedMovingAvgObsFakeQuantize``: its scale is then the observer's, the one
    ``convert_pt2e`` writes, so the model is trained on the grid it is deployed with. Affine specs (the
    activations) keep the fused module, which agrees with its observer there."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize

    def fixed(spec: Any) -> Any:
        ctr = getattr(spec, "observer_or_fake_quant_ctr", None)
        partial = getattr(ctr, "p", None)
        if partial is None or spec.qscheme not in (torch.per_channel_symmetric, torch.per_tensor_symmetric):
            return spec
        if not (isinstance(partial.func, type) and issubclass(partial.func, FusedMovingAvgObsFakeQuantize)):
            return spec
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(*partial.args, **partial.keywords))

    changes = {f.name: fixed(getattr(config, f.name)) for f in dataclasses.fields(config)
               if dataclasses.is_dataclass(getattr(config, f.name))}
    return dataclasses.replace(config, **changes)


def split_shared_module_calls(graph: torch.fx.GraphModule) -> list[str]:
    """Give each call of a module that one ``forward`` calls more than once (ResNet's BasicBlock
    applies its one ``self.relu`` twice) its own source name, in place; returns the modules split.

    Quantisers find fusion patterns by source partition, keyed by the innermost ``nn_module_stack``
    entry: both ReLU calls land in one partition with two outputs, which torchao's x86 QAT
    annotator refuses ("Input partition has more than one output node"). Only repeated calls of the
    same single op are split, so a module that decomposes into several ops keeps its one partition."""
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            calls.setdefault(list(stack.values())[-1][0], []).append(node)
    split = [fqn for fqn, nodes in calls.items() if len(nodes) > 1 and len({n.target for n in nodes}) == 1]
    for fqn in split:
        for i, node in enumerate(calls[fqn]):
            stack = dict(node.meta["nn_module_stack"])
            key = list(stack)[-1]
            stack[key] = (f"{fqn}.call{i}", stack[key][1])
            node.meta["nn_module_stack"] = stack
    return split


def graphs(module: nn.Module) -> list[torch.fx.GraphModule]:
    """The exported (PT2E) graphs inside ``module``: itself, or the ones a wrapper holds."""
    return [m for m in module.modules() if isinstance(m, torch.fx.GraphModule)]


def zero_masks(module: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean keep-masks of the weight tensors (2-D and up) that hold exact zeros: a pruned model's."""
    return {name: p.detach() != 0 for name, p in module.named_parameters() if p.dim() >= 2 and bool((p == 0).any())}


def freeze(module: nn.Module) -> None:
    """Stop the observers (scales and zero points stay as learned) and use the BN running
    statistics instead of the batch's, in every exported graph inside ``module``."""
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval

    module.apply(disable_observer)
    for graph in graphs(module):
        move_exported_model_to_eval(graph)


def finetune(module: nn.Module, data: Dataset, epochs: int, lr: float, seed: int = 0, batch_size: int = 64) -> QatReport:
    """Train a PT2E QAT-prepared ``module`` in place on ``data``'s training split (NCHW inputs).

    Deterministic for a seed. Returns what it did; the module is left in eval mode (BN on running
    statistics), ready for ``convert_pt2e``.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    for graph in graphs(module):
        allow_exported_model_train_eval(graph)
    report = QatReport(epochs=epochs, lr=lr, seed=seed)
    steps_per_epoch = (len(data.x_train) + batch_size - 1) // batch_size
    freeze_at = (epochs - 1) * steps_per_epoch if epochs >= 2 else None
    masks = zero_masks(module)
    params = dict(module.named_parameters())
    report.masked_tensors, report.masked_zeros = len(masks), int(sum((~m).sum() for m in masks.values()))

    def after_step() -> None:
        report.steps += 1
        with torch.no_grad():
            for name, keep in masks.items():
                params[name].mul_(keep)
        if report.steps == freeze_at:
            freeze(module)
            report.frozen_from_step = report.steps

    train.seed_everything(seed)
    train.train(module, data, epochs, lr, seed=seed, batch_size=batch_size, after_step=after_step)
    module.eval()
    return report
