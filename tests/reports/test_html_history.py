"""The HTML report's History section: present with earlier runs (chart, change points), absent without."""

from __future__ import annotations

import datetime as dt

from edgebench.bench.store import RunRecord, Store
from edgebench.reports import render
from tests_support import ar1_samples, cell_with


def add(store: Store, i: int, level: float) -> str:
    rid = f"20261101-0200{i:02d}-abcd"
    store.create_run(RunRecord(rid, "nightly", "s.yaml", "name: nightly\n", "finished",
                               dt.datetime(2026, 11, 1 + i, 2, 0, tzinfo=dt.timezone.utc), git_commit=f"commit{i:02d}"))
    store.add_environment(rid, "local", {"cpu_model": "X"})
    store.add_cell(rid, cell_with(ar1_samples(level, 300, seed=i), contended=(i == 2)))
    store.finish_run(rid, "finished", {"cells_ok": 1})
    return rid


def test_history_section_with_a_change_point(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    ids = [add(store, i, 0.5 if i < 8 else 0.6) for i in range(14)]
    html = (render.write(store, ids[-1], tmp_path / "reports") / "report.html").read_text()
    assert '<section id="history">' in html and 'href="#history"' in html
    assert 'id="history-local-b1"' in html  # one chart for target local, batch 1
    assert f"from run {ids[8]} (commit commit08)" in html  # the step, dated to its first run
    assert "left out of the fit" in html  # the contended night is shown hollow
    # an earlier run's report only sees the history up to that run: no step yet
    early = (render.write(store, ids[5], tmp_path / "reports") / "report.html").read_text()
    assert '<section id="history">' in early and "No change point" in early


def test_no_history_section_for_a_first_run(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    rid = add(store, 0, 0.5)
    html = (render.write(store, rid, tmp_path / "reports") / "report.html").read_text()
    assert 'id="history"' not in html
