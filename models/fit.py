"""Host-side algorithms of ``edgebench fit``: channel groups, per-group pruning to exact widths,
candidate widths, sensitivity, and the allocation of widths to a latency budget.

* :func:`channel_groups` / :func:`current_widths`: torch-pruning's dependency groups (the layers whose
  output channels must shrink together), named by their root layer.
* :func:`prune_to_widths`: every named group keeps exactly the requested number of channels (its most
  important by group magnitude); what the ``channel_widths`` recipe method applies step by step.
* :func:`candidate_widths`, :func:`sensitivity`, :func:`holdout_split`: what the lookup table and the
  sensitivity cache are built over; :func:`scores` is the one per-unit computation behind both the fit's
  sensitivity and ``edgebench sensitivity`` (channel groups, or single layers pruned unstructured).
* :func:`plan_knapsack`, :func:`plan_greedy`: pure python allocation over per-group options (no torch).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgebench.bench.contracts.fit import Group, Plan, Sensitivity
from edgebench.models import pruning

IMPORTANCES = ("l1", "l2")


# -- groups ---------------------------------------------------------------------------------------------

def _out_width(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _final(module: nn.Module, classifier: nn.Module | None) -> nn.Module:
    return pruning.final_layer(module, SimpleNamespace(classifier=classifier))


def _graph_groups(module: nn.Module, example: torch.Tensor, classifier: nn.Module | None) -> list[tuple[Group, Any]]:
    """(Group, torch-pruning group) pairs from a freshly built dependency graph, in module order."""
    import torch_pruning as tp

    module.eval()
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    names = {id(m): n for n, m in module.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    out = []
    for g in graph.get_all_groups(ignored_layers=[_final(module, classifier)], root_module_types=[nn.Conv2d, nn.Linear]):
        root = g[0].dep.target.module
        # depthwise convs count too: their outputs shrink with their producer's
        layers = sorted({names[id(d.target.module)] for d, _ in g
                         if graph.is_out_channel_pruning_fn(d.handler) and isinstance(d.target.module, (nn.Conv2d, nn.Linear))})
        out.append((Group(names[id(root)], _out_width(root), layers), g))
    out.sort(key=lambda pair: order[pair[0].name])
    return out


def channel_groups(module: nn.Module, example: torch.Tensor, classifier: nn.Module | None = None) -> list[Group]:
    """The prunable channel groups of ``module`` (torch-pruning dependency groups rooted at a Conv2d or
    Linear, the final layer excluded: ``classifier``, else the last Linear), ordered by the position of
    their root in ``named_modules()``. ``Group.layers``: every Conv2d/Linear whose output channels the
    group prunes; ``Group.width``: the root's current output channels."""
    return [g for g, _ in _graph_groups(module, example, classifier)]


def current_widths(module: nn.Module, example: torch.Tensor, classifier: nn.Module | None = None) -> dict[str, int]:
    """Each channel group's current width, by group name."""
    return {g.name: g.width for g in channel_groups(module, example, classifier)}


# -- pruning to exact widths ----------------------------------------------------------------------------

def _check_widths(widths: dict[str, int], known: dict[str, int]) -> None:
    for name, w in widths.items():
        if name not in known:
            raise ValueError(f"unknown channel group {name!r}; known groups: {', '.join(known)}")
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"channel group {name!r}: width must be an integer >= 1, got {w!r}")
        if w > known[name]:
            raise ValueError(f"channel group {name!r}: width {w} is more than its current width {known[name]} (pruning only narrows)")


def _prune_group(group: Any, keep: int, importance: str) -> None:
    """Remove all but the ``keep`` most important channels of a torch-pruning group."""
    scores = pruning.make_importance(importance)(group)
    drop = torch.argsort(scores.detach().to(torch.float64), stable=True)[: len(scores) - keep]
    group.prune(idxs=sorted(int(i) for i in drop))


