"""Retention (bench/store_gc.py): which runs keep their raw samples and why, what dropping removes, and that a
summarised run still reads (summaries, history) while its samples are gone. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgebench.bench import store_gc
from edgebench.bench.contracts.results import CellResult, LatencyStats
from edgebench.bench.store import CellRecord, RunRecord, Store
from edgebench.bench.store_gc import GcPlan, apply_gc, plan_gc

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
REV4_STORE = Path(__file__).parent / "data" / "store-rev0004.sqlite"


def add_run(s: Store, run_id: str, day: int, suite: str = "default", status: str = "finished", samples: int = 100) -> None:
    """A run with two ok cells of ``samples`` samples each and one skipped cell."""
    s.create_run(RunRecord(run_id, suite, f"/x/{suite}.yaml", "models: [m]\n", "running", T0 + dt.timedelta(days=day)))
    for recipe in ("dense", "pruned"):
        lat = LatencyStats(samples, 1.0, 1.0, 0.0, 0.0, 1.0 + day, 2.0, 2.0, 3.0, 3.0, 1000.0)
        s.add_cell(run_id, CellRecord(f"m/{recipe}/onnxruntime/fp32/b1/local", "m", recipe, "onnxruntime", "fp32", 1, "local", "ok",
                                      result=CellResult("ok", samples_ns=[20_000 + day * 10 + i % 7 for i in range(samples)], latency=lat)))
    s.add_cell(run_id, CellRecord("m/dense/torch/int8/b1/local", "m", "dense", "torch", "int8", 1, "local", "skipped", error="no int8"))
    if status != "running":
        s.finish_run(run_id, status, {})


@pytest.fixture
def store(store_url) -> Store:
    """default: d0..d4 (d4 newest); other: o0, o1; a fit run of default (f0, newest of all); r0 still running."""
    s = Store(store_url)
    for i in range(5):
        add_run(s, f"d{i}", i)
    add_run(s, "o0", 1, suite="other")
    add_run(s, "o1", 2, suite="other")
    add_run(s, "f0", 9, status="fit")
    add_run(s, "r0", 0, status="running")  # the oldest of all, yet never dropped
    return s


def test_keep_last_counts_per_suite_newest_first(store):
    plan = plan_gc(store, keep_last=2)
    assert plan.drop == ["d0", "d1", "d2"]  # oldest first
    assert plan.keep == {
        "d3": "one of the last 2 runs of suite 'default'", "d4": "one of the last 2 runs of suite 'default'",
        "o0": "one of the last 2 runs of suite 'other'", "o1": "one of the last 2 runs of suite 'other'",
        "f0": "one of the last 2 fit runs of suite 'default'",  # a fit's runs never push a night out
        "r0": "still running",
    }
    assert plan.samples == 3 * 2 * 100
    with store.engine.connect() as conn:
        size = conn.execute(sa.text("SELECT sum(length(data)) FROM cell_samples cs JOIN cells c ON c.id = cs.cell_id "
                                    "WHERE c.run_id IN ('d0', 'd1', 'd2')")).scalar()
    assert plan.blob_bytes == size > 0
    assert plan_gc(store, keep_last=10).drop == []


def test_baselines_keep_their_runs_unless_told_not_to(store):
    store.set_baseline("nightly", "d0", "local", {"cpu": "x"})
    store.set_baseline("nightly", "d0", "pi4", {"cpu": "y"})
    store.set_baseline("release", "d1", "local", {"cpu": "x"})
    plan = plan_gc(store, keep_last=1)
    assert plan.drop == ["o0", "d2", "d3"]
    assert plan.keep["d0"] == "baseline 'nightly' for target 'local'; baseline 'nightly' for target 'pi4'"
    assert plan.keep["d1"] == "baseline 'release' for target 'local'"
    assert plan_gc(store, keep_last=1, keep_baselines=False).drop == ["d0", "d1", "o0", "d2", "d3"]


def test_dropping_keeps_summaries_and_history_and_marks_the_run(store):
    plan = plan_gc(store, keep_last=2)
    result = apply_gc(store, plan)
    assert (result.runs, result.samples, result.blob_bytes) == (3, plan.samples, plan.blob_bytes)
    for run_id in ("d0", "d1", "d2"):
        run = store.run(run_id)
        assert run.samples_dropped_at is not None and run.samples_dropped_at.tzinfo is not None
        cells = store.cells(run_id)
        assert len(cells) == 3 and all(c.samples_dropped for c in cells)
        ok = [c for c in cells if c.status == "ok"]
        assert all(c.result.samples_ns == [] and c.result.latency.p50_ms == 1.0 + int(run_id[1]) for c in ok)
    kept = store.cells("d3")
    assert not any(c.samples_dropped for c in kept) and [len(c.result.samples_ns) for c in kept if c.result] == [100, 100]
    history = [(r, c) for r, c in store.cell_history("m", "dense", "onnxruntime", "fp32", 1, "local") if r.suite_name == "default"]
    assert [r.id for r, _ in history] == ["d0", "r0", "d1", "d2", "d3", "d4"]  # summarised runs stay in the history
    assert [c.result.latency.p50_ms for _, c in history] == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [c.samples_dropped for _, c in history] == [True, False, True, True, False, False]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cell_samples")).scalar() == 2 * (9 - 3)
        assert conn.execute(sa.text("SELECT count(*) FROM cells")).scalar() == 3 * 9  # every cell row stays
    again = plan_gc(store, keep_last=2)
    assert again.drop == [] and not {"d0", "d1", "d2"} & set(again.keep)  # summarised runs are neither
    assert apply_gc(store, plan).runs == 0  # applying the old plan twice drops nothing more


def test_a_run_resumed_since_the_plan_is_left_alone(store):
    plan = plan_gc(store, keep_last=2)
    store.reopen_run("d1")  # `edgebench run --resume d1` started after the plan was printed
    result = apply_gc(store, plan)
    assert result.runs == 2 and store.run("d1").samples_dropped_at is None
    assert [len(c.result.samples_ns) for c in store.cells("d1") if c.result] == [100, 100]


def test_a_cell_measured_after_gc_keeps_its_samples(store):
    apply_gc(store, plan_gc(store, keep_last=2))
    store.add_cell("d0", CellRecord("m/new/onnxruntime/fp32/b1/local", "m", "new", "onnxruntime", "fp32", 1, "local", "ok",
                                    result=CellResult("ok", samples_ns=[1, 2, 3])))
    by_recipe = {c.recipe: c for c in store.cells("d0") if c.backend == "onnxruntime"}
    assert by_recipe["new"].result.samples_ns == [1, 2, 3] and not by_recipe["new"].samples_dropped
    assert by_recipe["dense"].samples_dropped
    assert {c.recipe: c.samples_dropped for c in store.cells("d0", with_samples=False) if c.backend == "onnxruntime"} == {
        "dense": True, "pruned": True, "new": False}


def test_an_interrupted_gc_loses_nothing_it_was_not_told_to_drop(store, monkeypatch):
    """Ctrl-C while the second run's blobs are being deleted: the first run is done, the second untouched."""
    deletes = []

    def interrupt_second_delete(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("DELETE FROM CELL_SAMPLES"):
            deletes.append(statement)
            if len(deletes) == 2:
                raise KeyboardInterrupt

    sa.event.listen(store.engine, "after_cursor_execute", interrupt_second_delete)
    with pytest.raises(KeyboardInterrupt):
        apply_gc(store, plan_gc(store, keep_last=2))
    sa.event.remove(store.engine, "after_cursor_execute", interrupt_second_delete)
    assert store.run("d0").samples_dropped_at is not None
    assert store.run("d1").samples_dropped_at is None  # its transaction rolled back whole
    assert [len(c.result.samples_ns) for c in store.cells("d1") if c.result] == [100, 100]
    assert plan_gc(store, keep_last=2).drop == ["d1", "d2"]  # gc again finishes the job


def test_the_sqlite_file_shrinks_after_vacuum(tmp_path):
    path = tmp_path / "edgebench.sqlite"
    shutil.copy(REV4_STORE, path)
    s = Store(path)  # migrated: rows became blobs, the freed pages are still in the file
    plan = plan_gc(s, keep_last=1, keep_baselines=False)
    assert len(plan.drop) == 1
    result = apply_gc(s, plan)
    assert result.file_bytes_before is not None and result.file_bytes_after < result.file_bytes_before / 2
    assert result.file_bytes_after == path.stat().st_size  # the WAL was folded back in
    no_vacuum = apply_gc(s, GcPlan(), vacuum=False)
    assert no_vacuum.runs == 0 and no_vacuum.file_bytes_before == no_vacuum.file_bytes_after


def test_file_sizes_are_none_on_postgresql(postgres):
    s = Store(postgres.new_database())
    add_run(s, "a", 0)
    add_run(s, "b", 1)
    result = apply_gc(s, plan_gc(s, keep_last=1))
    assert (result.runs, result.samples, result.file_bytes_before, result.file_bytes_after) == (1, 200, None, None)


def test_a_negative_keep_last_is_refused(store):
    with pytest.raises(ValueError, match="keep_last must be 0 or more"):
        plan_gc(store, keep_last=-1)
    assert store_gc.plan_gc(store, keep_last=0, keep_baselines=False).drop == ["d0", "d1", "o0", "d2", "o1", "d3", "d4", "f0"]
