"""Pruning methods that train, and gradient / second-order criteria (the rest are in ``models/pruning.py``).

* :func:`l1_regularized`: training with an L1 penalty on every Conv2d/Linear weight
  (``loss + lambda * sum |w|``, as a subgradient ``before_step`` hook), then an absolute magnitude
  threshold, then the recipe's fine-tune under the masks. The sparsity is the *outcome*: the prune
  report says what was reached, per layer and overall.
* :func:`lottery_ticket`: iterative magnitude pruning with weight rewinding (Frankle et al. 2019,
  "Stabilizing the lottery ticket hypothesis"): each round prunes to the schedule's next target by
  global magnitude, rewinds the surviving weights to the dense training's checkpoint at
  ``rewind_epoch`` (``ctx.rewind``), and retrains under the mask.
* :func:`snip_scorer`: SNIP connection sensitivity ``|w * dL/dw|`` (Lee et al. 2019) as the score of
  unstructured pruning (``criterion: snip``).
* :func:`channel_hessian`: Optimal Brain Damage importance for channel pruning, torch-pruning's
  ``GroupHessianImportance`` fed per-sample gradients (its documented use).

Why the L1 threshold is absolute, not relative to each layer's largest weight: the penalty's
subgradient pulls every weight toward zero by the same ``lr * lambda`` per step whatever its layer's
scale, so the weights it has driven out end up in the same absolute band around zero in every layer;
a per-layer relative threshold would instead prune a similar share of every layer (what per-layer
magnitude pruning does), and the sparsity reached would no longer measure what the penalty did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edgebench.models import pruning

SNIP_BATCHES = 4  # training batches (64 images each) whose summed loss gradient SNIP scores with
HESSIAN_BATCHES = 2  # training batches whose images each give one per-sample gradient for the Hessian diagonal
SHARE_BELOW = (1e-4, 1e-3, 1e-2)  # |w| bands reported after L1 training: how the sparsity depends on the threshold


# -- L1-regularised training ----------------------------------------------------------------------------

def weight_l1_subgradient(l1: float) -> Callable[[nn.Module], None]:
    """A ``before_step`` hook adding ``l1 * sign(w)`` to every Conv2d/Linear weight's gradient: the
    subgradient of ``l1 * sum |w|`` (biases, BatchNorm and the rest are not penalised)."""

    def hook(model: nn.Module) -> None:
        for _, layer in pruning._named_layers(model):
            if layer.weight.grad is not None:
                layer.weight.grad.add_(torch.sign(layer.weight.detach()), alpha=l1)

    return hook


def _share_below(weights: list[torch.Tensor], bound: float) -> float:
    total = sum(w.numel() for w in weights)
    return float(sum(int((w.abs() <= bound).sum()) for w in weights)) / total if total else 0.0


def _weight_l1(weights: list[torch.Tensor]) -> float:
    return float(sum(w.abs().sum() for w in weights))


def l1_regularized(module: nn.Module, l1: float, epochs: int, threshold: float, ctx: Any) -> nn.Module:
    """Train ``epochs`` with ``l1 * sum |w|`` added to the loss, prune every weight with
    ``|w| <= threshold``, fine-tune under the masks (``ctx.finetune``), make them permanent.

    The report's ``sparsity`` (over all Conv2d/Linear weights) and ``layers[name].sparsity`` are
    what the weights show at the end; ``share_below`` gives the share of weights under other bounds
    right after the L1 training, to read how much the threshold decides."""
    named = pruning._named_layers(module)
    layers = [l for _, l in named]
    l1_before = _weight_l1([l.weight.detach() for l in layers])
    if epochs > 0:
        ctx.finetune(module, epochs=epochs, before_step=weight_l1_subgradient(l1))
    trained = [l.weight.detach() for l in layers]
    share_below = {f"{b:g}": _share_below(trained, b) for b in SHARE_BELOW}
    l1_after = _weight_l1(trained)
    for layer in layers:
        prune.custom_from_mask(layer, "weight", (layer.weight.detach().abs() > threshold).to(layer.weight.dtype))
    ctx.finetune(module)  # the masks' forward pre-hooks keep the pruned weights at zero
    for layer in layers:
        prune.remove(layer, "weight")
    pruning._attach(module, {
        "method": "l1_regularized", "l1": l1, "epochs": epochs, "threshold": threshold, "threshold_kind": "absolute",
        "share_below": share_below, "weight_l1_before": l1_before, "weight_l1_after_l1_training": l1_after,
        "emptied": [n for n, l in named if int((l.weight != 0).sum()) == 0],  # layers the threshold left without a weight
        **pruning.sparsity_report(named),
    })
    return module


# -- lottery tickets with weight rewinding ----------------------------------------------------------------

def _rewind(module: nn.Module, state: dict[str, Any], layers: list[nn.Module], masks: list[torch.Tensor]) -> None:
    """Load the rewind checkpoint into ``module`` (every parameter and buffer: BatchNorm statistics
    come from the same epoch), then mask the weights with ``masks``."""
    for layer in layers:
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")  # back to a plain ``weight`` so the checkpoint's keys match
    module.load_state_dict(state)
    for layer, mask in zip(layers, masks):
        prune.custom_from_mask(layer, "weight", mask.to(layer.weight.dtype))


def lottery_ticket(module: nn.Module, sparsity: float, rewind_epoch: int, scope: str, schedule: Any, ctx: Any) -> nn.Module:
    """Iterative magnitude pruning with weight rewinding, to ``sparsity`` zeros in the schedule's steps.

    Round ``i``: masks from the current (trained, masked) weights at the schedule's ``i``-th target
    (so a pruned weight stays pruned), every weight rewound to the dense training's checkpoint after
    ``rewind_epoch`` epochs (``ctx.rewind``: 0 is the initialisation, Frankle & Carbin's original
    ticket), then retraining under the mask: ``schedule.epochs_per_step`` epochs between rounds, the
    recipe's fine-tune after the last. The same epochs as ``magnitude_unstructured`` with the same
    schedule and fine-tune: the two differ only by the rewinding."""
    if ctx.rewind is None:
        raise ValueError("lottery_ticket rewinds to the dense model's own training, and this model was not trained here "
                         "(user weights, or data without labels); use magnitude_unstructured with schedule kind: iterative instead")
    try:
        state = ctx.rewind(rewind_epoch)  # replayed once: every round rewinds to the same checkpoint
    except ValueError as exc:  # an epoch past the dense training: say which param to change
        raise ValueError(f"lottery_ticket params.rewind_epoch: {exc}; set rewind_epoch within it") from None
    named = pruning._named_layers(module)
    layers = [l for _, l in named]
    targets = pruning.schedule_targets(sparsity, schedule)
    for i, target in enumerate(targets):
        _rewind(module, state, layers, pruning.l1_masks(layers, target, scope))
        if i < len(targets) - 1:
            pruning._finetune_between(module, ctx, schedule)
    ctx.finetune(module)
    for layer in layers:
        prune.remove(layer, "weight")
    pruning._attach(module, {
        "method": "lottery_ticket", "scope": scope, "rewind_epoch": rewind_epoch, "targets": targets,
        **pruning.sparsity_report(named),
    })
    return module


# -- SNIP connection sensitivity -----------------------------------------------------------------------------

def snip_scores(module: nn.Module, layers: list[nn.Module], batches: Any) -> list[torch.Tensor]:
    """``|w * dL/dw|`` per weight of ``layers``, L the loss summed over ``batches`` (eval mode: BN
    statistics untouched). Already-pruned weights score -1: below every live weight, so they stay
    pruned as a schedule's targets grow."""
    params = [l.weight_orig if prune.is_pruned(l) else l.weight for l in layers]
    if pruning._accumulate_gradients(module, batches) == 0:
        raise ValueError("snip criterion needs training batches (ctx.batches returned none)")
    scores = []
    for layer, p in zip(layers, params):
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        # with a mask, weight_orig's gradient is mask * dL/dw: equal to dL/dw where the weight lives
        s = (p.detach() * grad).abs()
        if prune.is_pruned(layer):
            s = torch.where(layer.weight_mask == 0, torch.full_like(s, -1.0), s)
        scores.append(s)
    module.zero_grad(set_to_none=True)
    return scores


