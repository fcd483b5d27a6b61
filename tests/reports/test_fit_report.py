"""The fit report (reports/fit.py): every section in order, the verdict's wording (within budget, over
budget, an interval too wide, unreachable), escaping in the HTML, one chart per group, fit.json round trip.

The FitResult here is a unit-test input built by hand, not recorded output of a fit."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET

import pytest

from edgebench.bench.contracts.files import CannotWrite
from edgebench.bench.contracts.fit import (FitResult, FitStep, Group, LatencyPoint, LatencyTable, Measured, Plan,
                                           Sensitivity, fit_from_data, to_data)
from edgebench.reports.fit import fit_html, fit_markdown, median_error, verdict_lines, write_fit_report

SECTIONS = ["Same latency", "Committed steps", "Plans", "Latency lookup table", "Sensitivity", "Widths", "Time", "Reuse"]


def sample_fit(**changes) -> FitResult:
    """ResNet-20-shaped: three stage groups (16/32/64 channels), a 4.0 ms dense model, budget 0.5x = 2.0 ms."""
    groups = [Group("layer1", 16, ["layer1.0.conv1"]), Group("layer2", 32, ["layer2.0.conv1"]), Group("layer3", 64, ["layer3.0.conv1"])]
    points = [LatencyPoint(None, 0, 4.0, 4.4, 300, 3, "resnet20/dense/onnxruntime/fp32/b1/local")]
    for g in groups:
        for w in range(8, g.width, 8):
            points.append(LatencyPoint(g.name, w, 4.0 - (g.width - w) * 0.02, 4.3, 200, 3, f"c-{g.name}-{w}",
                                       flags=["throttled"] if (g.name, w) == ("layer3", 8) else []))
    points.append(LatencyPoint("*", 8, 1.2, 1.3, 200, 3, "c-narrowest"))
    table = LatencyTable("key-abc", "local", {"machine": "x86_64"}, "resnet20", "sha256:dense", "onnxruntime", "1.32.0", "fp32", 1, 2, 8,
                         {"group": "layer2", "p50_ms": {"28": 3.95, "24": 3.8, "30": 3.99}, "reason": "odd widths were slower"},
                         dense_ms=4.0, narrowest_ms=1.2, points=points, uniform={"0.5": 1.95, "0.25": 3.0}, run_id="run-table",
                         created_at="2026-12-01T10:00:00+00:00", build_s=95.0)
    sens = [Sensitivity(g.name, w, 0.01 * (g.width - w), 0.1 * (g.width - w)) for g in groups for w in (8, 16) if w < g.width]
    steps = [FitStep(1, 3.0, {"layer1": 16, "layer2": 24, "layer3": 48}, 3.0, 3.1, 3.3, "c-step1", correction=1.0),
             FitStep(2, 2.0, {"layer1": 16, "layer2": 16, "layer3": 32}, 2.0, 1.9, 2.1, "c-step2", correction=0.95)]
    result = FitResult(
        "fit-20261201-1", "resnet20", "local", "onnxruntime", "fp32", 1, "0.5x", 2.0, "fitted",
        groups=groups, table=table, table_reused=True, sensitivity=sens, sensitivity_reused=False,
        plans=[Plan("knapsack", steps[-1].widths, 2.0, 0.64), Plan("greedy", {"layer1": 8, "layer2": 24, "layer3": 32}, 2.05, 0.7),
               Plan("uniform", {"layer1": 8, "layer2": 16, "layer3": 32}, 1.9, 0.9, feasible=False)],
        steps=steps, recipe_name="fit-resnet20-2ms", recipe_path="/home/u/fits/fit-resnet20-2ms.yaml",
        dense=Measured("dense", 4.0, 3.95, 4.05, 4.4, 0.95, "c-dense", "run-verdict", processes=3),
        fitted=Measured("fit-resnet20-2ms", 1.92, 1.88, 2.02, 2.1, 0.94, "c-fitted", "run-verdict", processes=3, detail={"fine-tune epochs": 4}),
        uniform=Measured("uniform-channel-50", 1.95, 1.9, 2.0, 2.2, 0.91, "c-uniform", "run-verdict", processes=3,
                         detail={"ratio": 0.5, "fine-tune epochs": 4}),
        builtin=None, builtin_note="no built-in recipe is this fast (the fastest, l1-structured-50, is 2.60 ms)",
        max_accuracy_drop_pp=1.5, settings={"steps": 2}, phases_s={"table": 95.0, "sensitivity": 40.0, "steps": 300.0, "verdict": 60.0},
        created_at="2026-12-01T11:00:00+00:00")
    return dataclasses.replace(result, **changes)


def test_markdown_has_every_section_in_order_with_its_numbers():
    md = fit_markdown(sample_fit())
    assert md.splitlines()[0] == "# fit: resnet20 on local (onnxruntime/fp32/b1), budget 0.5x = 2.000 ms"
    heads = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert heads == SECTIONS
    verdict = md.split("## Same latency")[0]
    assert "status: fitted: fitted p50 1.920 ms [1.880, 2.020] vs budget 2.000 ms: within budget" in verdict
    assert "top-1 94.00% (fitted) vs 95.00% (dense): drop 1.00 pp, within the allowed 1.50 pp" in verdict
    same = md.split("## Same latency")[1].split("## Committed steps")[0]
    assert "| uniform channel pruning | uniform-channel-50 | 1.950 [1.900, 2.000] | 2.200 | 91.00% | ratio 0.5; fine-tune epochs 4; 3 processes" in same
    assert "| best built-in | - | not measured" in same and "best built-in: no built-in recipe is this fast" in same
    steps = md.split("## Committed steps")[1].split("## Plans")[0]
    assert "| 1 | 3.000 | 3.000 | 3.100 | -3.2% | - | - | 1.000 |" in steps and "| 2 | 2.000 | 2.000 | 1.900 | +5.3% | - | - | 0.950 |" in steps
    assert "median |error| over 2 committed step(s): 4.2%; meets the goal of under 10%" in steps
    plans = md.split("## Plans")[1].split("## Latency lookup table")[0]
    assert "| knapsack | 2.000 | 0.6400 | yes |" in plans and "| uniform | 1.900 | 0.9000 | no |" in plans
    lut = md.split("## Latency lookup table")[1].split("## Sensitivity")[0]
    assert "| group \\ width | 64 | 56 | 48 | 40 | 32 | 24 | 16 | 8 |" in lut
    assert "| layer1 | - | - | - | - | - | - | 4.000 (+0.0%) | 3.840 (-4.0%) |" in lut
    assert "narrowest model (every group at its narrowest width): 1.200 ms" in lut
    assert "multiples of 8; probe on layer2: 28: 3.950 ms, 24: 3.800 ms, 30: 3.990 ms; reason: odd widths were slower" in lut
    assert "reused from the store (key key-abc); 13 measured cells, build time 95.0 s, store run run-table" in lut
    assert "layer3@8 (throttled)" in lut and "uniform channel pruning (every group at one ratio): ratio 0.5: 1.950 ms, ratio 0.25: 3.000 ms" in lut
    sens = md.split("## Sensitivity")[1].split("## Widths")[0]
    assert "| layer3 | loss +0.4800, top-1 -4.80 pp | loss +0.5600, top-1 -5.60 pp |" in sens and "measured for this fit" in sens
    widths = md.split("## Widths")[1].split("## Time")[0]
    assert "| layer3 | 64 | 32 | 50% |" in widths and "| layer1 | 16 | 16 | 100% |" in widths
    time_part = md.split("## Time")[1].split("## Reuse")[0]
    assert "| steps | 300.0 |" in time_part and "| total | 495.0 |" in time_part
    reuse = md.split("## Reuse")[1]
    assert "- /home/u/fits/fit-resnet20-2ms.yaml" in reuse and "```yaml" in reuse and "backends:\n- onnxruntime" in reuse


@pytest.mark.parametrize(("fitted", "expected"), [
    ((1.99, 1.9, 2.09), "within budget"),  # upper end 4.5% over: allowed
    ((2.2, 2.1, 2.3), "10.0% over budget (the interval's upper end 15.0% over)"),
    ((1.95, 1.9, 2.2), "p50 under the budget, but the interval's upper end is 10.0% over it (more than the 5% allowed)"),
    ((1.95, None, None), "p50 under the budget, but no 95% interval to confirm it"),
])
def test_verdict_wording_for_within_and_over_budget(fitted, expected):
    p50, low, high = fitted
    r = sample_fit(status="fitted" if expected == "within budget" else "over-budget")
    r.fitted = dataclasses.replace(r.fitted, p50_ms=p50, p50_low_ms=low, p50_high_ms=high)
    first = verdict_lines(r)[0]
    assert first.endswith(f"vs budget 2.000 ms: {expected}")
    assert ("within budget" in first) == (expected == "within budget")


def test_verdict_for_an_unreachable_budget_names_the_best_reachable_latency():
    r = sample_fit(status="unreachable", fitted=None, steps=[], budget_text="1ms", budget_ms=1.0, recipe_path="",
                   message="budget 1.000 ms is below the narrowest model's 1.200 ms")
    lines = verdict_lines(r)
    assert lines[0] == ("status: unreachable: no fitted model, the budget 1.000 ms cannot be met; the best reachable latency "
                        "is 1.200 ms (every group at its narrowest measured width)")
    assert lines[1:] == ["budget 1.000 ms is below the narrowest model's 1.200 ms"]  # no top-1 line without a fitted model
    md = fit_markdown(r)
    assert "no committed steps" in md and "no recipe written (no fitted model)" in md
    assert "| fitted | - | not measured" in md and "within budget" not in md
    assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == SECTIONS
    assert "<h2>Reuse</h2>" in fit_html(r)


def test_accuracy_over_the_allowed_drop_and_a_missed_error_goal():
    r = sample_fit(max_accuracy_drop_pp=0.5)
    r.steps[1].measured_p50_ms = 1.6  # predicted 2.0: 25% error
    line = verdict_lines(r)[1]
    assert line.endswith("drop 1.00 pp, 0.50 pp more than the allowed 0.50 pp")
    assert median_error(r) == pytest.approx((abs(3.0 - 3.1) / 3.1 + 0.25) / 2)
    assert "misses the goal of under 10%" in fit_markdown(r)
    assert verdict_lines(sample_fit(max_accuracy_drop_pp=None))[1].endswith("(no maximum accuracy drop set)")


def test_html_escapes_a_hostile_model_name_and_has_one_chart_per_group():
    hostile = '<script>alert("x")</script>&'
    r = sample_fit(model=hostile, message="<b>bold</b>")
    r.groups[0] = dataclasses.replace(r.groups[0], name="<img src=x onerror=alert(1)>")
    for p in r.table.points:
        if p.group == "layer1":
            p.group = r.groups[0].name
    for s in r.sensitivity:
        if s.group == "layer1":
            s.group = r.groups[0].name
    page = fit_html(r)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no network
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed, escaping included
    assert 'class="mark"' in svgs[2] and "dense (64): 4.000 ms" in svgs[2]  # the dense width marked
    assert [h for h in re.findall(r"<h2>(.*?)</h2>", page)] == SECTIONS


def test_write_fit_report_writes_three_files_and_fit_json_round_trips(tmp_path):
    r = sample_fit()
    paths = write_fit_report(r, tmp_path / "fits" / r.id)
    assert {k: p.name for k, p in paths.items()} == {"markdown": "report.md", "html": "report.html", "json": "fit.json"}
    assert paths["markdown"].read_text() == fit_markdown(r) and paths["html"].read_text() == fit_html(r)
    back = fit_from_data(json.loads(paths["json"].read_text()))
    assert back == r and to_data(back) == to_data(r)
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == ["fit.json", "report.html", "report.md"]  # no temp files left


def test_a_full_disk_while_writing_the_report_is_cannot_write(tmp_path, monkeypatch):
    import errno
    import os

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CannotWrite, match="fit.json"):
        write_fit_report(sample_fit(), tmp_path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
