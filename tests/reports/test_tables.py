"""Report rows (reports/tables.py): speedup and accuracy delta against the right dense reference."""

from __future__ import annotations

import pytest

from edgebench.bench.contracts.evidence import Delegation, Evidence
from edgebench.bench.contracts.results import Accuracy, CellResult, LatencyStats
from edgebench.bench.store import CellRecord
from edgebench.reports.tables import by_target, rows_for


def lat(p50: float) -> LatencyStats:
    return LatencyStats(n=10, min_ms=p50 / 2, mean_ms=p50, std_ms=0.0, cov=0.0, p50_ms=p50, p90_ms=p50 * 1.1,
                        p95_ms=p50 * 1.2, p99_ms=p50 * 1.3, max_ms=p50 * 2, throughput_ips=1000 / p50)


def cell(recipe: str, backend: str, batch: int, p50: float, top1: float, target: str = "local", model: str = "m",
         precision: str = "fp32", sparsity: float = 0.0, sparse_kernels: bool = False, status: str = "ok") -> CellRecord:
    key = f"{model}/{recipe}/{backend}/{precision}/b{batch}/{target}"
    if status != "ok":
        return CellRecord(key, model, recipe, backend, precision, batch, target, status=status, error=f"{status} on purpose",
                          result=CellResult.failed(f"{status} on purpose") if status == "failed" else None)
    result = CellResult("ok", latency=lat(p50), accuracy=Accuracy(360, top1, None), evidence=Evidence(backend, sparse_kernels=sparse_kernels))
    return CellRecord(key, model, recipe, backend, precision, batch, target, status="ok", options={"threads": 2},
                      facts={"model": {"weight_sparsity": sparsity, "params": 100}, "artifact": {"size_bytes": 1234}},
                      result=result)


def by_key(rows):
    return {(r.target, r.recipe, r.backend, r.batch): r for r in rows}


def test_speedup_and_delta_against_the_matching_dense_row():
    cells = [
        cell("dense", "A", 1, p50=4.0, top1=0.90),
        cell("sparse", "A", 1, p50=2.0, top1=0.85, sparsity=0.5),
        cell("dense", "A", 8, p50=10.0, top1=0.91),
        cell("sparse", "A", 8, p50=8.0, top1=0.91, sparsity=0.5),
        cell("dense", "B", 1, p50=1.0, top1=0.92),
        cell("sparse", "B", 1, p50=4.0, top1=0.95, sparsity=0.5),
        cell("dense", "A", 1, p50=100.0, top1=0.50, target="board"),
        cell("sparse", "A", 1, p50=50.0, top1=0.60, target="board", sparsity=0.5),
    ]
    rows = by_key(rows_for(cells))
    # speedup = reference p50 / p50; delta = (top1 - reference top1) in percentage points
    expect = {
        ("local", "sparse", "A", 1): (4.0 / 2.0, -5.0),
        ("local", "sparse", "A", 8): (10.0 / 8.0, 0.0),
        ("local", "sparse", "B", 1): (1.0 / 4.0, 3.0),
        ("board", "sparse", "A", 1): (100.0 / 50.0, 10.0),
    }
    for k, (speedup, delta) in expect.items():
        assert rows[k].speedup_p50 == pytest.approx(speedup), k
        assert rows[k].top1_delta_pts == pytest.approx(delta), k
        assert rows[k].is_reference is False
    for k, r in rows.items():
        if r.recipe == "dense":
            assert r.is_reference is True
            assert r.speedup_p50 == pytest.approx(1.0) and r.top1_delta_pts == pytest.approx(0.0)


def test_other_precision_or_model_is_not_a_reference():
    cells = [
        cell("dense", "A", 1, p50=4.0, top1=0.9, precision="fp16"),
        cell("sparse", "A", 1, p50=2.0, top1=0.8),
        cell("dense", "A", 1, p50=4.0, top1=0.9, model="other"),
    ]
    row = [r for r in rows_for(cells) if r.recipe == "sparse"][0]
    assert row.speedup_p50 is None and row.top1_delta_pts is None