def _output_shape(module: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    module.eval()
    with torch.no_grad():
        return tuple(module(example).shape)


def prune_to_widths(
    module: nn.Module, example: torch.Tensor, widths: dict[str, int], importance: str = "l2", classifier: nn.Module | None = None,
) -> nn.Module:
    """Prune ``module`` in place so that each group named in ``widths`` keeps exactly that many channels
    (its most important by ``GroupMagnitudeImportance``, p=2 for ``l2``, p=1 for ``l1``); other groups
    keep their width. Raises ValueError (one line) for an unknown group, a width above the current one
    or below 1. Attaches a prune report (``pruning.prune_report``) and returns the module."""
    import torch_pruning as tp

    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}")
    pairs = _graph_groups(module, example, classifier)
    before = {g.name: g.width for g, _ in pairs}
    _check_widths(widths, before)
    out_shape = _output_shape(module, example)
    macs0, params0 = tp.utils.count_ops_and_params(module, example)
    widths = {n: int(w) for n, w in widths.items()}
    todo = [g.name for g, _ in pairs if g.name in widths and widths[g.name] < g.width]
    for i, name in enumerate(todo):
        if i:  # channel indices changed with the previous prune: look the groups up afresh
            pairs = _graph_groups(module, example, classifier)
        group = next((tg for g, tg in pairs if g.name == name), None)
        if group is None:
            raise RuntimeError(f"channel group {name!r} disappeared after pruning another group")
        _prune_group(group, widths[name], importance)
    got = _output_shape(module, example)
    if got != out_shape:
        raise RuntimeError(f"channel_widths pruning changed the output shape {out_shape} -> {got}")
    macs1, params1 = tp.utils.count_ops_and_params(module, example)
    pruning._attach(module, {
        "method": "channel_widths", "importance": importance,
        "widths": {n: [before[n], widths.get(n, before[n])] for n in before},
        "params_before": int(params0), "params_after": int(params1), "macs_before": int(macs0), "macs_after": int(macs1),
    })
    return module


def channel_widths(module: nn.Module, steps: list[dict[str, int]], importance: str, schedule: Any, ctx: Any) -> nn.Module:
    """The ``channel_widths`` recipe method: each step prunes to its widths, ``schedule.epochs_per_step``
    fine-tune epochs between steps, the recipe's fine-tune at the end; the report lists every step."""
    reports = []
    for i, step in enumerate(steps):
        prune_to_widths(module, ctx.example, dict(step), importance, ctx.classifier)
        reports.append(pruning.prune_report(module))
        if i < len(steps) - 1:
            pruning._finetune_between(module, ctx, schedule)
    ctx.finetune(module)
    first, last = reports[0], reports[-1]
    pruning._attach(module, {
        "method": "channel_widths", "importance": importance,
        "steps": [r["widths"] for r in reports],
        "widths": {n: [first["widths"][n][0], last["widths"][n][1]] for n in last["widths"]},
        "params_before": first["params_before"], "params_after": last["params_after"],
        "macs_before": first["macs_before"], "macs_after": last["macs_after"],
    })
    return module


# -- candidates and sensitivity -------------------------------------------------------------------------

def candidate_widths(width: int, granularity: int, fractions: Iterable[float] = (0.25, 0.5, 0.75)) -> list[int]:
    """Kept widths to try for a group of ``width`` channels: ``width * f`` snapped to the nearest
    multiple of ``granularity`` (at least ``granularity``, below ``width``), unique, ascending. The full
    width is not a candidate; ``granularity >= width`` leaves nothing to prune ([])."""
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    if granularity >= width:
        return []
    snapped = {max(granularity, int(math.floor(width * f / granularity + 0.5)) * granularity) for f in fractions}
    return sorted(w for w in snapped if w < width)


def holdout_split(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, holdout_idx), both sorted: a seeded random ``fraction`` of the TRAINING split's ``n``
    samples held out to score sensitivity on (the evaluation split is never used to choose widths)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 training samples to hold some out, got {n}")
    k = min(n - 1, max(1, int(round(n * fraction))))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _batches(x: np.ndarray, batch_size: int) -> Iterable[torch.Tensor]:
    for i in range(0, len(x), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))


def recalibrate_bn(module: nn.Module, x: np.ndarray, batch_size: int = 128) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``x`` (cumulative average: momentum None),
    only the BN layers in train mode (dropout stays off), under no_grad; the module ends in eval mode."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    module.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for xb in _batches(x, batch_size):
            module(xb)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return module.eval()


def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 128) -> tuple[float, float]:
    """(mean cross-entropy, top-1 in [0, 1]) of ``module`` on numpy inputs ``x`` and labels ``y``."""
    module.eval()
    loss, correct = 0.0, 0
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    with torch.no_grad():
        for i, xb in zip(range(0, len(x), batch_size), _batches(x, batch_size)):
            logits, yb = module(xb), labels[i:i + batch_size]
            loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return loss / len(x), correct / len(x)


def _counterpart(original: nn.Module, clone: nn.Module, layer: nn.Module | None) -> nn.Module | None:
    """``layer`` of ``original`` as found in its deep copy ``clone`` (by qualified name)."""
    if layer is None:
        return None
    name = next(n for n, m in original.named_modules() if m is layer)
    return clone.get_submodule(name)


