"""The GPU part of a run's report: cells measured with CUDA events (torch-cuda), from their results.

Per cell: end-to-end vs GPU compute, the copies and enqueue apart (trtexec's split), launch-bound
cells, GPU memory, how many Linear layers became 2:4 sparse tensors and in how many of them the
profiled kernels were sparse ("sparse kernels ran in k of n converted layers", read from kernel names).
Then the question the gpu suite asks: per model, precision and batch, 2:4 vs dense GPU compute, so
the report shows from which batch size 2:4 pays on this GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgebench.bench.contracts.flags import CODES
from edgebench.bench.contracts.identity import CellFields
from edgebench.bench.store import CellRecord
from edgebench.reports.htmlkit import e, sortable_table

EXPLANATION = ("GPU cells are timed with CUDA events on the stream: end-to-end is the host-to-device copy's start to the "
               "device-to-host copy's end (the cell's latency samples), compute is the model alone, enqueue is the host's time to "
               "launch them. Sparse kernels are read from the kernel names of a separate profiled pass, not assumed from the recipe.")


@dataclass
class GpuRow(CellFields):
    """One GPU cell's time split, memory and 2:4 evidence."""

    gpu: str | None
    options: dict[str, Any]
    phases_p50_ms: dict[str, float]
    launch_bound: bool
    cuda_graph: bool
    converted: int
    linear_layers: int
    sparse_ran: int | None            # None: kernels not attributable to layers (compile, CUDA graph) or not profiled
    sparse_kernels: bool | None
    unknown: int = 0                  # converted layers whose kernels the classifier did not recognise
    untrusted: list[str] = field(default_factory=list)  # codes of flags that make its latency inconclusive (contended, throttled)
    noun: str = "converted"           # "eligible" for TensorRT (the builder chose per layer), "converted" for torch-cuda
    trtexec: dict[str, Any] | None = None   # TensorRT: trtexec's own summary of the same ONNX and flags
    kernel_kinds: dict[str, int] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)   # per converted layer: kernel, sparse, time
    left_dense: dict[str, str] = field(default_factory=dict)     # Linear layer -> why it stayed dense
    memory: dict[str, Any] | None = None

    @property
    def sparse_text(self) -> str:
        if self.noun == "eligible":  # TensorRT: the builder's eligible layers, and those whose tactic was sparse
            if self.sparse_ran is None:
                return "sparse weights not requested"
            unknown = f"; {self.unknown} unknown" if self.unknown else ""
            return f"sparse kernels: {self.sparse_ran} of {self.converted} eligible layers{unknown}"
        if self.converted == 0:
            return f"no layer converted (0 of {self.linear_layers} Linear)"
        if self.sparse_ran is None:
            ran = {True: "sparse kernels ran", False: "no sparse kernel ran", None: "not profiled"}[self.sparse_kernels]
            return f"{self.converted} of {self.linear_layers} Linear converted; {ran} (per-layer attribution not available)"
        unknown = f"; {self.unknown} with unrecognised kernels" if self.unknown else ""
        return f"sparse kernels ran in {self.sparse_ran} of {self.converted} converted layers ({self.linear_layers} Linear){unknown}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sparse_text": self.sparse_text}


def gpu_rows(cells: list[CellRecord]) -> list[GpuRow]:
    """One row per measured cell that has a GPU time split, in the run's order."""
    return [_row(c) for c in cells if c.status == "ok" and c.result is not None and c.result.device_timing is not None]


def _row(c: CellRecord) -> GpuRow:
    r = c.result
    ev = r.evidence
    details = (ev.details if ev else None) or {}
    plan = details.get("conversion") or []
    linear = [p for p in plan if p.get("op") == "linear"]
    sl = details.get("sparse_layers") or {}
    profile = details.get("profile") or {}
    timing = r.device_timing
    return GpuRow(
        cell_key=c.cell_key, model=c.model, recipe=c.recipe, backend=c.backend, precision=c.precision, batch=c.batch, target=c.target,
        gpu=ev.device if ev else None, options={k: v for k, v in (c.options or {}).items() if k in ("compile", "cuda_graph", "sparse", "tf32")},
        phases_p50_ms={k: v.p50_ms for k, v in timing.phases.items()}, launch_bound=timing.launch_bound, cuda_graph=timing.cuda_graph,
        converted=int(sl.get("converted") or 0), linear_layers=len(linear), sparse_ran=sl.get("sparse_ran"),
        sparse_kernels=ev.sparse_kernels if ev else None, unknown=len(sl.get("unknown") or []),
        untrusted=[f.code for f in r.flags if f.code in CODES and CODES[f.code].untrusted_timing],
        noun=str(sl.get("noun") or ("eligible" if c.backend == "tensorrt" else "converted")), trtexec=details.get("trtexec"), kernel_kinds=dict(profile.get("kernel_kinds") or {}),
        layers=[{"name": le.name, "kernel": le.kernel, "sparse": le.sparse, "time_ms": le.time_ms, "precision": le.precision}
                for le in (ev.layers if ev else [])],
        left_dense={p["name"]: p.get("reason", "") for p in linear if not p.get("convert")},
        memory=asdict(r.gpu_memory) if r.gpu_memory is not None else None)


