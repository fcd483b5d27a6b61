"""Pruning algorithms behind the recipe methods (``models/recipes.py`` holds the schema and registry).

Every method function takes the module, its settings, the recipe's schedule and a
:class:`~edgebench.models.recipes.PruneContext`; it prunes in place and returns the module.

* :func:`magnitude_unstructured`: L1 magnitude masks (``torch.nn.utils.prune``), recomputed from
  scratch at every schedule step over the current (masked) weights, kept by the masks' forward
  pre-hooks while fine-tuning, made permanent at the end.
* :func:`channel`: structured channel pruning on torch-pruning's dependency graph (residual adds,
  depthwise/grouped convs and BatchNorm stay consistent); the module physically shrinks.
* :func:`network_slimming`: L1-regularised BN scales (Liu et al., 2017), then channel removal by
  BN-scale importance.
* :func:`semi_structured`: N:M (2:4) sparsity along the input-channel axis, the layout
  TensorRT / cuSPARSELt accelerate (see :func:`nm_mask`).

The training-heavy methods (L1-regularised training, lottery tickets) and the gradient criteria
(SNIP for unstructured, Hessian/OBD for channels) are in ``models/pruning_train.py``, on top of these.

Schedules: :func:`schedule_targets` turns ``(final, schedule)`` into one target per step (one-shot,
``iterative`` equal increments, or Zhu & Gupta's ``agp`` cubic ramp, :func:`agp_sparsities`); the
recipe's ``finetune`` runs after the last step and ``schedule.epochs_per_step`` between steps.

Each method leaves a JSON-serialisable summary in ``module._edgebench_prune_report`` (read it with
:func:`prune_report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

REPORT_ATTR = "_edgebench_prune_report"


# -- schedules ---------------------------------------------------------------------------------------

def agp_sparsities(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Zhu & Gupta's automated gradual pruning: ``s_t = s_f + (s_i - s_f) * (1 - t/n)^3``, t = 1..n.

    Large steps early, while many redundant weights remain, then smaller ones; the last is ``final``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def iterative_sparsities(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """``steps`` equal increments from ``initial`` to ``final`` (the last is ``final``)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [initial + (final - initial) * t / steps for t in range(1, steps + 1)]


def schedule_targets(final: float, schedule: Any = None) -> list[float]:
    """The target (sparsity or channel ratio) reached after each step of ``schedule``.

    ``schedule`` is a recipe ``Schedule`` (``kind``, ``steps``) or None for one-shot.
    """
    kind = getattr(schedule, "kind", "one_shot")
    steps = getattr(schedule, "steps", 1)
    if kind == "one_shot":
        return [final]
    if kind == "iterative":
        return iterative_sparsities(final, steps)
    if kind == "agp":
        return agp_sparsities(final, steps)
    raise ValueError(f"unknown schedule kind {kind!r}")


def _finetune_between(module: nn.Module, ctx: Any, schedule: Any, **kw: Any) -> None:
    epochs = getattr(schedule, "epochs_per_step", 0) or 0
    if epochs > 0:
        ctx.finetune(module, epochs=epochs, **kw)


def prune_report(module: nn.Module) -> dict[str, Any] | None:
    """The summary the last pruning method attached to ``module`` (None if it was not pruned here)."""
    return getattr(module, REPORT_ATTR, None)


def _attach(module: nn.Module, report: dict[str, Any]) -> None:
    # object.__setattr__: a plain attribute, not a submodule/parameter, so state_dict is unchanged
    object.__setattr__(module, REPORT_ATTR, report)