def snip_scorer(ctx: Any, n_batches: int = SNIP_BATCHES) -> Callable[[nn.Module, list[nn.Module]], list[torch.Tensor]]:
    """The ``scorer`` for :func:`pruning.magnitude_unstructured`: fresh SNIP scores from
    ``ctx.batches(n_batches)`` at every schedule step."""
    return lambda module, layers: snip_scores(module, layers, ctx.batches(n_batches))


# -- Hessian (Optimal Brain Damage) channel importance -------------------------------------------------------

def hessian_importance() -> Any:
    """torch-pruning's ``GroupHessianImportance`` (OBD: ``sum w^2 * H_diag`` per channel group, the
    diagonal approximated by the mean squared per-sample gradient), with its ``accumulate_grad``
    keyed correctly: torch-pruning 1.6 looks each parameter's *name* up in dictionaries keyed by the
    parameter itself, never finds it, and so keeps only the last sample's squared gradient."""
    import torch_pruning as tp

    class Hessian(tp.importance.GroupHessianImportance):
        def accumulate_grad(self, model: nn.Module) -> None:
            for p in model.parameters():
                if p.grad is not None:
                    g2 = p.grad.detach().pow(2)
                    if p in self._accu_grad:
                        self._accu_grad[p] += g2
                        self._counter[p] += 1
                    else:
                        self._accu_grad[p] = g2.clone()
                        self._counter[p] = 1

    return Hessian()


def feed_hessian(module: nn.Module, imp: Any, batches: Any) -> int:
    """One loss and backward per image of ``batches`` (eval mode), each gradient accumulated by
    ``imp.accumulate_grad``: torch-pruning's documented way to feed its Hessian importance. Single
    images rather than ``backward(retain_graph=True)`` per sample of a batch: the same gradients, at
    1/batch the cost. Returns the number of samples."""
    module.eval()
    imp.zero_grad()
    n = 0
    for x, y in batches:
        for xi, yi in zip(x, y):
            module.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(module(xi[None]), yi[None]).backward()
            imp.accumulate_grad(module)
            n += 1
    if n == 0:
        raise ValueError("hessian importance needs training batches (ctx.batches returned none)")
    return n


def channel_hessian(module: nn.Module, ratio: float, global_pruning: bool, round_to: int | None, schedule: Any, ctx: Any,
                    n_batches: int = HESSIAN_BATCHES) -> nn.Module:
    """:func:`pruning.channel` with the Hessian importance, fed fresh per-sample gradients from
    ``ctx.batches(n_batches)`` before every schedule step."""
    imp = hessian_importance()
    return pruning.channel(module, ratio, "hessian", global_pruning, round_to, schedule, ctx, scorer=imp,
                           before_each_step=lambda m: feed_hessian(m, imp, ctx.batches(n_batches)))


__all__ = [
    "weight_l1_subgradient", "l1_regularized", "lottery_ticket", "snip_scores", "snip_scorer",
    "hessian_importance", "feed_hessian", "channel_hessian",
]