@dataclass
class PayRow:
    """2:4 against dense for one (model, backend, precision, options, target) at one batch size."""

    model: str
    target: str
    precision: str
    recipe: str
    batch: int
    dense_compute_ms: float
    sparse_compute_ms: float
    dense_e2e_ms: float
    sparse_e2e_ms: float
    untrusted: list[str] = field(default_factory=list)  # either cell's inconclusive-timing flags: never decides where 2:4 pays

    @property
    def speedup(self) -> float:
        """Dense GPU compute over 2:4 GPU compute: above 1, 2:4 pays."""
        return self.dense_compute_ms / self.sparse_compute_ms if self.sparse_compute_ms > 0 else float("nan")


def pays(rows: list[GpuRow]) -> list[PayRow]:
    """Each converted cell against the dense cell of the same model, backend, precision, batch, options and target."""
    def key(r: GpuRow) -> tuple[Any, ...]:
        return (r.model, r.backend, r.precision, r.batch, r.target, tuple(sorted(r.options.items())))

    dense = {key(r): r for r in rows if r.recipe == "dense"}
    out = []
    for r in rows:
        d = dense.get(key(r))
        if r.recipe == "dense" or d is None or r.converted == 0:
            continue
        out.append(PayRow(r.model, r.target, r.precision, r.recipe, r.batch, d.phases_p50_ms["compute"], r.phases_p50_ms["compute"],
                          d.phases_p50_ms["end_to_end"], r.phases_p50_ms["end_to_end"], sorted(set(d.untrusted + r.untrusted))))
    return sorted(out, key=lambda p: (p.target, p.model, p.precision, p.recipe, p.batch))


def first_paying_batch(pay: list[PayRow]) -> dict[tuple[str, str, str, str], int | None]:
    """Per (target, model, precision, recipe): the smallest batch from which 2:4 is faster at every larger batch
    measured, over the pairs whose timing is trusted (a contended or throttled cell decides nothing)."""
    groups: dict[tuple[str, str, str, str], list[PayRow]] = {}
    for p in (p for p in pay if not p.untrusted):
        groups.setdefault((p.target, p.model, p.precision, p.recipe), []).append(p)
    out: dict[tuple[str, str, str, str], int | None] = {}
    for k, ps in groups.items():
        ps = sorted(ps, key=lambda p: p.batch)
        first = None
        for p in reversed(ps):
            if p.speedup > 1:
                first = p.batch
            else:
                break
        out[k] = first
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def cell_cells(r: GpuRow) -> list[str]:
    p = r.phases_p50_ms
    mem = r.memory or {}
    opts = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"
    return [r.cell_key, r.gpu or "?", opts, _ms(p.get("end_to_end")), _ms(p.get("compute")), _ms(p.get("h2d")), _ms(p.get("d2h")),
            _ms(p.get("enqueue")) + (" (launch-bound)" if r.launch_bound else ""), r.sparse_text,
            "-" if not mem else f"{mem['allocated_peak_mib']:.0f} / {mem['reserved_peak_mib']:.0f}", trtexec_text(r)]


def trtexec_text(r: GpuRow) -> str:
    """trtexec's end-to-end median and p90 beside ours (TensorRT cells with ``trtexec: true``)."""
    lat = (r.trtexec or {}).get("latency_ms") or {}
    if "median" not in lat:
        return str((r.trtexec or {}).get("skipped") or "-")
    ours = r.phases_p50_ms.get("end_to_end")
    ratio = f"; ours/trtexec {ours / lat['median']:.2f}x" if ours and lat["median"] > 0 else ""
    p90 = f", p90 {lat['p90']:.3f}" if "p90" in lat else ""
    return f"median {lat['median']:.3f}{p90}{ratio}"