def _named_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _sparsity(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel() if t.numel() else 0.0


def sparsity_report(named: list[tuple[str, nn.Module]]) -> dict[str, Any]:
    """The zeros the weights show now: ``sparsity`` over all of ``named``'s weights and per layer."""
    weights = {n: l.weight.detach() for n, l in named}
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return {"sparsity": zeros / total if total else 0.0, "layers": {n: {"sparsity": _sparsity(w)} for n, w in weights.items()}}


# -- unstructured magnitude ---------------------------------------------------------------------------

def _current_weight(layer: nn.Module) -> torch.Tensor:
    """The effective weight (``weight_orig * weight_mask`` while masked)."""
    if prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
        return (layer.weight_orig * layer.weight_mask).detach()
    return layer.weight.detach()


def _set_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    """Replace whatever mask ``layer.weight`` has with ``mask`` (zeros already pruned stay zero)."""
    if prune.is_pruned(layer):
        prune.remove(layer, "weight")  # bakes the old mask into the weight
    prune.custom_from_mask(layer, "weight", mask.to(dtype=layer.weight.dtype))


def l1_masks(layers: list[nn.Module], sparsity: float, scope: str) -> list[torch.Tensor]:
    """Masks that zero exactly ``round(sparsity * n)`` of the smallest |w| (n: all weights for
    ``global``, each layer's weights for ``layer``), computed from the current effective weights."""
    return score_masks([_current_weight(l).abs() for l in layers], sparsity, scope)


def score_masks(scores: list[torch.Tensor], sparsity: float, scope: str) -> list[torch.Tensor]:
    """Masks (one per score tensor, same shape) that zero exactly ``round(sparsity * n)`` of the
    lowest scores, over all of them (``global``) or within each (``layer``)."""
    masks = [torch.ones_like(s) for s in scores]
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores])
        k = int(round(sparsity * flat.numel()))
        if k > 0:
            idx = torch.topk(flat, k, largest=False, sorted=False).indices
            keep = torch.ones_like(flat)
            keep[idx] = 0
            masks = [m.view_as(s) for m, s in zip(torch.split(keep, [s.numel() for s in scores]), scores)]
    elif scope == "layer":
        for s, m in zip(scores, masks):
            k = int(round(sparsity * s.numel()))
            if k > 0:
                idx = torch.topk(s.flatten(), k, largest=False, sorted=False).indices
                m.view(-1)[idx] = 0
    else:
        raise ValueError(f"unknown scope {scope!r}")
    return masks


def magnitude_unstructured(module: nn.Module, sparsity: float, scope: str, schedule: Any, ctx: Any,
                           scorer: Callable[[nn.Module, list[nn.Module]], list[torch.Tensor]] | None = None,
                           criterion: str = "l1") -> nn.Module:
    """L1 magnitude pruning of every Conv2d/Linear weight to ``sparsity`` zeros (global or per layer).

    At each step the masks are recomputed from scratch over the current weights * mask, so after the
    last step exactly ``round(sparsity * n)`` weights are zero (per layer, or over all of them).
    ``scorer(module, layers)``, if given, replaces |w| as the score (e.g. SNIP's |w * dL/dw|, see
    ``pruning_train.snip_scorer``); it must score already-pruned weights lowest so they stay pruned.
    """
    named = _named_layers(module)
    layers = [l for _, l in named]
    targets = schedule_targets(sparsity, schedule)
    for i, target in enumerate(targets):
        masks = l1_masks(layers, target, scope) if scorer is None else score_masks(scorer(module, layers), target, scope)
        for layer, mask in zip(layers, masks):
            _set_mask(layer, mask)
        if i < len(targets) - 1:
            _finetune_between(module, ctx, schedule)
    ctx.finetune(module)  # the masks' forward pre-hooks keep pruned weights at zero while training
    for layer in layers:
        prune.remove(layer, "weight")
    _attach(module, {
        "method": "magnitude_unstructured", "scope": scope, "criterion": criterion, "targets": targets,
        **sparsity_report(named),
    })
    return module


# -- N:M semi-structured ------------------------------------------------------------------------------

def nm_eligibility(layer: nn.Module, m: int = 4) -> tuple[bool, str]:
    """Whether N:M applies to ``layer``'s weight, and why not.

    The groups run along the input dimension: ``in_features`` for Linear, ``in_channels / groups``
    (the weight's dimension 1) for Conv2d. It must be a multiple of ``m``; depthwise convs (one input
    channel per group) have nothing to group.
    """
    if isinstance(layer, nn.Linear):
        cin = layer.in_features
        if cin % m:
            return False, f"in_features {cin} not divisible by {m}"
        return True, ""
    if isinstance(layer, nn.Conv2d):
        cin = layer.in_channels // layer.groups
        if layer.groups > 1 and cin == 1:
            return False, f"depthwise conv (groups={layer.groups}): one input channel per group"
        if cin % m:
            return False, f"input channels per group {cin} (in_channels={layer.in_channels}, groups={layer.groups}) not divisible by {m}"
        return True, ""
    return False, f"{type(layer).__name__} is not a Conv2d or Linear"


