"""Runs whose raw samples `edgebench gc` dropped (summarised runs): reports render from the stored summaries
and say so once, the recommendation ties instead of pretending to an interval, compare/check call such a
cell's latency inconclusive (never a regression or an improvement) and name the run, and history reads the
stored p50s as before. The runs are written through the real Store with samples, then gc'd with
bench/store_gc.py (nothing is measured on this machine)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import new_run, ok_cell, samples_ns

from edgebench.bench.cli import main
from edgebench.bench.store import Store
from edgebench.bench.store_gc import apply_gc, plan_gc
from edgebench.reports import compare as cmp
from edgebench.reports import history as histmod
from edgebench.reports import render, tables, verdict

RUNS = ("20261124-070000-r001", "20261124-070100-r002", "20261124-070200-r003", "20261124-070300-r004")
SLOWED = "small_cnn/dense/onnxruntime/fp32/b1/local"  # 2x slower in the last run: a regression, were the samples there
LEVEL = {("torch", 1): 0.90, ("torch", 8): 3.2, ("onnxruntime", 1): 0.30, ("onnxruntime", 8): 1.1}
NOTE = "raw samples dropped by edgebench gc on "


def run_cells(night: int, slow: float = 1.0, top1_drop: float = 0.0) -> list:
    """Two recipes x torch/onnxruntime x batch 1/8, 3 processes each; night ``night``'s own noise."""
    cells, seed = [], night * 100
    for recipe, sparsity in (("dense", 0.0), ("l1-unstructured-50", 0.5)):
        for backend in ("torch", "onnxruntime"):
            for batch in (1, 8):
                seed += 1
                key = f"small_cnn/{recipe}/{backend}/fp32/b{batch}/local"
                factor = slow if key == SLOWED else 1.0
                top1 = 0.9806 - (top1_drop if key == SLOWED else 0.0)
                cells.append(ok_cell("small_cnn", recipe, backend, batch, samples_ns(LEVEL[(backend, batch)] * factor, 300, seed), top1,
                                     sparsity=sparsity))
    return cells


def add(home: Path, night: int, **kwargs) -> Store:
    store = new_run(home, RUNS[night], minute=night)
    for c in run_cells(night, **kwargs):
        store.add_cell(RUNS[night], c)
    store.finish_run(RUNS[night], "finished", {"cells_ok": 8, "cells_failed": 0, "cells_skipped": 0})
    return store


@dataclass
class Summarised:
    home: Path
    store: Store
    p50: dict[str, dict[str, float]]  # run id -> cell key -> p50 ms as measured (before gc)


@pytest.fixture(scope="module")
def summarised(tmp_path_factory) -> Summarised:
    """Four nights of one suite; baseline `nightly` on the first; gc keeping the last run only (baselines not
    kept): nights 1-3 are summarised, night 4 (2x slower on SLOWED) keeps its samples."""
    home = tmp_path_factory.mktemp("summarised") / "home"
    for night in range(4):
        store = add(home, night, slow=2.0 if night == 3 else 1.0)
    store.set_baseline("nightly", RUNS[0], "local", store.environments(RUNS[0])["local"])
    p50 = {r: {c.cell_key: c.result.latency.p50_ms for c in store.cells(r, with_samples=False)} for r in RUNS}
    plan = plan_gc(store, keep_last=1, keep_baselines=False)
    assert plan.drop == list(RUNS[:3])  # the premise of every test below
    apply_gc(store, plan)
    return Summarised(home, store, p50)