CELL_HEADS = ["cell", "GPU", "options", "end-to-end p50 ms", "compute p50 ms", "H2D p50 ms", "D2H p50 ms", "enqueue p50 ms",
              "2:4 evidence", "GPU MiB alloc / reserved (peak)", "trtexec end-to-end ms"]
PAY_HEADS = ["target", "model", "precision", "recipe", "batch", "dense compute ms", "2:4 compute ms", "compute speedup",
             "dense end-to-end ms", "2:4 end-to-end ms"]


def pay_cells(p: PayRow) -> list[str]:
    return [p.target, p.model, p.precision, p.recipe, str(p.batch), _ms(p.dense_compute_ms), _ms(p.sparse_compute_ms),
            f"{p.speedup:.2f}x" + (f" (inconclusive: {', '.join(p.untrusted)})" if p.untrusted else ""), _ms(p.dense_e2e_ms), _ms(p.sparse_e2e_ms)]


def pays_text(pay: list[PayRow]) -> list[str]:
    """One line per (target, model, precision, recipe): from which batch 2:4 pays, or that it does not."""
    out = []
    for (target, model, precision, recipe), b in first_paying_batch(pay).items():
        out.append(f"{target} {model} {precision} {recipe}: " + (f"2:4 is faster from batch {b} up" if b is not None
                                                                else "2:4 is not faster at the largest batch measured with trusted timing"))
    return out


def _kernel_lines(rows: list[GpuRow]) -> list[tuple[str, str]]:
    """Per cell, each profiled layer's main kernel (and why a layer was left dense, in a pruned model)."""
    out = []
    for r in rows:
        why = r.left_dense if r.recipe != "dense" else {}
        for layer in r.layers:
            kind = {True: "sparse", False: "dense", None: "unknown"}[layer["sparse"]]
            prec = f" [{layer['precision']}]" if layer.get("precision") else ""
            text = f"{layer['name']}{prec}: {kind} - {layer['kernel'] or 'no kernel seen'}"
            text += f" ({layer['time_ms']:.3f} ms/run, profiled)" if layer["time_ms"] is not None else ""
            out.append((r.cell_key, text + (f"; left dense: {why[layer['name']]}" if why.get(layer["name"]) else "")))
        seen = {layer["name"] for layer in r.layers}
        out += [(r.cell_key, f"{name}: dense - {reason}") for name, reason in why.items() if reason and name not in seen]
    return out


def markdown_lines(rows: list[GpuRow]) -> list[str]:
    """The Markdown report's GPU section (empty without GPU cells)."""
    if not rows:
        return []
    out = ["", "## GPU: time split and 2:4 evidence", "", EXPLANATION, "",
           "| " + " | ".join(CELL_HEADS) + " |", "|" + "---|" * len(CELL_HEADS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cell_cells(r)) + " |" for r in rows]
    pay = pays(rows)
    if pay:
        out += ["", "### Where 2:4 pays (GPU compute, median)", "", "| " + " | ".join(PAY_HEADS) + " |", "|" + "---|" * len(PAY_HEADS)]
        out += ["| " + " | ".join(pay_cells(p)) + " |" for p in pay]
        out += [""] + [f"- {t}" for t in pays_text(pay)]
    kernels = _kernel_lines(rows)
    if kernels:
        out += ["", "Kernels per converted layer (profiled pass) and layers left dense:", ""] + [f"- `{k}` {t}" for k, t in kernels]
    return out


def html_section(rows: list[GpuRow]) -> str:
    """The HTML report's GPU section."""
    pay = pays(rows)
    out = ['<section id="gpu"><h2>GPU: time split and 2:4 evidence</h2>', f'<p class="muted">{e(EXPLANATION)}</p>',
           sortable_table(CELL_HEADS, [cell_cells(r) for r in rows])]
    if pay:
        out += ["<h3>Where 2:4 pays (GPU compute, median)</h3>", sortable_table(PAY_HEADS, [pay_cells(p) for p in pay]),
                "<ul>" + "".join(f"<li>{e(t)}</li>" for t in pays_text(pay)) + "</ul>"]
    kernels = _kernel_lines(rows)
    if kernels:
        out += ["<h3>Kernels per converted layer</h3>",
                '<ul class="kernels">' + "".join(f"<li><code>{e(k)}</code> {e(t)}</li>" for k, t in kernels) + "</ul>"]
    out.append("</section>")
    return "\n".join(out)