@dataclass
class Score:
    """One pruned copy of the dense model, scored against it: unit ``group`` (a channel group; with
    unstructured pruning, one Conv2d/Linear layer) keeps ``width`` (channels; weights for a layer). Loss
    increase and top-1 drop (points) on the held-out slice of the training split; ``eval_top1`` (0-1) on
    the evaluation split when one was given: reported beside, never used to choose."""

    group: str
    width: int
    loss_increase: float
    top1_drop_pp: float
    eval_top1: float | None = None

    def sensitivity(self) -> Sensitivity:
        """The row as ``edgebench fit`` stores it."""
        return Sensitivity(self.group, self.width, self.loss_increase, self.top1_drop_pp)


KINDS = ("channel", "unstructured")


def kept_at(total: int, ratio: float) -> int:
    """What pruning ``ratio`` of ``total`` channels (or weights) keeps: ``total - round(total * ratio)``
    (half up), at least 1."""
    return max(1, total - int(math.floor(total * ratio + 0.5)))


def weight_counts(module: nn.Module) -> dict[str, int]:
    """Every Conv2d/Linear layer's weight count, by qualified name, in module order: the units of an
    unstructured (per-layer magnitude) scan."""
    return {n: int(m.weight.numel()) for n, m in pruning._named_layers(module)}


def layer_units(module: nn.Module) -> list[Group]:
    """Each Conv2d/Linear layer as a one-layer unit (``width``: its weight count) for :func:`scores`
    with ``kind="unstructured"``."""
    return [Group(n, w, [n]) for n, w in weight_counts(module).items()]


def prune_layer_weights(layer: nn.Module, keep: int) -> nn.Module:
    """Zero all but the ``keep`` largest-|w| weights of one layer, in place (L1 magnitude on that layer
    alone; ties broken by position, so the result is deterministic)."""
    w = layer.weight.data
    drop = w.numel() - keep
    if drop > 0:
        idx = torch.argsort(w.abs().flatten().to(torch.float64), stable=True)[:drop]
        w.view(-1)[idx] = 0
    return layer


def _pruner(kind: str, module: nn.Module, example: torch.Tensor, importance: str, classifier: nn.Module | None) -> Callable[[nn.Module, str, int], None]:
    """How a deep copy of ``module`` is pruned at one unit to one width, for ``kind``."""
    if kind == "channel":
        def channel(clone: nn.Module, unit: str, width: int) -> None:
            prune_to_widths(clone, example, {unit: width}, importance, _counterpart(module, clone, classifier))
        return channel
    if kind == "unstructured":
        def unstructured(clone: nn.Module, unit: str, width: int) -> None:
            prune_layer_weights(clone.get_submodule(unit), width)
        return unstructured
    raise ValueError(f"unknown sensitivity kind {kind!r}; choose one of: {', '.join(KINDS)}")


def scores(
    module: nn.Module, example: torch.Tensor, groups: list[Group], candidates: dict[str, list[int]],
    x: np.ndarray, y: np.ndarray, recalib_x: np.ndarray | None = None, batch_size: int = 128,
    classifier: nn.Module | None = None, importance: str = "l2", kind: str = "channel",
    eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None, on_row: Callable[[Score], None] | None = None,
) -> list[Score]:
    """The loss of pruning each unit alone to each candidate width, without fine-tuning: for every
    (unit, width) a deep copy of the dense ``module`` is pruned and scored on the held-out slice
    (``x``, ``y``) against the dense model (loss increase, top-1 drop in points); with ``eval_x`` /
    ``eval_y`` its top-1 on the evaluation split too. ``kind`` "channel": units are channel groups
    (:func:`channel_groups`) kept at ``width`` channels; "unstructured": Conv2d/Linear layers
    (:func:`layer_units`) keeping their ``width`` largest-magnitude weights. ``on_row``: called with
    each row as it is scored (progress).

    With ``recalib_x`` the copy's BatchNorm statistics are re-estimated on it first: removing channels
    shifts the next layer's activation statistics, so the dense running stats no longer match and
    the unrecovered loss mostly measures that mismatch; re-estimating is cheap (forwards only) and
    makes this no-fine-tune proxy rank groups far closer to their loss after fine-tuning.
    """
    prune = _pruner(kind, module, example, importance, classifier)
    torch.manual_seed(0)
    dense_loss, dense_top1 = evaluate(module, x, y, batch_size)
    out = []
    for g in groups:
        for w in candidates.get(g.name, []):
            clone = copy.deepcopy(module)
            prune(clone, g.name, w)
            if recalib_x is not None:
                recalibrate_bn(clone, recalib_x, batch_size)
            loss, top1 = evaluate(clone, x, y, batch_size)
            eval_top1 = evaluate(clone, eval_x, eval_y, batch_size)[1] if eval_x is not None else None
            out.append(Score(g.name, w, loss - dense_loss, (dense_top1 - top1) * 100.0, eval_top1))
            if on_row is not None:
                on_row(out[-1])
    return out