def invoke(*args: str) -> tuple[int, str]:
    """``edgebench ARGS`` through its real entry point, in this process: (exit code, stdout + stderr)."""
    import contextlib
    import io

    out = io.StringIO()
    old = sys.argv
    sys.argv = ["edgebench", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue()


def test_gc_leaves_summaries_and_marks_the_cells(summarised):
    s = summarised.store
    assert s.run(RUNS[1]).samples_dropped_at is not None and s.run(RUNS[3]).samples_dropped_at is None
    cells = s.cells(RUNS[1])
    assert cells and all(c.samples_dropped and c.result.samples_ns == [] for c in cells)
    assert {c.cell_key: c.result.latency.p50_ms for c in cells} == summarised.p50[RUNS[1]]


def test_report_of_a_summarised_run_renders_from_the_summaries_and_says_so_once(summarised, tmp_path):
    out = render.write(summarised.store, RUNS[1], tmp_path / "reports", samples_csv=True)
    # no samples to write: neither samples.npz nor the samples.csv asked for
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "cells.csv", "report.html"}
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    when = summarised.store.run(RUNS[1]).samples_dropped_at
    note = f"{NOTE}{when:%Y-%m-%d}: intervals and samples.npz are not available"
    assert md.count(NOTE) == 1 and note in md
    assert html.count(NOTE) == 1 and note in html
    assert 'href="samples.npz"' not in html and 'href="samples.csv"' not in html
    assert "Empirical CDF" not in html  # no distribution drawn from samples that are gone
    # every cell keeps its stored p50 (and p90, p99) in the table
    shown = {}
    for line in md.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if cols[0] == "small_cnn":
            shown[f"small_cnn/{cols[1].removesuffix(' (ref)')}/{cols[2]}/{cols[3]}/b{cols[4]}/local"] = cols[5:8]
    assert {k: v[0] for k, v in shown.items()} == {k: f"{p50:.3f}" for k, p50 in summarised.p50[RUNS[1]].items()}
    assert all(v[1] != "-" and v[2] != "-" for v in shown.values())


def test_the_recommendation_of_a_summarised_run_is_a_tie_without_intervals(summarised, tmp_path):
    out = render.write(summarised.store, RUNS[2], tmp_path / "reports")
    data = json.loads((out / "report.json").read_text())
    [rec] = data["recommendations"]["local"]
    assert rec["verdict"] == "tie" and rec["margin"] is None
    others = rec["candidates"][1:]
    assert others and all(c["tied"] and c["vs_best"] == [] for c in others)
    assert {c["tie_reason"] for c in others} <= {f"samples of run {RUNS[2]} were dropped by edgebench gc",
                                                 "same computation as the best (zeros run dense)"}
    assert any(f"samples of run {RUNS[2]} were dropped by edgebench gc" in n for n in rec["notes"])
    assert not any("statistically indistinguishable" in n for n in rec["notes"])  # no interval was compared
    line = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("- `local` / small_cnn"))
    assert "tie between" in line and "CI" not in line


def test_recommend_and_report_commands_on_a_summarised_run(summarised):
    code, text = invoke("recommend", RUNS[1], "--home", str(summarised.home))
    assert code == 0, text
    assert "verdict: TIE" in text and f"tie (samples of run {RUNS[1]} were dropped by edgebench gc): no interval" in text
    assert "95% CI" not in text
    code, text = invoke("report", RUNS[1], "--samples-csv", "--home", str(summarised.home))
    assert code == 0, text
    folder = summarised.home / "reports" / RUNS[1]
    assert (folder / "report.html").exists() and not (folder / "samples.npz").exists() and not (folder / "samples.csv").exists()


def test_compare_with_a_summarised_base_is_inconclusive_and_names_the_run(summarised):
    comp = verdict.run(summarised.store, RUNS[2], RUNS[3])
    compared = [c for c in comp.cells if c.status == "compared"]
    assert len(compared) == 8
    for c in compared:
        lat = c.metric("latency")
        assert lat.verdict == cmp.INCONCLUSIVE and c.verdict == cmp.INCONCLUSIVE
        assert lat.reason.startswith(f"samples of run {RUNS[2]} were dropped by edgebench gc")
        assert lat.ci_low is None and lat.p_value is None  # no test, no interval
    slowed = next(c for c in compared if c.cell_key == SLOWED).metric("latency")
    assert slowed.ratio == pytest.approx(2.0, rel=0.1) and "stored medians" in slowed.reason and "not judged" in slowed.reason
    assert comp.counts()["regressed"] == comp.counts()["improved"] == 0
    assert any(f"is run {RUNS[2]}, whose samples were dropped by edgebench gc" in n for n in comp.notes)
    # the other way round: the summarised side is the head
    back = verdict.run(summarised.store, RUNS[3], RUNS[2])
    assert all(c.metric("latency").reason.startswith(f"samples of run {RUNS[2]} were dropped") for c in back.cells if c.status == "compared")


def test_with_samples_on_both_sides_the_same_change_is_a_regression(summarised, tmp_path):
    # the control: the slowdown above is found when both runs keep their samples
    home = tmp_path / "home"
    add(home, 2)
    store = add(home, 3, slow=2.0)
    comp = verdict.run(store, RUNS[2], RUNS[3], use_history=False)
    assert [c.cell_key for c in comp.regressions()] == [SLOWED]


