"""The self-contained HTML report (reports/html.py), checked as text: sections, tables, plots as valid
SVG, fingerprints, failures. The browser test (test_html_browser.py) checks that it renders."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import unescape

import pytest
from conftest import FAILED_REASON, FINGERPRINT, LOAD_REASON, finish, new_run

from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import CellRecord
from edgebench.reports import render

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def default_html(default_store, tmp_path_factory):
    out = render.write(default_store.store, default_store.run_id, tmp_path_factory.mktemp("reports"))
    return out, (out / "report.html").read_text()


@pytest.fixture(scope="module")
def failed_html(failed_store, tmp_path_factory):
    out = render.write(failed_store.store, failed_store.run_id, tmp_path_factory.mktemp("reports"))
    return (out / "report.html").read_text()


def section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def svgs(html: str) -> dict[str, ET.Element]:
    out = {}
    for text in re.findall(r"<svg .*?</svg>", html, re.S):
        el = ET.fromstring(text)  # every chart is well-formed XML
        out[el.get("id")] = el
    return out


def test_written_next_to_the_other_report_files(default_html):
    out, _ = default_html
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "cells.csv", "samples.npz", "report.html"}


def test_self_contained(default_html):
    _, html = default_html
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(link|img|iframe|object|embed)\b", html)
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"@import|url\((?!#)", html)
    # the only absolute URL is the SVG namespace, which is a name, not a request
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) == {"http://www.w3.org/2000/svg"}


def test_sections_and_cell_table(default_html, default_store):
    _, html = default_html
    for sid in ("recommendation", "target-local", "cross-target", "failures", "environments", "method"):
        section(html, sid)
    target = section(html, "target-local")
    table = re.search(r'<table class="cells sortable">(.*?)</table>', target, re.S).group(1)
    header = [unescape(h) for h in re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)]
    for col in ("recipe", "backend (threads)", "prec.", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s", "peak RSS MiB (+load)",
                "size", "top-1", "agree w/ dense", "Δtop-1 pts", "speedup p50"):
        assert col in header
    rows = re.findall(r"<tr id=\"cell-[^\"]+\">(.*?)</tr>", table, re.S)
    assert len(rows) == len(default_store.cells) == 12
    # the unstructured cells carry their sparse-not-used flag; the dense reference is marked
    assert target.count('class="ref">ref</span>') == 4
    assert "sparse-not-used" in target and "contended" in target


def test_every_plot_is_there_and_has_marks(default_html):
    _, html = default_html
    charts = svgs(section(html, "target-local"))
    names = set(charts)
    expected = {"chart-local-Accuracy-vs-p90-latency-batch-1", "chart-local-Accuracy-vs-p90-latency-batch-8",
                "chart-local-Accuracy-vs-peak-memory", "chart-local-Accuracy-vs-model-size", "cdf-local-b1", "cdf-local-b8",
                "sweep-acc-local-magnitude_unstructured", "sweep-speed-local-magnitude_unstructured"}
    assert expected <= names
    for cid, el in charts.items():
        marks = [p for p in el.iter(f"{SVG_NS}path") if p.get("class") == "mark"]
        assert marks, cid
        assert all(re.match(r"M[\d.]+,[\d.]+", p.get("d")) for p in marks), cid
    # the latency CDFs draw one line per cell of that batch, from the stored samples
    for b in (1, 8):
        lines = [p for p in charts[f"cdf-local-b{b}"].iter(f"{SVG_NS}path") if p.get("class") == "series"]
        assert len(lines) == 6
    # the Pareto front is marked: filled marks on it, hollow ones dominated
    p90 = charts["chart-local-Accuracy-vs-p90-latency-batch-1"]
    fills = [p.get("fill") for p in p90.iter(f"{SVG_NS}path") if p.get("class") == "mark"]
    assert "#fff" in fills and any(f != "#fff" for f in fills)


def test_recommendation_section(default_html):
    _, html = default_html
    rec = section(html, "recommendation")
    assert 'data-objective="p90"' in rec and 'data-verdict="tie"' in rec
    assert "same computation" in rec and "1.50 pts below dense on onnxruntime" in rec
    for objective in ("throughput", "size", "energy"):
        assert f'data-objective="{objective}"' in rec
    assert "no energy sampler" in rec


def test_environment_fingerprint_has_every_field(default_html):
    _, html = default_html
    env = unescape(section(html, "environments"))
    for value in ("bench-host", "Test CPU @ 2.0GHz", "x86_64", "24106", "Debian GNU/Linux 12 (bookworm)", "6.1.0-test", "3.11.7",
                  "CPython", "2.4.6", "1.32.0", "2.13.0+cpu", "0123456789abcdef", "performance", "policy0", "0, 1", "0.5, 0.4, 0.3"):
        assert value in env, value
    assert env.count("<tr><th>") >= len(FINGERPRINT)


def test_cross_target_view_with_several_targets(tmp_path):
    from conftest import ok_cell, samples_ns

    store = new_run(tmp_path, "20261124-090000-c0de", name="two")
    store.add_environment("20261124-090000-c0de", "board", {"error": "probe failed: no route"})
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 50, 1), 0.9), ok_cell("m", "dense", "A", 1, samples_ns(4.0, 50, 2), 0.9, target="board")]
    finish(store, "20261124-090000-c0de", cells)
    html = (render.write(store, "latest", tmp_path / "reports") / "report.html").read_text()
    cross = section(html, "cross-target")
    assert "local: p50 ms" in cross and "board: p50 ms" in cross and "board: p50 vs local" in cross
    assert re.search(r">4\.0\dx<", cross)  # board is four times slower than local
    assert "probe failed: no route" in section(html, "environments")
    assert set(re.findall(r'<section id="(target-[^"]+)"', html)) == {"target-local", "target-board"}


def test_failed_cells_are_listed_with_reasons(failed_html):
    html = failed_html
    fails = unescape(section(html, "failures"))
    assert LOAD_REASON in fails and FAILED_REASON in fails and "torch supports precisions fp32, not int8" in fails
    assert "small_cnn/dense/onnxruntime/fp32/b1/local" in fails and "skipped" in fails
    assert "RuntimeError: InvalidProtobuf" in fails  # the worker's traceback, folded
    target = unescape(section(html, "target-local"))
    assert "FAILED</b>: " + LOAD_REASON in target and "SKIPPED</b>: torch supports" in target
    assert "3 cell(s) failed or were skipped" in html
    rec = unescape(section(html, "recommendation"))
    assert "failed: " + FAILED_REASON in rec  # excluded from the recommendation, with the reason
    svgs(html)  # the plots of the cells that ran are still valid


def test_a_run_where_every_cell_failed_still_reports(tmp_path):
    run_id = "20261124-100000-dead"
    store = new_run(tmp_path, run_id, suite_yaml="name: doomed\n", name="doomed")
    cells = [CellRecord(f"m/dense/{b}/fp32/b1/local", "m", "dense", b, "fp32", 1, "local", "failed", error=f"{b} exploded",
                        result=CellResult.failed(f"{b} exploded")) for b in ("A", "B")]
    finish(store, run_id, cells)
    out = render.write(store, run_id, tmp_path / "reports")
    html = (out / "report.html").read_text()
    assert "A exploded" in section(html, "failures") and "B exploded" in section(html, "failures")
    assert 'data-verdict="none"' in section(html, "recommendation")
    assert "nothing to plot" in section(html, "target-local")
    assert (out / "report.md").exists() and (out / "samples.npz").exists()


SWEEP_YAML = """name: sweep
models: [resnet20]
recipes:
  - dense
  - sweep: {recipe: l1-unstructured-50, param: sparsity, values: [0.5, 0.8]}
  - sweep: {recipe: channel-l2-50, param: ratio, values: [0.3, 0.5]}