def test_failed_reference_gives_no_speedup_and_failed_rows_keep_their_reason():
    cells = [
        cell("dense", "A", 1, p50=0, top1=0, status="failed"),
        cell("sparse", "A", 1, p50=2.0, top1=0.8),
        cell("sparse", "B", 1, p50=0, top1=0, status="skipped"),
    ]
    rows = by_key(rows_for(cells))
    assert rows[("local", "sparse", "A", 1)].speedup_p50 is None
    failed = rows[("local", "dense", "A", 1)]
    assert failed.status == "failed" and failed.error == "failed on purpose" and failed.p50_ms is None
    skipped = rows[("local", "sparse", "B", 1)]
    assert skipped.status == "skipped" and skipped.error == "skipped on purpose" and skipped.speedup_p50 is None


def test_sparse_not_used_warning():
    cells = [
        cell("dense", "A", 1, p50=1.0, top1=0.9, sparsity=0.0),
        cell("sparse", "A", 1, p50=1.0, top1=0.9, sparsity=0.8),
        cell("sparse", "B", 1, p50=1.0, top1=0.9, sparsity=0.8, sparse_kernels=True),
        cell("tiny", "A", 1, p50=1.0, top1=0.9, sparsity=0.01),
    ]
    rows = by_key(rows_for(cells))
    warned = [w for w in rows[("local", "sparse", "A", 1)].warnings if w.startswith("sparse-not-used")]
    assert len(warned) == 1 and "80%" in warned[0] and "A" in warned[0]
    for k in (("local", "dense", "A", 1), ("local", "sparse", "B", 1), ("local", "tiny", "A", 1)):
        assert not any(w.startswith("sparse-not-used") for w in rows[k].warnings), k


def test_row_fields_come_from_result_and_facts():
    [row] = rows_for([cell("dense", "A", 1, p50=2.0, top1=0.9)])
    assert (row.p50_ms, row.p90_ms, row.n) == (2.0, pytest.approx(2.2), 10)
    assert row.size_bytes == 1234 and row.params == 100 and row.threads == 2 and row.top1 == 0.9


def test_by_target_groups_in_order():
    rows = rows_for([cell("dense", "A", 1, 1, 0.9, target="t2"), cell("dense", "A", 1, 1, 0.9, target="t1"),
                     cell("sparse", "A", 1, 1, 0.9, target="t2")])
    groups = by_target(rows)
    assert list(groups) == ["t2", "t1"]
    assert [r.recipe for r in groups["t2"]] == ["dense", "sparse"]


def test_ops_not_delegated_warning():
    # Count-only and "fully_accelerated: false" shapes (edgebench 0.1 describe() keys) were written by no
    # backend and are gone: a Delegation names each op left outside the delegate.
    from edgebench.reports.tables import _delegation_warning

    assert _delegation_warning(None) is None
    assert _delegation_warning(Delegation("XNNPACK", 40, 40)) is None
    flag = _delegation_warning(Delegation("XNNPACK", 40, 37, 1, ["DEPTHWISE_CONV_2D", "MEAN", "DEPTHWISE_CONV_2D"]))
    assert flag.code == "ops-not-delegated"
    assert flag.text.startswith("ops not delegated: 3 op(s) run outside the delegate (DEPTHWISE_CONV_2D, MEAN)")
    c = cell("dense", "A", 1, p50=1.0, top1=0.9)
    c.result.evidence.delegation = Delegation("XNNPACK", 12, 10, 1, ["MEAN", "CUSTOM"])
    [row] = rows_for([c])
    assert any(w.startswith("ops not delegated: 2") for w in row.warnings)
    assert [f.code for f in row.flags] == ["ops-not-delegated"]


