"""Report rows computed from stored cells: one place for every derived number a report shows.

Each row's reference is the dense fp32 cell of the same model, backend, batch and target (the dense
cell of the row's own precision where no fp32 one ran): speedup is the reference's p50 over the row's
p50 and the accuracy delta is in percentage points, so an int8 row shows what quantising gained and
lost against the model it came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgebench.bench.contracts.evidence import Delegation, Evidence
from edgebench.bench.contracts.flags import Flag, has
from edgebench.bench.contracts.identity import CellFields, CellId
from edgebench.bench.store import CellRecord, RunRecord, Store
from edgebench.reports.gpu import GpuRow, gpu_rows
from edgebench.reports.robustness import RobustnessRow, robustness_rows

REFERENCE_RECIPE = "dense"
LEGACY_REFERENCE = "the dense PyTorch model"  # what results stored before fidelity named its reference compared against


@dataclass
class Row(CellFields):
    status: str
    error: str | None = None
    is_reference: bool = False  # the dense cell other rows of its model/backend/batch are measured against
    threads: int | None = None
    n: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    cov: float | None = None
    iqr_ratio: float | None = None  # IQR / median: the robust dispersion the high-variance warning reads
    mad_ms: float | None = None
    outliers: str | None = None  # pytest-benchmark's "A;B": samples beyond 1 std from the mean; beyond 1.5 IQR
    throughput_ips: float | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    peak_rss_mib: float | None = None
    peak_rss_delta_mib: float | None = None
    peak_uss_mib: float | None = None
    size_bytes: int | None = None
    params: int | None = None
    nonzero_params: int | None = None
    sparsity: float | None = None
    weight_sparsity: float | None = None
    macs: int | None = None
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    export_max_abs_diff: float | None = None
    # Why a measured cell's accuracy is not valid (its outputs were NaN/Inf: flag nan-outputs); top1,
    # top5 and the fidelity numbers are then None and the reports show it as a failure, never as "-".
    accuracy_error: str | None = None
    # What agreement and the logit diffs compare against (Fidelity.reference); independent_reference is
    # False where that is the cell's own file on the same runtime: no fidelity number is shown then.
    fidelity_reference: str | None = None
    independent_reference: bool | None = None
    other_cpu_share: float | None = None
    speedup_p50: float | None = None
    top1_delta_pts: float | None = None
    # Energy per item where the target has a total input power rail (tegrastats VDD_IN / POM_5V_IN,
    # NVML): (mean power while measuring - idle power before the cell) x latency / batch.
    energy_mj_per_item: float | None = None
    # The device while the cell ran (targets/samplers.py); None where the target exposes nothing.
    contended: bool | None = None
    attempts: int | None = None  # measurements made: more than 1 when a contended cell was measured again
    attempt_other_shares: list[float | None] = field(default_factory=list)  # each attempt's other-CPU share
    quiet_wait_s: float | None = None  # the quiet gate's wait before measuring
    temp_start_c: float | None = None
    temp_max_c: float | None = None
    throttled: bool | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    cooldown_wait_s: float | None = None
    power_mw: float | None = None
    # The input the timed loop ran on, as the backend took it (batch first), and its layout: a model given
    # as a file may have dynamic dimensions, whose size then comes from the dataset (input_size).
    input_shape: list[int] | None = None
    input_layout: str | None = None
    given_file: str | None = None  # the user's .onnx/.tflite this model is, when it is one
    # The cell's warnings: the worker's flags, then what the report reads from the evidence (sparse path,
    # zeros run dense, operators left off the delegate). Last, so the files list them as their last column.
    flags: list[Flag] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """The flags' texts, for display; code that decides anything reads :attr:`flags`."""
        return [f.text for f in self.flags]

    @property
    def is_dense(self) -> bool:
        """The unpruned model (at any precision): the 0% point of every sparsity curve."""
        return self.recipe == REFERENCE_RECIPE

    @classmethod
    def columns(cls) -> list[str]:
        """The names of :meth:`to_dict`'s keys, in order (the columns of cells.csv)."""
        return ["warnings" if f.name == "flags" else f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """The row as data for report.json and cells.csv: every field, the flags as their texts (``warnings``)."""
        data = asdict(self)
        del data["flags"]
        data["warnings"] = self.warnings
        return data


def _row(cell: CellRecord) -> Row:
    row = Row(cell.cell_key, *CellId.of(cell).parts(), cell.status, cell.error, threads=cell.options.get("threads"))
    model = cell.facts.get("model", {})
    art = cell.facts.get("artifact", {})
    row.params, row.nonzero_params, row.macs = model.get("params"), model.get("nonzero_params"), model.get("macs")
    row.sparsity, row.weight_sparsity = model.get("sparsity"), model.get("weight_sparsity")
    row.size_bytes = art.get("size_bytes")
    row.export_max_abs_diff = art.get("export_check", {}).get("max_abs_diff")
    row.given_file = model.get("given_file")
    r = cell.result
    if r is None or r.status != "ok":
        return row
    if r.latency:
        lat = r.latency
        row.n, row.p50_ms, row.p90_ms, row.p95_ms, row.p99_ms = lat.n, lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms
        row.mean_ms, row.min_ms, row.max_ms, row.std_ms, row.cov, row.throughput_ips = lat.mean_ms, lat.min_ms, lat.max_ms, lat.std_ms, lat.cov, lat.throughput_ips
        row.iqr_ratio, row.mad_ms, row.outliers = lat.iqr_ratio, lat.mad_ms, lat.outliers
    row.load_ms = r.load_s * 1e3 if r.load_s is not None else None
    row.first_inference_ms = r.first_inference_s * 1e3 if r.first_inference_s is not None else None
    if r.memory:
        row.peak_rss_mib, row.peak_rss_delta_mib, row.peak_uss_mib = r.memory.peak_rss_mib, r.memory.peak_rss_delta_mib, r.memory.peak_uss_mib
    if r.accuracy:
        row.top1, row.top5 = r.accuracy.top1, r.accuracy.top5
    if r.fidelity:
        row.fidelity_reference = r.fidelity.reference or LEGACY_REFERENCE
        row.independent_reference = r.fidelity.independent
        if r.fidelity.independent:  # a file compared with itself on its own runtime says nothing about fidelity
            row.agreement, row.max_abs_diff, row.mean_abs_diff = r.fidelity.top1_agreement, r.fidelity.max_abs_diff, r.fidelity.mean_abs_diff
    if has(r.flags, "nan-outputs"):
        row.accuracy_error = "NaN/Inf outputs"
    if r.contention:
        row.other_cpu_share, row.contended = r.contention.other_cpu_share, r.contention.contended
        row.attempts, row.attempt_other_shares = r.contention.attempts, list(r.contention.attempt_other_shares)
        row.quiet_wait_s = r.contention.quiet_wait_s
    _device_fields(row, r.device, r.energy_mj_per_inference)
    if r.evidence is not None:
        row.input_shape, row.input_layout = r.evidence.input_shape, r.evidence.input_layout
    row.flags = list(r.flags) + evidence_flags(row, r.evidence)
    return row


def _device_fields(row: Row, device: dict[str, Any] | None, energy: float | None) -> None:
    row.energy_mj_per_item = energy
    if not device:
        return
    row.temp_start_c, row.temp_max_c = device.get("temp_start_c"), device.get("temp_max_c")
    row.throttled = device.get("throttled")
    row.throttle_reasons = list(device.get("throttle_reasons") or [])
    row.cooldown_wait_s = (device.get("cooldown") or {}).get("waited_s")
    row.power_mw = device.get("measure_power_mw")


def device_line(row: Row) -> str:
    """One line on the device during the cell: temperature, throttling, other load, cool-down, energy."""
    parts = []
    if row.temp_max_c is not None:
        start = f"{row.temp_start_c:.1f} -> " if row.temp_start_c is not None else ""
        parts.append(f"temperature {start}max {row.temp_max_c:.1f} C")
    else:
        parts.append("temperature not available")
    if row.throttled is None:
        parts.append("throttling not observed (no sensor)")
    else:
        parts.append("THROTTLED (" + "; ".join(row.throttle_reasons) + ")" if row.throttled else "not throttled")
    if row.other_cpu_share is not None:
        parts.append(f"other processes {row.other_cpu_share:.1%} CPU" + (" - CONTENDED" if row.contended else ""))
    if row.cooldown_wait_s:
        parts.append(f"cool-down wait {row.cooldown_wait_s:.0f} s")
    if row.power_mw is not None:
        parts.append(f"{row.power_mw / 1000:.2f} W")
    if row.energy_mj_per_item is not None:
        parts.append(f"{row.energy_mj_per_item:.3f} mJ/item")
    return ", ".join(parts)


def top1_text(row: Row, spec: str = ".2%") -> str:
    """A measured row's top-1 as the tables show it: failed (why) when its accuracy is not valid."""
    if row.accuracy_error:
        return f"FAILED ({row.accuracy_error})"
    return "-" if row.top1 is None else format(row.top1, spec)


def agreement_text(row: Row) -> str:
    """A measured row's agreement with its reference, or why there is none to show."""
    if row.accuracy_error:
        return f"FAILED ({row.accuracy_error})"
    if row.independent_reference is False:
        return "no independent reference"
    return "-" if row.agreement is None else format(row.agreement, ".2%")


def fidelity_reference_text(row: Row) -> str:
    """What a row's fidelity numbers compare against, said so when they compare nothing."""
    if row.accuracy_error:
        return f"none valid: {row.accuracy_error}"
    if row.independent_reference is False:
        return f"no independent reference: the cell runs the same file on the same runtime as its reference ({row.fidelity_reference})"
    return row.fidelity_reference or "-"


def remeasure_notes(rows: list[Row]) -> list[tuple[str, str]]:
    """(cell key, note) for every measured cell the quiet gate touched: measured again because it came
    out contended (``measure.remeasure_contended``), or still contended, hence excluded from wins and
    regression verdicts."""
    out = []
    for r in rows:
        tries = r.attempts or 1
        if r.status != "ok" or (tries == 1 and not r.contended):
            continue
        shares = ", ".join("?" if v is None else f"{v:.0%}" for v in r.attempt_other_shares)
        seen = f"{tries} attempts (other processes {shares} of the CPU)" if tries > 1 else "measured once"
        verdict = ("still contended: excluded from wins and regression verdicts" if r.contended
                   else "kept the uncontended attempt")
        out.append((r.cell_key, f"{seen}; {verdict}"))
    return out


def evidence_flags(row: Row, evidence: Evidence | None) -> list[Flag]:
    """What the evidence of a measured cell warns about: weights stored for a sparse kernel path
    (whether this CPU can take it, LiteRT/XNNPACK), else zeros stored and run dense; and operators
    left outside the delegate."""
    out = []
    gpu_sparse = (evidence.details or {}).get("sparse_layers") if evidence is not None else None
    if evidence is not None and evidence.sparse_path:
        out.append(Flag("sparse-path", f"sparse-path: {evidence.sparse_path}"))
    elif gpu_sparse is not None:  # torch-cuda: layers converted to 2:4 tensors, and the kernels they ran
        if flag := converted_sparse_flag(row, gpu_sparse):
            out.append(flag)
    elif (row.weight_sparsity or 0) >= 0.05 and not (evidence is not None and evidence.sparse_kernels):
        # sparse kernels unknown (None) or no evidence at all count as dense, as they always did: a backend
        # that runs sparse kernels says so
        out.append(Flag("sparse-not-used", f"sparse-not-used: {row.weight_sparsity:.0%} zero weights stored and run dense by {row.backend}; "
                                           "no speedup expected from them"))
    delegation = _delegation_warning(evidence.delegation if evidence is not None else None)
    if delegation:
        out.append(delegation)
    if fallback := int8_fallback_flag(evidence):
        out.append(fallback)
    return out


def converted_sparse_flag(row: Row, layers: dict[str, Any]) -> Flag | None:
    """``sparse-not-used`` for a GPU cell whose zeros ran dense: converted 2:4 layers whose profiled
    kernels were dense, or zeros in a model none of whose layers could be converted."""
    converted, ran = int(layers.get("converted") or 0), layers.get("sparse_ran")
    if converted == 0:
        if (row.weight_sparsity or 0) < 0.05:
            return None
        return Flag("sparse-not-used", f"sparse-not-used: {row.weight_sparsity:.0%} zero weights, but no layer qualified for "
                                       f"2:4 sparse tensors on {row.backend} (the conversion plan in the evidence says why): all ran dense")
    dense = layers.get("dense_ran") or []
    if ran is None or not dense:  # unrecognised kernels are unknown, never called dense
        return None
    names = ", ".join(dense[:8]) + (", ..." if len(dense) > 8 else "")
    return Flag("sparse-not-used", f"sparse-not-used: sparse kernels ran in {ran} of {converted} {layers.get('noun') or 'converted'} layers; "
                                   f"dense kernels in {names}")


def int8_fallback_flag(evidence: Evidence | None) -> Flag | None:
    """``int8-not-used`` for an int8 engine whose weighted layers ran partly in fp16/fp32 (TensorRT)."""
    names = ((evidence.details or {}).get("int8_fallback") if evidence is not None else None) or []
    if not names:
        return None
    weighted = ((evidence.details or {}).get("layer_summary") or {}).get("weighted")
    of = f" of {weighted}" if weighted else ""
    return Flag("int8-not-used", f"int8-not-used: {len(names)}{of} weighted layers ran in fp16/fp32 ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")


def _delegation_warning(delegation: Delegation | None) -> Flag | None:
    """``ops not delegated`` when operators ran outside the backend's accelerator/delegate, unless the
    user asked for no delegate (``expected``: the built-in kernels are then the point)."""
    if delegation is None or delegation.expected or not delegation.undelegated:
        return None
    und = delegation.undelegated
    names = sorted({str(o) for o in und})
    more = ", ..." if len(names) > 8 else ""
    return Flag("ops-not-delegated", f"ops not delegated: {len(und)} op(s) run outside the delegate ({', '.join(names[:8])}{more})")


def _reference_key(row: Row, precision: str) -> tuple[str, tuple[str, str, str, int]]:
    """(target, (model, backend, precision, batch)): where a row's dense reference is looked up."""
    return row.target, replace(row.id, precision=precision).measurement


def rows_for(cells: list[CellRecord]) -> list[Row]:
    """Rows with speedup and accuracy delta filled in against each row's dense reference."""
    rows = [_row(c) for c in cells]
    dense = {_reference_key(r, r.precision): r for r in rows if r.is_dense and r.status == "ok"}
    for row in rows:
        ref = dense.get(_reference_key(row, "fp32")) or dense.get(_reference_key(row, row.precision))
        if ref is None:
            continue
        ref.is_reference = True
        if row.status != "ok":
            continue
        if ref.p50_ms and row.p50_ms:
            row.speedup_p50 = ref.p50_ms / row.p50_ms
        if ref.top1 is not None and row.top1 is not None:
            row.top1_delta_pts = (row.top1 - ref.top1) * 100
    return rows


def accuracy_reference(row: Row, rows: list[Row]) -> tuple[Row | None, str]:
    """The dense row a candidate's accuracy drop is measured against, and how it was chosen.

    Preferred: the dense cell of the same target, model and backend at full precision (fp32) and the same
    batch, so quantisation loss counts as a drop too; then the same backend at another batch or
    precision; then dense on another backend (said so). ``(None, reason)`` when no dense cell ran.
    """
    dense = [r for r in rows if r.is_reference and r.status == "ok" and r.top1 is not None
             and r.target == row.target and r.model == row.model]
    if not dense:
        return None, f"no dense reference of {row.model} ran on target {row.target}"

    def rank(r: Row) -> tuple[int, int, int, int]:
        return (r.backend != row.backend, r.precision != "fp32", r.precision != row.precision, r.batch != row.batch)

    ref = min(dense, key=rank)
    if ref.backend == row.backend:
        how = f"dense on {ref.backend}" + (f" {ref.precision}" if ref.precision != row.precision else "")
    else:
        how = f"dense on {ref.backend} (no dense {row.backend} cell ran)"
    return ref, how


def samples_dropped_note(run: RunRecord) -> str | None:
    """What a report says, once, about a run whose raw samples ``edgebench gc`` dropped (a summarised run:
    its cells keep their stored p50/p90/p99, but nothing can be resampled); None while the samples are kept."""
    when = run.samples_dropped_at
    if when is None:
        return None
    return f"raw samples dropped by edgebench gc on {when:%Y-%m-%d}: intervals and samples.npz are not available"


def by_target(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(row.target, []).append(row)
    return out


@dataclass
class RunReport:
    run: RunRecord
    environments: dict[str, dict[str, Any]]
    rows: list[Row]
    samples: dict[str, list[int]] = field(default_factory=dict)  # cell key -> latency samples (ns), when loaded
    tracebacks: dict[str, str] = field(default_factory=dict)  # cell key -> the worker's traceback of a failed cell
    # recipe name -> its full definition (Recipe.model_dump()) as the store recorded it; empty for stores
    # written before recipes were stored with their cells (readers then resolve the run's suite)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # cell key -> samples per worker process, in order (CellResult.process_samples), when loaded with the
    # samples; a cell measured in one process (or stored before this was kept) has none
    process_samples: dict[str, list[int]] = field(default_factory=dict)
    # one row per (model, recipe) whose cells carry robustness facts (PyTorch fp32 on the host; reports/robustness.py)
    robustness: list[RobustnessRow] = field(default_factory=list)
    # one row per GPU cell (a time split measured with CUDA events: torch-cuda; reports/gpu.py)
    gpu: list[GpuRow] = field(default_factory=list)

    @property
    def samples_dropped(self) -> str | None:
        """Why this run has no samples to resample (:func:`samples_dropped_note`), or None."""
        return samples_dropped_note(self.run)

    def to_dict(self) -> dict[str, Any]:
        run = asdict(self.run)
        for k in ("created_at", "finished_at", "samples_dropped_at"):
            run[k] = run[k].isoformat() if run.get(k) else None
        return {
            "run": run,
            "environments": self.environments,
            "targets": {t: [r.to_dict() for r in rs] for t, rs in by_target(self.rows).items()},
            "failures": [{"cell": r.cell_key, "status": r.status, "reason": r.error} for r in self.rows if r.status != "ok"],
            "robustness": [r.to_dict() for r in self.robustness],
            "gpu": [r.to_dict() for r in self.gpu],
        }


def load(store: Store, run_id: str, with_samples: bool = False) -> RunReport:
    """A stored run's rows; ``with_samples`` also loads every latency sample (for plots and statistics)."""
    run = store.run(run_id)
    cells = store.cells(run.id, with_samples=with_samples)
    samples = {c.cell_key: list(c.result.samples_ns) for c in cells if c.result and c.result.samples_ns} if with_samples else {}
    tracebacks = {c.cell_key: c.result.traceback for c in cells if c.status != "ok" and c.result and c.result.traceback}
    recipes = {c.recipe: c.recipe_def for c in cells if c.recipe_def}
    processes = {k: list(c.result.process_samples) for c in cells if (k := c.cell_key) in samples and c.result.process_samples}
    return RunReport(run, store.environments(run.id), rows_for(cells), samples, tracebacks, recipes, processes, robustness_rows(cells), gpu_rows(cells))