def sensitivity(
    module: nn.Module, example: torch.Tensor, groups: list[Group], candidates: dict[str, list[int]],
    x: np.ndarray, y: np.ndarray, recalib_x: np.ndarray | None = None, batch_size: int = 128,
    classifier: nn.Module | None = None, importance: str = "l2",
) -> list[Sensitivity]:
    """``edgebench fit``'s rows: :func:`scores` of each channel group pruned alone to each candidate
    width (see there), as :class:`Sensitivity`."""
    return [s.sensitivity() for s in scores(module, example, groups, candidates, x, y, recalib_x, batch_size, classifier, importance)]


# -- allocation (pure python) ---------------------------------------------------------------------------

@dataclass
class Option:
    """One choice for a group: keep ``width`` channels, predicted latency change ``delta_ms`` (negative:
    faster), predicted accuracy ``cost`` (loss increase)."""

    width: int
    delta_ms: float
    cost: float


def _usable(options: dict[str, list[Option]], current: dict[str, int] | None) -> dict[str, list[Option]]:
    """Each group's options without slower-than-dense ones (delta > 0), with a keep option (delta 0,
    cost 0) first. Its width is ``current[name]`` (else the group's widest zero-delta option, else 0:
    such a group is left out of the plan's widths)."""
    out = {}
    for name, opts in options.items():
        keep = [o for o in opts if o.delta_ms == 0 and o.cost == 0]
        if keep:
            base = max(keep, key=lambda o: o.width)
        else:
            base = Option((current or {}).get(name, 0), 0.0, 0.0)
        out[name] = [base] + [o for o in opts if o.delta_ms <= 0 and o is not base]
    return out


def _plan(method: str, base_ms: float, budget_ms: float, chosen: dict[str, Option]) -> Plan:
    predicted = base_ms + sum(o.delta_ms for o in chosen.values())
    return Plan(method, {n: o.width for n, o in chosen.items() if o.width > 0}, predicted,
                sum(o.cost for o in chosen.values()), predicted <= budget_ms + 1e-9)


def _fastest(opts: dict[str, list[Option]]) -> dict[str, Option]:
    return {n: min(os, key=lambda o: (o.delta_ms, o.cost)) for n, os in opts.items()}