def test_undelegated_ops_are_no_warning_when_the_user_disabled_the_delegate():
    from edgebench.reports.tables import _delegation_warning

    assert _delegation_warning(Delegation("none (built-in kernels)", 12, 0, 0, ["CONV_2D"] * 12, expected=True)) is None
    c = cell("dense", "A", 1, p50=1.0, top1=0.9)
    c.result.evidence.delegation = Delegation("none (built-in kernels)", 12, 0, 0, ["CONV_2D"] * 12, expected=True)
    [row] = rows_for([c])
    assert row.flags == []


def test_evidence_flags_have_codes_and_the_reports_texts():
    sparse = cell("sparse", "A", 1, p50=1.0, top1=0.9, sparsity=0.8)
    path = cell("sparse", "B", 1, p50=1.0, top1=0.9, sparsity=0.8)
    path.result.evidence.sparse_path = "stored sparse (DENSIFY); this x86_64 CPU runs XNNPACK dense"
    rows = by_key(rows_for([sparse, path]))
    [a] = rows[("local", "sparse", "A", 1)].flags
    assert (a.code, a.text) == ("sparse-not-used", "sparse-not-used: 80% zero weights stored and run dense by A; no speedup expected from them")
    [b] = rows[("local", "sparse", "B", 1)].flags
    assert (b.code, b.text) == ("sparse-path", "sparse-path: stored sparse (DENSIFY); this x86_64 CPU runs XNNPACK dense")


def test_row_files_keep_warnings_as_texts_in_the_last_column():
    from edgebench.bench.contracts.flags import Flag

    c = cell("dense", "A", 1, p50=1.0, top1=0.9)
    c.result.flags = [Flag("high-variance", "high variance: CoV 9.0% > 5%")]
    [row] = rows_for([c])
    data = row.to_dict()
    assert list(data)[-1] == "warnings" and "flags" not in data and data["warnings"] == ["high variance: CoV 9.0% > 5%"]
    assert type(row).columns() == list(data)
    assert row.id.key == row.cell_key


def test_accuracy_reference_prefers_same_backend_fp32():
    from edgebench.reports.tables import accuracy_reference

    rows = rows_for([
        cell("dense", "A", 1, p50=1.0, top1=0.90),
        cell("dense", "A", 1, p50=0.5, top1=0.88, precision="int8"),
        cell("dense", "B", 1, p50=1.0, top1=0.91),
        cell("sparse", "A", 8, p50=1.0, top1=0.85, precision="int8"),
        cell("sparse", "C", 1, p50=1.0, top1=0.85),
    ])
    by = {(r.recipe, r.backend, r.precision, r.batch): r for r in rows}
    ref, how = accuracy_reference(by[("sparse", "A", "int8", 8)], rows)
    assert (ref.backend, ref.precision, ref.batch) == ("A", "fp32", 1) and how == "dense on A fp32"
    ref, how = accuracy_reference(by[("sparse", "C", "fp32", 1)], rows)
    assert ref.backend in ("A", "B") and "no dense C cell ran" in how
    assert accuracy_reference(by[("sparse", "C", "fp32", 1)], [r for r in rows if not r.is_reference]) == (None, "no dense reference of m ran on target local")


def test_load_with_samples(tmp_path):
    import datetime as dt

    from edgebench.bench.store import RunRecord, Store
    from edgebench.reports.tables import load

    store = Store(tmp_path / "s.sqlite")
    store.create_run(RunRecord("r1", "u", "/x.yaml", "", "finished", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))
    c = cell("dense", "A", 1, p50=1.0, top1=0.9)
    c.result.samples_ns = [3, 1, 2]
    f = cell("dense", "B", 1, p50=0, top1=0, status="failed")
    f.result.traceback = "Traceback: boom"
    store.add_cell("r1", c)
    store.add_cell("r1", f)
    assert load(store, "r1").samples == {}
    full = load(store, "r1", with_samples=True)
    assert full.samples == {c.cell_key: [3, 1, 2]} and full.tracebacks == {f.cell_key: "Traceback: boom"}