def _to_groups_layout(w: torch.Tensor) -> torch.Tensor:
    """[out, in] stays; Conv [out, in, kh, kw] -> [out, kh, kw, in]: the input axis last."""
    return w.permute(0, 2, 3, 1) if w.dim() == 4 else w


def _from_groups_layout(w: torch.Tensor, dim: int) -> torch.Tensor:
    return w.permute(0, 3, 1, 2) if dim == 4 else w


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive weights along the input-channel axis.

    Layout (the one TensorRT and cuSPARSELt use): a Linear weight [out, in] is grouped along ``in``;
    a Conv2d weight [out, in, kh, kw] is viewed as [out, kh, kw, in] and grouped along ``in``, i.e.
    one group is 4 consecutive input channels at a fixed (out, kh, kw).
    """
    w = _to_groups_layout(weight.detach())
    if w.shape[-1] % m:
        raise ValueError(f"input dimension {w.shape[-1]} is not divisible by {m}")
    groups = w.abs().reshape(-1, m)
    keep = torch.topk(groups, n, dim=1).indices
    mask = torch.zeros_like(groups)
    mask.scatter_(1, keep, 1.0)
    return _from_groups_layout(mask.reshape(w.shape), weight.dim()).contiguous()


def nm_violations(weight: torch.Tensor, n: int = 2, m: int = 4) -> tuple[int, int]:
    """(groups with more than ``n`` non-zeros, number of groups) in the layout of :func:`nm_mask`."""
    w = _to_groups_layout(weight.detach())
    groups = (w != 0).reshape(-1, m).sum(1)
    return int((groups > n).sum()), int(groups.numel())


def semi_structured_report(module: nn.Module, n: int = 2, m: int = 4) -> dict[str, dict[str, Any]]:
    """Per Conv2d/Linear: eligible for N:M, why not, pattern holds, violating groups (current weights)."""
    out = {}
    for name, layer in _named_layers(module):
        ok, why = nm_eligibility(layer, m)
        row: dict[str, Any] = {"type": type(layer).__name__, "shape": list(layer.weight.shape), "eligible": ok, "reason": why}
        if ok:
            bad, total = nm_violations(_current_weight(layer), n, m)
            row.update(pattern_ok=bad == 0, violating_groups=bad, groups=total)
        out[name] = row
    return out


def semi_structured(module: nn.Module, n: int, m: int, ctx: Any) -> nn.Module:
    """N:M magnitude pruning of every eligible Conv2d/Linear; ineligible layers stay dense and are
    reported with the reason. The masks hold during fine-tuning and are made permanent at the end."""
    masked = []
    for _, layer in _named_layers(module):
        if nm_eligibility(layer, m)[0]:
            prune.custom_from_mask(layer, "weight", nm_mask(layer.weight, n, m).to(layer.weight.dtype))
            masked.append(layer)
    ctx.finetune(module)
    for layer in masked:
        prune.remove(layer, "weight")
    report = semi_structured_report(module, n, m)
    _attach(module, {
        "method": "semi_structured", "n": n, "m": m,
        "eligible": [k for k, v in report.items() if v["eligible"]],
        "ineligible": {k: v["reason"] for k, v in report.items() if not v["eligible"]},
        "layers": report,
    })
    return module


# -- structured channel pruning ----------------------------------------------------------------------

def final_layer(module: nn.Module, ctx: Any = None) -> nn.Module:
    """The classifier that keeps its output width: ``ctx.classifier``, else the last Linear (else the
    last Conv2d, for fully convolutional heads)."""
    if ctx is not None and getattr(ctx, "classifier", None) is not None:
        return ctx.classifier
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no Conv2d or Linear layer to prune")
    return convs[-1]


def make_importance(kind: str) -> Any:
    """torch-pruning's importance for ``kind``: group L1/L2 magnitude, FPGM, first-order Taylor
    (needs ``.grad`` on the weights) or BN scale. Magnitude/FPGM/Taylor scores are normalised by
    their group's mean (torch-pruning's default), so a global ranking compares relative importance."""
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "fpgm":
        return tp.importance.FPGMImportance()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "bn_scale":  # raw |gamma| (no per-group normalisation): one global threshold, as in the paper
        return tp.importance.BNScaleImportance(normalizer=None)
    raise ValueError(f"unknown importance {kind!r}")


def _accumulate_gradients(module: nn.Module, batches: Iterable[Any]) -> int:
    """loss.backward() over ``batches`` (eval mode: BN statistics untouched); grads accumulate."""
    module.eval()
    module.zero_grad(set_to_none=True)
    n = 0
    for x, y in batches:
        nn.functional.cross_entropy(module(x), y).backward()
        n += 1
    return n


def widths(module: nn.Module) -> dict[str, int]:
    """Output width of every Conv2d (out_channels) and Linear (out_features)."""
    return {n: (l.out_channels if isinstance(l, nn.Conv2d) else l.out_features) for n, l in _named_layers(module)}


MIN_KEEP_FRACTION = 0.1  # under global ranking a layer keeps at least this share of its channels (>= 1)


def _round_significant(x: torch.Tensor, digits: int = 6) -> torch.Tensor:
    """``x`` in float64 rounded to ``digits`` significant digits: float32 noise (e.g. a group's
    mean-normalised equal scores coming out as 0.99999994 and 1.0000001) becomes an exact tie."""
    x = x.to(torch.float64)
    mag = torch.floor(torch.log10(x.abs().clamp_min(1e-300)))
    scale = torch.pow(10.0, mag - (digits - 1))
    return torch.where(x == 0, x, torch.round(x / scale) * scale)


class GlobalRankingImportance:
    """Wraps a torch-pruning importance for global ranking.

    * In every group the ``min_keep`` most important channels (``MIN_KEEP_FRACTION`` of the group's
      original width, at least 1) score +inf. torch-pruning's global threshold may fall above every
      channel of a group; it then skips that group altogether (it never empties a layer), keeping
      *all* its channels and pruning less than asked. With the top channels pinned, such a group
      shrinks to its best channels and the global count is met elsewhere.
    * Ties (equal to 6 significant digits) are broken by a tiny, unique relative offset:
      torch-pruning removes every channel whose
      score is ``<=`` the threshold, so equal scores (an untrained model's BN scales are all 1)
      would remove far more than the target. The offset grows with a channel's relative position in
      its group, so tied channels are taken evenly from every group.
    """

    def __init__(self, inner: Any, keep_fraction: float = MIN_KEEP_FRACTION) -> None:
        self.inner = inner
        self.keep_fraction = keep_fraction
        self._original: dict[int, int] = {}
        self._groups = 0  # groups scored since reset(): makes the tie-break offsets unique

    def reset(self) -> None:
        """Call before each pruning step."""
        self._groups = 0

    def __call__(self, group: Any) -> torch.Tensor | None:
        imp = self.inner(group)
        if imp is None or imp.numel() == 0:
            return imp
        root = id(group[0].dep.target.module)
        original = self._original.setdefault(root, imp.numel())
        keep = min(imp.numel(), max(1, math.ceil(self.keep_fraction * original)))
        # position within the group first, then the group: tied channels go evenly from every group
        n = imp.numel()
        rank = (torch.arange(n, dtype=torch.float64) + 0.5) / n + 1e-6 * self._groups
        self._groups += 1
        imp = _round_significant(imp.detach()) * (1 + 1e-9 * rank) + 1e-15 * rank
        imp[torch.topk(imp, keep).indices] = float("inf")
        return imp


def channel(
    module: nn.Module,
    ratio: float,
    importance: str,
    global_pruning: bool,
    round_to: int | None,
    schedule: Any,
    ctx: Any,
    taylor_batches: int = 4,
    between_kw: dict[str, Any] | None = None,
    method_name: str = "channel",
    scorer: Any = None,
    before_each_step: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Remove ``ratio`` of the output channels (torch-pruning's ``pruning_ratio``) with ``importance``.

    Built on ``tp.pruner.MetaPruner`` and its dependency graph; the final classifier keeps its
    outputs. Each schedule step prunes to that step's ratio of the *original* channels; Taylor
    importance gets fresh gradients from ``ctx.batches(taylor_batches)`` before every step.
    ``scorer``: a torch-pruning importance used instead of :func:`make_importance` (``importance``
    then only names it in the report), fed by ``before_each_step(module)`` before every step (e.g.
    the per-sample gradients of ``pruning_train.channel_hessian``).
    """
    import torch_pruning as tp

    module.eval()
    example = ctx.example
    with torch.no_grad():
        out_shape = tuple(module(example).shape)
    macs0, params0 = tp.utils.count_ops_and_params(module, example)
    widths0 = widths(module)
    targets = schedule_targets(ratio, schedule)
    base = make_importance(importance) if scorer is None else scorer
    imp = GlobalRankingImportance(base) if global_pruning else base
    pruner = tp.pruner.MetaPruner(
        module, example, importance=imp, global_pruning=global_pruning,
        pruning_ratio=ratio, iterative_steps=len(targets),
        iterative_pruning_ratio_scheduler=lambda _ratio, _steps: [0.0, *targets],
        ignored_layers=[final_layer(module, ctx)], round_to=round_to,
    )
    for i in range(len(targets)):
        if importance == "taylor":
            if _accumulate_gradients(module, ctx.batches(taylor_batches)) == 0:
                raise ValueError("taylor importance needs training batches (ctx.batches returned none)")
        if before_each_step is not None:
            before_each_step(module)
        if global_pruning:
            imp.reset()
        pruner.step()
        module.zero_grad(set_to_none=True)
        if i < len(targets) - 1:
            _finetune_between(module, ctx, schedule, **(between_kw or {}))
    ctx.finetune(module)
    module.eval()
    with torch.no_grad():
        got = tuple(module(example).shape)
    if got != out_shape:
        raise RuntimeError(f"channel pruning changed the output shape {out_shape} -> {got}")
    macs1, params1 = tp.utils.count_ops_and_params(module, example)
    widths1 = widths(module)
    _attach(module, {
        "method": method_name, "importance": importance, "global": global_pruning, "targets": targets,
        "params_before": int(params0), "params_after": int(params1), "macs_before": int(macs0), "macs_after": int(macs1),
        "widths": {n: [widths0[n], widths1[n]] for n in widths1 if n in widths0},
    })
    return module


# -- network slimming ----------------------------------------------------------------------------------

def bn_l1_subgradient(l1: float) -> Callable[[nn.Module], None]:
    """A ``before_step`` hook adding ``l1 * sign(gamma)`` to every BatchNorm2d scale's gradient."""

    def hook(model: nn.Module) -> None:
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.weight.grad is not None:
                bn.weight.grad.add_(torch.sign(bn.weight.detach()), alpha=l1)

    return hook


def network_slimming(module: nn.Module, ratio: float, l1: float, epochs: int, global_pruning: bool, schedule: Any, ctx: Any) -> nn.Module:
    """Liu et al. (2017): sparsity-regularised training (L1 on BN scales), then remove the channels
    with the smallest |gamma| (``tp.importance.BNScaleImportance``), then the recipe's fine-tune.

    Between schedule steps the fine-tune keeps the L1 term, as in the paper's multi-pass scheme.
    """
    if not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in module.modules()):
        raise ValueError("network slimming needs BatchNorm2d layers with learnable scales; the model has none")
    hook = bn_l1_subgradient(l1)
    gammas_before = _gamma_l1(module)
    if epochs > 0:
        ctx.finetune(module, epochs=epochs, before_step=hook)
    gammas_after = _gamma_l1(module)
    channel(module, ratio, "bn_scale", global_pruning, None, schedule, ctx, between_kw={"before_step": hook}, method_name="network_slimming")
    report = prune_report(module) or {}
    report.update(l1=l1, sparsity_epochs=epochs, bn_gamma_l1_before=gammas_before, bn_gamma_l1_after_sparsity_training=gammas_after)
    return module


def _gamma_l1(module: nn.Module) -> float:
    return float(sum(m.weight.detach().abs().sum() for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.affine))


__all__ = [
    "agp_sparsities", "iterative_sparsities", "schedule_targets", "magnitude_unstructured", "l1_masks", "score_masks",
    "nm_eligibility", "nm_mask", "nm_violations", "semi_structured", "semi_structured_report",
    "channel", "network_slimming", "bn_l1_subgradient", "final_layer", "make_importance", "prune_report",
    "widths", "sparsity_report",
]