def test_check_against_a_kept_baseline_still_finds_the_regression_over_summarised_nights(tmp_path):
    # gc keeps the baseline's samples; the nights in between are summarised, and their stored p50s still
    # give the run-to-run bar (history) the check measures the step against
    home = tmp_path / "home"
    for night in range(4):
        store = add(home, night, slow=2.0 if night == 3 else 1.0)
    store.set_baseline("nightly", RUNS[0], "local", store.environments(RUNS[0])["local"])
    apply_gc(store, plan_gc(store, keep_last=1, keep_baselines=True))
    assert [store.run(r).samples_dropped_at is not None for r in RUNS] == [False, True, True, False]
    comp = verdict.run(store, "nightly", RUNS[3])
    [reg] = comp.regressions()
    assert reg.cell_key == SLOWED and reg.metric("latency").verdict == cmp.REGRESSED
    assert "earlier runs" in reg.metric("latency").reason and not comp.notes


def test_accuracy_is_still_judged_from_the_stored_summaries(tmp_path):
    # top-1 does not come from the samples: a summarised base still catches an accuracy regression
    home = tmp_path / "home"
    add(home, 0)
    store = add(home, 1, top1_drop=0.05)
    apply_gc(store, plan_gc(store, keep_last=1, keep_baselines=False))
    comp = verdict.run(store, RUNS[0], RUNS[1])
    [reg] = comp.regressions()
    assert reg.cell_key == SLOWED and reg.metric("accuracy").verdict == cmp.REGRESSED
    assert reg.metric("latency").verdict == cmp.INCONCLUSIVE


def test_check_against_a_summarised_baseline_says_so(summarised, tmp_path):
    md, js = tmp_path / "v.md", tmp_path / "v.json"
    code, text = invoke("check", RUNS[3], "--baseline", "nightly", "--markdown", str(md), "--json", str(js), "--home", str(summarised.home))
    assert code == 0, text  # inconclusive is not a regression (README: exit 1 only for a regression)
    data = json.loads(js.read_text())
    assert data["exit_code"] == 0 and data["counts"]["regressed"] == 0 and data["counts"]["inconclusive"] == 8
    said = f"baseline nightly is run {RUNS[0]}, whose samples were dropped by edgebench gc"
    assert any(said in n for n in data["notes"]) and said in md.read_text() and said in text
    assert "edgebench baseline set nightly RUN --target local" in md.read_text()


def test_history_reads_the_stored_p50s_of_summarised_runs(summarised):
    h = histmod.load(summarised.store, "small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert [p.run_id for p in h.points] == list(RUNS)
    assert [p.value_ms for p in h.points] == [summarised.p50[r][SLOWED] for r in RUNS]
    code, text = invoke("history", SLOWED, "--json", "--home", str(summarised.home))
    assert code == 0, text
    points = json.loads(text)["points"]
    assert [p["value_ms"] for p in points] == [summarised.p50[r][SLOWED] for r in RUNS]


def test_the_report_of_a_run_with_samples_next_to_summarised_ones_is_whole(summarised, tmp_path):
    out = render.write(summarised.store, RUNS[3], tmp_path / "reports")
    assert (out / "samples.npz").exists() and NOTE not in (out / "report.md").read_text()
    assert set(render.read_samples(out / "samples.npz")) == set(summarised.p50[RUNS[3]])
    report = tables.load(summarised.store, RUNS[3], with_samples=True)
    assert report.samples_dropped is None and len(report.samples) == 8


def test_a_pytest_benchmark_export_of_a_summarised_run_is_refused_in_one_line(summarised, tmp_path):
    code, text = invoke("export", RUNS[1], "-o", str(tmp_path / "b.json"), "--home", str(summarised.home))
    assert code == 2 and not (tmp_path / "b.json").exists()
    assert text.strip() == (f"edgebench: run {RUNS[1]}: its samples were dropped by edgebench gc on "
                            f"{summarised.store.run(RUNS[1]).samples_dropped_at:%Y-%m-%d}, and a pytest-benchmark export needs them; "
                            "export a run whose samples are kept (edgebench gc --keep-last)")
    code, text = invoke("export", RUNS[3], "-o", str(tmp_path / "b.json"), "--home", str(summarised.home))
    assert code == 0 and "8 benchmarks" in text
