"""Report rows computed from stored cells: one place for every derived number a report shows.

The dense recipe of the same model, backend, precision, batch and target is each row's reference:
speedup is the reference's p50 over the row's p50, and the accuracy delta is in percentage points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgebench.bench.store import CellRecord, RunRecord, Store

REFERENCE_RECIPE = "dense"


@dataclass
class Row:
    cell_key: str
    model: str
    recipe: str
    backend: str
    precision: str
    batch: int
    target: str
    status: str
    error: str | None = None
    is_reference: bool = False
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
    other_cpu_share: float | None = None
    speedup_p50: float | None = None
    top1_delta_pts: float | None = None
    warnings: list[str] = field(default_factory=list)


def _row(cell: CellRecord) -> Row:
    row = Row(cell.cell_key, cell.model, cell.recipe, cell.backend, cell.precision, cell.batch, cell.target, cell.status, cell.error,
              is_reference=cell.recipe == REFERENCE_RECIPE, threads=cell.options.get("threads"))
    model = cell.facts.get("model", {})
    art = cell.facts.get("artifact", {})
    row.params, row.nonzero_params, row.macs = model.get("params"), model.get("nonzero_params"), model.get("macs")
    row.sparsity, row.weight_sparsity = model.get("sparsity"), model.get("weight_sparsity")
    row.size_bytes = art.get("size_bytes")
    row.export_max_abs_diff = art.get("export_check", {}).get("max_abs_diff")
    r = cell.result
    if r is None or r.status != "ok":
        return row
    if r.latency:
        lat = r.latency
        row.n, row.p50_ms, row.p90_ms, row.p95_ms, row.p99_ms = lat.n, lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms
        row.mean_ms, row.min_ms, row.max_ms, row.std_ms, row.cov, row.throughput_ips = lat.mean_ms, lat.min_ms, lat.max_ms, lat.std_ms, lat.cov, lat.throughput_ips
    row.load_ms = r.load_s * 1e3 if r.load_s is not None else None
    row.first_inference_ms = r.first_inference_s * 1e3 if r.first_inference_s is not None else None
    if r.memory:
        row.peak_rss_mib, row.peak_rss_delta_mib, row.peak_uss_mib = r.memory.peak_rss_mib, r.memory.peak_rss_delta_mib, r.memory.peak_uss_mib
    if r.accuracy:
        row.top1, row.top5 = r.accuracy.top1, r.accuracy.top5
    if r.fidelity:
        row.agreement, row.max_abs_diff, row.mean_abs_diff = r.fidelity.top1_agreement, r.fidelity.max_abs_diff, r.fidelity.mean_abs_diff
    if r.contention:
        row.other_cpu_share = r.contention.other_cpu_share
    row.warnings = list(r.warnings)
    if (row.weight_sparsity or 0) >= 0.05 and not r.backend_info.get("sparse_kernels", False):
        row.warnings.append(f"sparse-not-used: {row.weight_sparsity:.0%} zero weights stored and run dense by {row.backend}; no speedup expected from them")
    return row


def _reference_key(row: Row) -> tuple[Any, ...]:
    return (row.target, row.model, row.backend, row.precision, row.batch)


def rows_for(cells: list[CellRecord]) -> list[Row]:
    """Rows with speedup and accuracy delta filled in against each row's dense reference."""
    rows = [_row(c) for c in cells]
    refs = {_reference_key(r): r for r in rows if r.is_reference and r.status == "ok"}
    for row in rows:
        ref = refs.get(_reference_key(row))
        if ref is None or row.status != "ok":
            continue
        if ref.p50_ms and row.p50_ms:
            row.speedup_p50 = ref.p50_ms / row.p50_ms
        if ref.top1 is not None and row.top1 is not None:
            row.top1_delta_pts = (row.top1 - ref.top1) * 100
    return rows


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

    def to_dict(self) -> dict[str, Any]:
        run = asdict(self.run)
        for k in ("created_at", "finished_at"):
            run[k] = run[k].isoformat() if run[k] else None
        return {
            "run": run,
            "environments": self.environments,
            "targets": {t: [asdict(r) for r in rs] for t, rs in by_target(self.rows).items()},
            "failures": [{"cell": r.cell_key, "status": r.status, "reason": r.error} for r in self.rows if r.status != "ok"],
        }


def load(store: Store, run_id: str) -> RunReport:
    run = store.run(run_id)
    return RunReport(run, store.environments(run.id), rows_for(store.cells(run.id, with_samples=False)))