def _shifted(cost: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """DP bins reached by adding a saving of ``s`` bins to every bin of ``cost`` (the last bin caps:
    its best source wins): (cost per destination bin, source bin per destination bin)."""
    bins = len(cost) - 1
    out, src = np.full(bins + 1, np.inf), np.zeros(bins + 1, int)
    out[s:bins], src[s:bins] = cost[:bins - s], np.arange(bins - s)
    j = int(np.argmin(cost[bins - s:]))
    out[bins], src[bins] = cost[bins - s + j], bins - s + j
    return out, src


def plan_knapsack(
    base_ms: float, options: dict[str, list[Option]], budget_ms: float, resolution_ms: float | None = None,
    current: dict[str, int] | None = None,
) -> Plan:
    """Multiple-choice knapsack (HALP-style): one option per group, least summed cost with
    ``base_ms + sum(delta_ms) <= budget_ms``. A DP over the saving discretised to ``resolution_ms``
    (default: ~4000 bins up to the needed saving; savings are rounded down, so a plan it accepts
    really meets the budget; savings beyond the needed one are capped). Infeasible: the fastest
    plan, ``feasible`` False. ``current``: the groups' widths, for the keep option."""
    opts = _usable(options, current)
    need = base_ms - budget_ms
    if need <= 0:
        return _plan("knapsack", base_ms, budget_ms, {n: os[0] for n, os in opts.items()})
    res = resolution_ms or need / 4000
    bins = max(1, math.ceil(need / res - 1e-9))
    dp = np.full(bins + 1, np.inf)
    dp[0] = 0.0
    trace = []  # per group: (option index, previous bin) for every bin
    for name, os in opts.items():
        new, pick, prev = np.full(bins + 1, np.inf), np.zeros(bins + 1, int), np.zeros(bins + 1, int)
        for k, o in enumerate(os):
            cost, src = _shifted(dp + o.cost, min(bins, int(math.floor(-o.delta_ms / res + 1e-9))))
            better = cost < new
            new[better], pick[better], prev[better] = cost[better], k, src[better]
        dp = new
        trace.append((name, pick, prev))
    if not np.isfinite(dp[bins]):
        return _plan("knapsack", base_ms, budget_ms, _fastest(opts))
    chosen, j = {}, bins
    for name, pick, prev in reversed(trace):
        chosen[name] = opts[name][pick[j]]
        j = prev[j]
    return _plan("knapsack", base_ms, budget_ms, {n: chosen[n] for n in opts})


def _greedy_step(opts: dict[str, list[Option]], chosen: dict[str, Option], predicted: float, target: float) -> tuple[str, Option] | None:
    """NetAdapt's choice: per group the widest narrower option that alone reaches ``target``; commit
    the one costing least. None meets it: the best extra saving per extra cost. None saves: None."""
    meets, others = [], []
    for name, os in opts.items():
        cur = chosen[name]
        narrower = [o for o in os if o.delta_ms < cur.delta_ms and (cur.width <= 0 or o.width < cur.width)]
        ok = [o for o in narrower if predicted - cur.delta_ms + o.delta_ms <= target + 1e-12]
        if ok:
            best = max(ok, key=lambda o: (o.width, -o.cost))
            meets.append((best.cost - cur.cost, name, best))
        for o in narrower:
            extra = max(o.cost - cur.cost, 1e-12)
            others.append((-(cur.delta_ms - o.delta_ms) / extra, name, o))
    pool = meets or others
    if not pool:
        return None
    _, name, o = min(pool, key=lambda t: (t[0], t[1], t[2].width))
    return name, o


def plan_greedy(
    base_ms: float, options: dict[str, list[Option]], budget_ms: float, iterations: int = 10,
    current: dict[str, int] | None = None,
) -> Plan:
    """NetAdapt-style greedy allocation: each iteration must cut the predicted latency by
    ``(base_ms - budget_ms) / iterations``; it commits one group's narrower option (see
    :func:`_greedy_step`) and stops once within budget (or when nothing saves more: infeasible)."""
    opts = _usable(options, current)
    chosen = {n: os[0] for n, os in opts.items()}
    cut = max(base_ms - budget_ms, 0.0) / max(1, iterations)
    predicted = base_ms
    for _ in range(iterations + sum(len(os) for os in opts.values())):
        if predicted <= budget_ms + 1e-9:
            break
        step = _greedy_step(opts, chosen, predicted, max(predicted - cut, budget_ms) if cut else budget_ms)
        if step is None:
            break
        name, o = step
        predicted += o.delta_ms - chosen[name].delta_ms
        chosen[name] = o
    return _plan("greedy", base_ms, budget_ms, chosen)


def plan_macs(module: nn.Module, example: torch.Tensor, widths: dict[str, int], classifier: nn.Module | None = None) -> int:
    """Multiply-accumulates of ``module`` with each named group at its width (a pruned copy; the module
    is untouched): what :class:`edgebench.bench.fit.Predictor` scales one-group savings by."""
    import torch_pruning as tp

    clone = copy.deepcopy(module)
    if widths:
        prune_to_widths(clone, example, widths, "l2", _counterpart(module, clone, classifier))
    macs, _ = tp.utils.count_ops_and_params(clone.eval(), example)
    return int(macs)


def stage_macs(module: nn.Module, example: torch.Tensor, widths: dict[str, int], classifier: nn.Module | None = None) -> dict[str, float]:
    """Multiply-accumulates (millions) of a pruned copy of ``module`` per output resolution of its Conv2d
    layers (``"32x32"``, ...): the features of the fitted latency model (bench/fit.py), because a MAC at
    a large resolution costs more time on a CPU (memory traffic) than one at a small. Linear layers are
    left out: a classifier's few MACs would only give the model a free parameter."""
    clone = copy.deepcopy(module)
    if widths:
        prune_to_widths(clone, example, widths, "l2", _counterpart(module, clone, classifier))
    out: dict[str, float] = {}

    def hook(layer: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        kh, kw = layer.kernel_size
        key = f"{output.shape[-2]}x{output.shape[-1]}"
        out[key] = out.get(key, 0.0) + output[0].numel() * (layer.in_channels // layer.groups) * kh * kw / 1e6

    handles = [m.register_forward_hook(hook) for m in clone.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            clone.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return out


__all__ = [
    "channel_groups", "current_widths", "prune_to_widths", "channel_widths", "candidate_widths", "holdout_split",
    "recalibrate_bn", "evaluate", "sensitivity", "Score", "scores", "KINDS", "kept_at", "weight_counts", "layer_units",
    "prune_layer_weights", "Option", "plan_knapsack", "plan_greedy", "plan_macs", "stage_macs",
]
