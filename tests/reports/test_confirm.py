"""`check --confirm`: a flagged latency verdict stands only if re-measurements of the cell agree."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edgebench.bench.store import CONFIRMATION, CellRecord, RunRecord, Store
from edgebench.reports import compare as cmp
from edgebench.reports import verdict

from tests_support import ar1_samples, cell_with

CELLS = [("dense", 1, 1.0), ("dense", 8, 6.0), ("l1-unstructured-50", 1, 1.1), ("l1-unstructured-50", 8, 6.4),
         ("channel-l2-50", 1, 0.6), ("channel-l2-50", 8, 3.5)]


def _run(store: Store, run_id: str, minute: int, slower: dict[tuple[str, int], float], seed: int, status: str = "finished") -> None:
    store.create_run(RunRecord(run_id, "default", "suite.yaml", "name: default\n", "running",
                               dt.datetime(2026, 11, 24, 7, minute, tzinfo=dt.timezone.utc)))
    store.add_environment(run_id, "local", {"cpu_model": "Test CPU", "logical_cpus": 2,
                                            "backends": {"onnxruntime": {"available": True, "version": "1.32.0"}}})
    cells = []
    for i, (recipe, batch, ms) in enumerate(CELLS):
        if status == CONFIRMATION and (recipe, batch) not in slower:
            continue  # a confirmation run holds only the flagged cells
        cells.append(cell_with(ar1_samples(ms * slower.get((recipe, batch), 1.0), 300, seed * 100 + i, sd=0.02), recipe=recipe, batch=batch))
    for c in cells:
        store.add_cell(run_id, c)
    store.finish_run(run_id, status, {})


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "edgebench.sqlite")
    _run(store, "base", 0, {}, seed=1)
    _run(store, "head", 1, {("dense", 1): 1.5, ("channel-l2-50", 8): 1.5}, seed=2)
    return store


def test_a_change_seen_again_is_confirmed_and_an_excursion_is_not(tmp_path):
    store = _store(tmp_path)
    th = cmp.Thresholds()
    comp = verdict.run(store, "base", "head", th)
    flagged = {c.cell_key for c in verdict.flagged_for_confirmation(comp)}
    assert flagged == {"small_cnn/dense/onnxruntime/fp32/b1/local", "small_cnn/channel-l2-50/onnxruntime/fp32/b8/local"}
    assert verdict.confirmation_targets(store, comp, "head") == {"head": flagged}

    # The re-measurement: dense b1 is slow again (a real change), channel b8 is back to normal (an excursion).
    _run(store, "again", 2, {("dense", 1): 1.5, ("channel-l2-50", 8): 1.0}, seed=3, status=CONFIRMATION)
    comp = verdict.confirm(store, comp, "base", "head", {"head": ["again"]}, th)
    by_key = {c.cell_key: c for c in comp.cells}
    kept, dropped = by_key["small_cnn/dense/onnxruntime/fp32/b1/local"], by_key["small_cnn/channel-l2-50/onnxruntime/fp32/b8/local"]
    assert kept.verdict == cmp.REGRESSED and "confirmed: 1 of 1 re-measurements reproduce it (regressed x" in kept.metric("latency").reason
    assert dropped.verdict == cmp.INCONCLUSIVE
    assert dropped.metric("latency").reason.startswith("not reproduced: 0 of 1 re-measurements reproduce it (unchanged x")
    assert [c.cell_key for c in comp.regressions()] == ["small_cnn/dense/onnxruntime/fp32/b1/local"]
    assert "--confirm 1: 2 flagged cell(s) re-measured in run(s) again; 1 confirmed, 1 not reproduced" in comp.notes[-1]
    assert "not reproduced" in verdict.markdown(comp)


def test_every_re_measurement_must_agree(tmp_path):
    store = _store(tmp_path)
    th = cmp.Thresholds()
    comp = verdict.run(store, "base", "head", th)
    _run(store, "again1", 2, {("dense", 1): 1.5, ("channel-l2-50", 8): 1.5}, seed=3, status=CONFIRMATION)
    _run(store, "again2", 3, {("dense", 1): 1.5, ("channel-l2-50", 8): 1.0}, seed=4, status=CONFIRMATION)
    comp = verdict.confirm(store, comp, "base", "head", {"head": ["again1", "again2"]}, th)
    assert [c.cell_key for c in comp.regressions()] == ["small_cnn/dense/onnxruntime/fp32/b1/local"]
    dropped = next(c for c in comp.cells if c.recipe == "channel-l2-50" and c.batch == 8)
    assert "1 of 2 re-measurements reproduce it" in dropped.metric("latency").reason


def test_a_re_measurement_that_failed_does_not_confirm(tmp_path):
    store = _store(tmp_path)
    comp = verdict.run(store, "base", "head", cmp.Thresholds())
    store.create_run(RunRecord("broken", "default", "suite.yaml", "name: default\n", "running", dt.datetime(2026, 11, 24, 7, 2, tzinfo=dt.timezone.utc)))
    store.add_cell("broken", CellRecord("small_cnn/dense/onnxruntime/fp32/b1/local", "small_cnn", "dense", "onnxruntime", "fp32", 1, "local",
                                        "failed", error="worker killed by SIGKILL"))
    store.finish_run("broken", CONFIRMATION, {})
    comp = verdict.confirm(store, comp, "base", "head", {"head": ["broken"]}, cmp.Thresholds())
    assert comp.regressions() == []
    cell = next(c for c in comp.cells if c.recipe == "dense" and c.batch == 1)
    assert "broken: failed" in cell.metric("latency").reason


def test_confirmation_runs_are_not_latest_and_not_history(tmp_path):
    store = _store(tmp_path)
    _run(store, "again", 2, {("dense", 1): 1.5}, seed=3, status=CONFIRMATION)
    assert store.resolve("latest") == "head" and store.resolve("latest~1") == "base"
    history = store.cell_history("small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert [run.id for run, _ in history] == ["base", "head"]
    assert store.run("again").status == CONFIRMATION  # still there, by id


def test_a_cell_that_fails_in_head_needs_no_confirmation(tmp_path):
    store = Store(tmp_path / "edgebench.sqlite")
    _run(store, "base", 0, {}, seed=1)
    store.create_run(RunRecord("head", "default", "suite.yaml", "name: default\n", "running", dt.datetime(2026, 11, 24, 7, 1, tzinfo=dt.timezone.utc)))
    store.add_environment("head", "local", {"cpu_model": "Test CPU", "logical_cpus": 2,
                                            "backends": {"onnxruntime": {"available": True, "version": "1.32.0"}}})
    for i, (recipe, batch, ms) in enumerate(CELLS):
        if (recipe, batch) == ("dense", 1):
            store.add_cell("head", CellRecord(f"small_cnn/{recipe}/onnxruntime/fp32/b{batch}/local", "small_cnn", recipe, "onnxruntime", "fp32",
                                              batch, "local", "failed", error="boom"))
        else:
            store.add_cell("head", cell_with(ar1_samples(ms, 300, 200 + i, sd=0.02), recipe=recipe, batch=batch))
    store.finish_run("head", "finished", {})
    comp = verdict.run(store, "base", "head", cmp.Thresholds())
    assert [c.status for c in comp.regressions()] == ["failed-in-head"]
    assert verdict.flagged_for_confirmation(comp) == []


def _lat(verdict_: str, ratio: float, low: float, high: float, p: float) -> cmp.MetricVerdict:
    return cmp.MetricVerdict("latency", verdict_, ratio=ratio, ci_low=low, ci_high=high, p_value=p)


def test_what_counts_as_reproducing_a_change():
    th = cmp.Thresholds()  # alpha 0.01, minimum effect 5%
    first = _lat(cmp.REGRESSED, 1.88, 1.80, 1.95, 1e-9)
    assert verdict.reproduces(first, _lat(cmp.REGRESSED, 1.70, 1.60, 1.80, 1e-9), th)
    # Significant, wholly beyond +5%, more than half the change, but inside the run-to-run bar: reproduced.
    assert verdict.reproduces(first, _lat(cmp.INCONCLUSIVE, 1.67, 1.57, 1.80, 1e-9), th)
    assert not verdict.reproduces(first, _lat(cmp.INCONCLUSIVE, 1.15, 1.10, 1.20, 1e-9), th)  # a real but much smaller change
    assert not verdict.reproduces(first, _lat(cmp.INCONCLUSIVE, 1.08, 0.91, 1.09, 0.86), th)  # noise
    assert not verdict.reproduces(first, _lat(cmp.INCONCLUSIVE, 1.60, 1.04, 2.00, 1e-9), th)  # interval reaches into the band
    assert not verdict.reproduces(first, _lat(cmp.UNCHANGED, 1.00, 0.99, 1.01, 0.5), th)
    faster = _lat(cmp.IMPROVED, 0.60, 0.55, 0.65, 1e-9)
    assert verdict.reproduces(faster, _lat(cmp.INCONCLUSIVE, 0.70, 0.65, 0.75, 1e-9), th)
    assert not verdict.reproduces(faster, _lat(cmp.INCONCLUSIVE, 1.70, 1.60, 1.80, 1e-9), th)  # the other way