backends: [onnxruntime]
batch_sizes: [1]
"""


def test_sweeps_get_one_accuracy_curve_per_method(tmp_path):
    from conftest import ok_cell, samples_ns

    run_id = "20261124-120000-5eee"
    store = new_run(tmp_path, run_id, suite_yaml=SWEEP_YAML, name="sweep")
    cells = [ok_cell("resnet20", "dense", "onnxruntime", 1, samples_ns(0.4, 60, 1), 0.99, params=270_000, macs=40_000_000)]
    cells += [ok_cell("resnet20", f"l1-unstructured@sparsity={s:g}", "onnxruntime", 1, samples_ns(0.4, 60, i + 2), 0.99 - s / 20,
                      sparsity=s, params=270_000, macs=40_000_000) for i, s in enumerate((0.5, 0.8))]
    cells += [ok_cell("resnet20", f"channel-l2@ratio={r:g}", "onnxruntime", 1, samples_ns(0.4 * (1 - r), 60, i + 5), 0.99 - r / 10,
                      params=int(270_000 * (1 - r) ** 2), macs=int(40_000_000 * (1 - r) ** 2)) for i, r in enumerate((0.3, 0.5))]
    finish(store, run_id, cells)
    html = (render.write(store, run_id, tmp_path / "reports") / "report.html").read_text()
    charts = svgs(section(html, "target-local"))
    assert {"sweep-acc-local-magnitude_unstructured", "sweep-speed-local-magnitude_unstructured",
            "sweep-acc-local-channel", "sweep-speed-local-channel"} <= set(charts)
    unstructured = charts["sweep-acc-local-magnitude_unstructured"]
    assert "weight sparsity (%)" in ET.tostring(unstructured, encoding="unicode")
    channel = ET.tostring(charts["sweep-acc-local-channel"], encoding="unicode")
    assert "parameters removed vs dense (%)" in channel  # channel pruning removes weights instead of zeroing them
    # each curve holds dense plus its own two points, never the other method's
    for cid in ("sweep-acc-local-magnitude_unstructured", "sweep-acc-local-channel"):
        marks = [p for p in charts[cid].iter(f"{SVG_NS}path") if p.get("class") == "mark"]
        assert len(marks) == 3, cid


def test_latency_only_model_is_ranked_on_latency_alone(tmp_path):
    from conftest import ok_cell, samples_ns

    run_id = "20261124-130000-1a7e"
    store = new_run(tmp_path, run_id, suite_yaml="name: lat\n", name="lat")
    cells = [ok_cell("resnet18_224", "dense", b, 1, samples_ns(m, 100, i), 0.5) for i, (b, m) in enumerate((("torch", 17.0), ("onnxruntime", 8.0)))]
    for c in cells:
        c.result.accuracy = None
    finish(store, run_id, cells)
    html = (render.write(store, run_id, tmp_path / "reports") / "report.html").read_text()
    rec = unescape(section(html, "recommendation"))
    assert 'data-verdict="win"' in rec and "best: dense / onnxruntime / fp32 / batch 1" in rec
    assert "latency-only" in rec
    target = unescape(section(html, "target-local"))
    assert "2 cell(s) have no accuracy" in target and "cdf-local-b1" in target


def test_page_inlines_the_packaged_stylesheet_and_script(default_html):
    from edgebench.reports.html import asset

    _, html = default_html
    css, js = asset("report.css"), asset("report.js")
    assert ".recommendation" in css and "table.sortable" in js
    assert f"<style>\n{css}</style>" in html and f"<script>\n{js}</script>" in html


def test_warnings_are_grouped_by_code_not_by_their_words(tmp_path):
    from conftest import ok_cell, samples_ns

    from edgebench.bench.contracts.flags import Flag

    run_id = "20261124-140000-f1a9"
    store = new_run(tmp_path, run_id, suite_yaml="name: flags\n", name="flags")
    flags = (Flag("throttled", "CPU capped at 600 MHz"), Flag("other", "contended? no: a plugin's note"))
    finish(store, run_id, [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 50, 1), 0.9, flags=flags)])
    target = unescape(section((render.write(store, run_id, tmp_path / "reports") / "report.html").read_text(), "target-local"))
    assert '<span class="tag tag-throttled" title="CPU capped at 600 MHz">throttled</span>' in target
    assert '<span class="tag" title="contended? no: a plugin\'s note">other</span>' in target
    assert "tag-contended" not in target


def test_sweeps_are_grouped_by_the_recipes_the_store_recorded(tmp_path):
    # The suite names no recipe file (a store of 0.2 keeps each cell's recipe): the methods come from the cells.
    from conftest import ok_cell, samples_ns

    run_id = "20261124-150000-de75"
    store = new_run(tmp_path, run_id, suite_yaml="name: gone\nrecipes: [/nowhere/a.yaml]\n", name="gone")
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 50, 1), 0.9)]
    cells += [ok_cell("m", name, "A", 1, samples_ns(1.0, 50, i + 2), 0.9 - s / 10, sparsity=s)
              for i, (name, s) in enumerate((("mine-a", 0.5), ("mine-b", 0.8)))]
    for c in cells:
        c.recipe_def = {"name": c.recipe, "method": "dense" if c.recipe == "dense" else "magnitude_unstructured", "params": {}}
    finish(store, run_id, cells)
    html = (render.write(store, run_id, tmp_path / "reports") / "report.html").read_text()
    assert "sweep-acc-local-magnitude_unstructured" in svgs(section(html, "target-local"))
