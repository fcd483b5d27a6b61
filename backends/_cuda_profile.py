"""A short profiled pass of a GPU session: which CUDA kernels each layer ran (torch.profiler).

It runs apart from the timed samples (profiling inflates times). Each Conv2d/Linear is wrapped in a
``record_function`` range named ``edgebench.layer:<name>`` by forward hooks; every CUDA kernel the
profiler saw is attributed to the innermost such range around the CPU op that launched it (the
profiler's ``cpu_parent`` chain), and classified by name (``_cuda_kernels.classify``). Under
``torch.compile`` or a CUDA graph the kernels are no longer launched from per-layer ops, so they are
listed for the whole model and ``attributed`` is False.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from edgebench.backends import _cuda_kernels
from edgebench.bench.contracts.evidence import LayerEvidence

RANGE_PREFIX = "edgebench.layer:"


@dataclass
class KernelRecord:
    """One kernel launch: the layer range it ran under (None: outside every layer) and its GPU time."""

    layer: str | None
    name: str
    duration_us: float


@dataclass
class ProfileSummary:
    """What the profiled pass saw: per-layer evidence, kernel counts by kind, the sparse verdict."""

    layers: list[LayerEvidence] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    kernels: list[str] = field(default_factory=list)   # distinct kernel names, by total GPU time
    attributed: bool = True
    runs: int = 0
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)  # layer type ("linear", "conv2d") -> kernel kind -> launches


def layer_ranges(module: Any, torch: Any) -> Callable[[], None]:
    """Wrap each Conv2d/Linear of ``module`` in a profiler range; returns the function that removes the hooks."""
    handles, open_ranges = [], {}
    for name, mod in module.named_modules():
        if not isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
            continue

        def pre(_m: Any, _a: Any, name: str = name) -> None:
            rf = torch.profiler.record_function(RANGE_PREFIX + name)
            rf.__enter__()
            open_ranges.setdefault(name, []).append(rf)

        def post(_m: Any, _a: Any, _o: Any, name: str = name) -> None:
            open_ranges[name].pop().__exit__(None, None, None)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    return lambda: [h.remove() for h in handles] and None


def kernel_records(events: Iterable[Any]) -> list[KernelRecord]:
    """Every kernel of the profiler's CPU events (``prof.events()``), with its enclosing layer range.

    An event is anything with ``name``, ``kernels`` (each with ``name`` and ``duration`` in us) and
    ``cpu_parent``: torch's FunctionEvent."""
    out = []
    for evt in events:
        for k in getattr(evt, "kernels", None) or []:
            if str(k.name).startswith(RANGE_PREFIX):  # the range's own GPU-side annotation, not a kernel
                continue
            out.append(KernelRecord(_layer_of(evt), str(k.name), float(k.duration)))
    return out


def _layer_of(evt: Any) -> str | None:
    node = evt
    while node is not None:
        if str(node.name).startswith(RANGE_PREFIX):
            return str(node.name)[len(RANGE_PREFIX):]
        node = node.cpu_parent
    return None


def summarize(records: list[KernelRecord], layers: list[dict[str, Any]], precision: str, runs: int, attributed: bool) -> ProfileSummary:
    """Per-layer evidence for the planned layers (``layers``: the conversion plan as data, every Conv2d
    and Linear), from the kernel records of ``runs`` profiled runs: the kernel that took the layer's GPU
    time, whether it was a sparse kernel, its GPU time per run; and kernel kinds per layer type."""
    totals: dict[str, float] = {}
    for r in records:
        totals[r.name] = totals.get(r.name, 0.0) + r.duration_us
    out = ProfileSummary(kinds=_cuda_kernels.summarize(r.name for r in records), kernels=sorted(totals, key=lambda n: -totals[n]),
                         attributed=attributed, runs=runs)
    if not attributed:
        return out
    by_layer: dict[str, list[KernelRecord]] = {}
    for r in records:
        if r.layer is not None:
            by_layer.setdefault(r.layer, []).append(r)
    for plan in layers:
        mine = by_layer.get(plan["name"], [])
        kinds = out.by_op.setdefault(plan["op"], {})
        for r in mine:
            kind = _cuda_kernels.classify(r.name).kind
            kinds[kind] = kinds.get(kind, 0) + 1
        gemm = [r for r in mine if _cuda_kernels.classify(r.name).kind in ("sparse-gemm", "gemm", "conv")] or mine
        main = max(gemm, key=lambda r: r.duration_us) if gemm else None
        out.layers.append(LayerEvidence(
            name=plan["name"], op=plan["op"], kernel=main.name if main else None, precision=precision,
            sparse=layer_sparse([r.name for r in mine]),
            time_ms=sum(r.duration_us for r in mine) / 1000 / max(runs, 1) if mine else None))
    return out


def layer_sparse(names: list[str]) -> bool | None:
    """A layer's verdict from its kernels: True if a 2:4 kernel ran; None (unknown) if none was seen, or if
    a cuSPARSELt kernel ran under a name the classifier does not know (a new library version); False only
    when its work ran on known dense kernels."""
    if not names:
        return None
    classes = [_cuda_kernels.classify(n) for n in names]
    if any(c.sparse for c in classes):
        return True
    if any(c.library == "cuSPARSELt" for c in classes):
        return None
    return False


def profile(run: Callable[[], Any], module: Any, torch: Any, layers: list[dict[str, Any]], precision: str,
            runs: int = 3, attributed: bool = True) -> ProfileSummary:
    """Profile ``runs`` calls of ``run`` (already warmed up) and summarise their kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    remove = layer_ranges(module, torch) if attributed else (lambda: None)
    try:
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                run()
            torch.cuda.synchronize()
    finally:
        remove()
    return summarize(kernel_records(prof.events()), layers, precision, runs, attributed)
