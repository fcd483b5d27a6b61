"""The robustness part of the report (reports/robustness.py): the Markdown and HTML tables, report.json,
and the Pareto view's robust accuracy axis (fp32 cells only; int8 left out with one line saying why;
a run without robustness data refused: exit 2 for `edgebench report`)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import finish, new_run, ok_cell, samples_ns
from typer.testing import CliRunner

from edgebench.bench.cli import app, main
from edgebench.bench.robustness import RobustnessFacts
from edgebench.models.robustness import CorruptionTop1, FgsmTop1, RobustnessResult
from edgebench.reports import html, render
from edgebench.reports import robustness as robmod
from edgebench.reports import tables

SETTINGS = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3], "fgsm_eps": [2 / 255, 8 / 255], "seed": 0}


def result(clean: float, noise: float, low_contrast: float, fgsm8: float) -> RobustnessResult:
    corrupted = [CorruptionTop1("gaussian_noise", 1, noise), CorruptionTop1("gaussian_noise", 3, noise - 0.1),
                 CorruptionTop1("contrast", 1, clean), CorruptionTop1("contrast", 3, low_contrast)]
    return RobustnessResult(clean, corrupted, [FgsmTop1(2 / 255, clean - 0.1), FgsmTop1(8 / 255, fgsm8)], 360)


DENSE = result(0.98, 0.95, 0.90, 0.60)
PRUNED = result(0.97, 0.85, 0.70, 0.40)  # mean corrupted 0.8175 vs dense 0.92: -10.25 points


def facts(r: RobustnessResult) -> dict:
    return RobustnessFacts(r, DENSE, SETTINGS, "key").to_dict()


def cells(with_robustness: bool = True) -> list:
    out = []
    for i, (recipe, backend, precision, top1, rob) in enumerate([
            ("dense", "onnxruntime", "fp32", 0.98, DENSE), ("channel-l2-50", "onnxruntime", "fp32", 0.97, PRUNED),
            ("dense", "onnxruntime", "int8", 0.975, DENSE), ("channel-l2-50", "onnxruntime", "int8", 0.965, PRUNED)]):
        c = ok_cell("small_cnn", recipe, backend, 1, samples_ns(0.3 if recipe == "dense" else 0.2, 60, i), top1, precision=precision)
        if with_robustness:
            c.facts["robustness"] = facts(rob)
        out.append(c)
    return out


@pytest.fixture
def store_with(tmp_path):
    def build(with_robustness: bool = True):
        home = tmp_path / ("rob" if with_robustness else "plain")
        store = new_run(home, "20261201-000000-aaaa")
        finish(store, "20261201-000000-aaaa", cells(with_robustness))
        return home, store
    return build


def test_one_row_per_model_and_recipe_with_deltas_vs_dense(store_with):
    _, store = store_with()
    report = tables.load(store, "20261201-000000-aaaa")
    rows = report.robustness
    assert [(r.model, r.recipe) for r in rows] == [("small_cnn", "dense"), ("small_cnn", "channel-l2-50")]
    assert rows[0].facts.mean_corrupted_delta_pts == 0
    assert rows[1].facts.mean_corrupted_delta_pts == pytest.approx(-10.25)
    assert rows[1].robust_top1 == pytest.approx(0.8175)


def test_markdown_and_json_carry_the_robustness_table(store_with, tmp_path):
    _, store = store_with()
    out = render.write(store, "20261201-000000-aaaa", tmp_path / "reports")
    md = (out / "report.md").read_text()
    assert "## Robustness (PyTorch fp32 on the host)" in md
    assert "| model | recipe | clean top-1 | mean corrupted top-1 | Δ vs dense pts | FGSM 2/255 top-1 | Δ vs dense pts | FGSM 8/255 top-1 | Δ vs dense pts |" in md
    assert "| small_cnn | channel-l2-50 | 97.00% | 81.75% | -10.25 | 87.00% | -1.00 | 40.00% | -20.00 |" in md
    data = json.loads((out / "report.json").read_text())
    pruned = data["robustness"][1]
    assert pruned["recipe"] == "channel-l2-50" and pruned["measured_on"] == "PyTorch fp32 on the host"
    assert {(c["corruption"], c["severity"]): c["delta_pts"] for c in pruned["corrupted"]}[("contrast", 3)] == pytest.approx(-20.0)
    assert data["pareto_accuracy"] == "top1"


def test_html_has_the_section_and_the_per_corruption_detail(store_with):
    _, store = store_with()
    page = html.render(tables.load(store, "20261201-000000-aaaa", with_samples=True))
    assert '<section id="robustness">' in page and 'href="#robustness"' in page
    assert "contrast s3" in page and "70.00% (-20.00)" in page
    assert "Robust accuracy axis" not in page  # the top-1 axis leaves nothing out


def test_robust_pareto_axis_plots_fp32_cells_and_says_why_int8_is_left_out(store_with):
    _, store = store_with()
    report = tables.load(store, "20261201-000000-aaaa", with_samples=True)
    acc = robmod.robust_accuracy(report.robustness)
    by_key = {(r.recipe, r.precision): acc(r) for r in report.rows}
    assert by_key[("channel-l2-50", "fp32")] == pytest.approx(0.8175) and by_key[("dense", "fp32")] == pytest.approx(0.92)
    assert by_key[("channel-l2-50", "int8")] is None and by_key[("dense", "int8")] is None
    page = html.render(report, pareto_accuracy="robust")
    assert "Robust accuracy axis: 2 int8 cell(s) are left out: their robustness was not measured" in page
    assert robmod.ROBUST_LABEL in page  # the axis says what it plots
    assert "top-1 accuracy (%)" not in page.split('id="robustness"')[0].split("<h3>Plots</h3>")[1]


def test_robust_axis_in_the_markdown_says_what_it_left_out(store_with, tmp_path):
    _, store = store_with()
    out = render.write(store, "20261201-000000-aaaa", tmp_path / "reports", pareto_accuracy="robust")
    assert "Pareto view (report.html): the accuracy axis is robust top-1. Robust accuracy axis: 2 int8 cell(s) are left out" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["pareto_accuracy"] == "robust"


def test_a_run_without_robustness_data_refuses_the_robust_axis(store_with, tmp_path):
    _, store = store_with(with_robustness=False)
    assert tables.load(store, "20261201-000000-aaaa").robustness == []
    with pytest.raises(robmod.NoRobustnessData, match="no robustness data for --pareto-accuracy robust .*add `robustness: true`"):
        render.write(store, "20261201-000000-aaaa", tmp_path / "reports", pareto_accuracy="robust")
    assert not (tmp_path / "reports").exists()  # refused before any file was written
    md = (render.write(store, "20261201-000000-aaaa", tmp_path / "reports") / "report.md").read_text()
    assert "Robustness" not in md


def test_skipped_robustness_is_said_in_the_table(tmp_path):
    c = cells()[0]
    c.facts["robustness"] = {"skipped": "robustness: small_cnn: latency-only model (no labelled evaluation split); skipped"}
    rows = robmod.robustness_rows([c])
    assert rows[0].facts is None and robmod.markdown_lines(rows)[-3].endswith("latency-only model (no labelled evaluation split); skipped")
    with pytest.raises(robmod.NoRobustnessData, match="its robustness evaluations were skipped"):
        robmod.require_data(rows, "r1")


def test_cli_report_robust_axis_exit_2_without_data_and_0_with(store_with, monkeypatch, capsys):
    home, _ = store_with(with_robustness=False)
    monkeypatch.setattr(sys, "argv", ["edgebench", "report", "latest", "--pareto-accuracy", "robust", "--home", str(home)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("edgebench: run 20261201-000000-aaaa: no robustness data for --pareto-accuracy robust") and "\n" not in said
    runner = CliRunner()
    home, _ = store_with()
    res = runner.invoke(app, ["report", "latest", "--pareto-accuracy", "robust", "--home", str(home)])
    assert res.exit_code == 0, res.output
    assert "Robust accuracy axis" in next((home / "reports").glob("*/report.html")).read_text()
    bad = runner.invoke(app, ["report", "latest", "--pareto-accuracy", "clean", "--home", str(home)])
    assert bad.exit_code == 2
