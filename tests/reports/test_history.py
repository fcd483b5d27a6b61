"""reports/history.py: change points on synthetic nightly series (ruptures PELT, L1 cost on log values)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from edgebench.bench.store import RunRecord, Store
from edgebench.reports import history
from tests_support import ar1_samples, cell_with


def nightly(seed: int, n: int = 30, step_at: int | None = 18, step: float = 1.10, noise: float = 0.02, blips: dict[int, float] | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = 0.5 * np.exp(rng.normal(0, noise, n))
    if step_at is not None:
        y[step_at:] *= step
    for i, f in (blips or {}).items():
        y[i] *= f
    return y


def test_a_real_step_is_dated_to_the_run_where_it_started():
    exact = sum(history.change_points(nightly(seed, blips={8: 1.5})) == [18] for seed in range(50))
    assert exact >= 45  # a +10% step in 2% noise, with a one-night +50% blip elsewhere


def test_one_or_two_night_blips_are_not_steps():
    flagged = sum(bool(history.change_points(nightly(seed, step_at=None, blips={12: 1.6}))) for seed in range(50))
    flagged += sum(bool(history.change_points(nightly(seed, step_at=None, blips={5: 1.4, 6: 1.4}))) for seed in range(50))
    assert flagged == 0


def test_a_step_below_the_minimum_effect_is_merged_away():
    y = nightly(1, step=1.03, noise=0.002)  # a clean 3% step
    assert history.change_points(y, min_effect=0.05) == []
    assert history.change_points(y, min_effect=0.01) == [18]


def test_short_series_have_no_change_points():
    assert history.change_points([1.0, 2.0, 2.0, 2.0, 2.0]) == []


def test_history_from_the_store_dates_the_step_to_its_run(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    t0 = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.timezone.utc)
    levels = nightly(7, blips={9: 1.5})
    for i, level in enumerate(levels):
        rid = f"2026{i:04d}"
        store.create_run(RunRecord(rid, "nightly", "s.yaml", "", "finished", t0 + dt.timedelta(days=i), git_commit=f"c{i:03d}"))
        store.add_cell(rid, cell_with(ar1_samples(float(level), 200, seed=i), contended=(i == 4)))
    h = history.load(store, "small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert len(h.points) == 30
    assert [cp.run_id for cp in h.change_points] == ["20260018"]
    cp = h.change_points[0]
    assert cp.git_commit == "c018" and cp.created_at.startswith("2026-10-19")
    assert 1.05 < cp.ratio < 1.16
    assert not h.points[4].used and "contended" in h.points[4].disturbed  # shown, not fitted
    assert {p.segment for p in h.points[:18] if p.used} == {0} and {p.segment for p in h.points[18:]} == {1}
    assert "1 contended/throttled run(s)" in h.notes[0]
    d = h.to_dict()
    assert d["change_points"][0]["run_id"] == "20260018" and d["change_points"][0]["ratio"] == cp.ratio


def test_label_is_the_cell_key():
    from dataclasses import asdict

    from edgebench.bench.contracts.identity import CellId

    cell = CellId("small_cnn", "dense", "onnxruntime", "fp32", 8, "board")
    h = history.History(asdict(cell), "p50")
    assert h.id == cell and h.label == "small_cnn/dense/onnxruntime/fp32/b8/board"
