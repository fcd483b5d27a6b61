"""What the reports say about the quiet gate and dispersion: re-measured and still-contended cells
(Markdown and HTML), the robust dispersion and outlier columns beside the CoV (tables, JSON, CSV)."""

from __future__ import annotations

import csv
import dataclasses
import json

from edgebench.reports import render
from edgebench.reports.tables import remeasure_notes, rows_for

from conftest import finish, new_run, ok_cell, samples_ns

RUN = "20261201-120000-9a1e"


def _cells():
    quiet_again = ok_cell("small_cnn", "dense", "onnxruntime", 1, samples_ns(1.0, 300, 1), 0.97)
    quiet_again.result.contention = dataclasses.replace(quiet_again.result.contention, attempts=2, attempt_other_shares=[0.62, 0.01])
    stuck = ok_cell("small_cnn", "l1-unstructured-50", "onnxruntime", 1, samples_ns(1.0, 300, 2), 0.97, contended=True)
    stuck.result.contention = dataclasses.replace(stuck.result.contention, attempts=3, attempt_other_shares=[0.5, 0.4, 0.3])
    once = ok_cell("small_cnn", "channel-l2-50", "onnxruntime", 1, samples_ns(0.5, 300, 3), 0.95)
    return [quiet_again, stuck, once]


def test_remeasure_notes_name_the_attempts_and_what_was_kept():
    notes = dict(remeasure_notes(rows_for(_cells())))
    assert notes == {
        "small_cnn/dense/onnxruntime/fp32/b1/local": "2 attempts (other processes 62%, 1% of the CPU); kept the uncontended attempt",
        "small_cnn/l1-unstructured-50/onnxruntime/fp32/b1/local":
            "3 attempts (other processes 50%, 40%, 30% of the CPU); still contended: excluded from wins and regression verdicts",
    }  # the cell measured once, uncontended, is not listed


def test_reports_list_the_quiet_gate_and_show_robust_dispersion(tmp_path):
    store = new_run(tmp_path, RUN)
    cells = _cells()
    finish(store, RUN, cells)
    out = render.write(store, RUN, tmp_path / "reports")
    md = (out / "report.md").read_text()
    assert "Quiet gate: cells measured again because other processes used the CPU" in md
    assert "- `small_cnn/l1-unstructured-50/onnxruntime/fp32/b1/local`: 3 attempts" in md
    assert "| CoV | IQR/med |" in md
    html = (out / "report.html").read_text()
    assert "quiet gate</span> 2 cell(s)" in html and "<th title=\"click to sort\">outliers</th>" in html
    lat = cells[2].result.latency
    data = json.loads((out / "report.json").read_text())
    [row] = [r for r in data["targets"]["local"] if r["recipe"] == "channel-l2-50"]
    assert row["cov"] == lat.cov and row["iqr_ratio"] == lat.iqr_ratio and row["outliers"] == lat.outliers and row["attempts"] == 1
    with open(out / "cells.csv") as f:
        header = next(csv.reader(f))
    assert {"cov", "iqr_ratio", "mad_ms", "outliers", "attempts", "attempt_other_shares", "quiet_wait_s"} <= set(header)
