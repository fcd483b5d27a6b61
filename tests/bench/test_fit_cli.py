"""`edgebench fit` end to end through the real CLI on the local target (short measurements: the
acceptance numbers are measured by hand and quoted in the README, not asserted on a shared machine).

One fit builds the table; the second with the same arguments reuses the table and the sensitivity
cache; `edgebench run` with the fitted recipe reuses the fitted model; a budget below the narrowest
plan exits 2 naming the best reachable latency."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgebench.bench.store import Store

pytestmark = pytest.mark.slow

ARGS = ["small_cnn", "--quick", "--steps", "2", "--epochs-per-step", "1", "--finetune-epochs", "1", "--max-accuracy-drop", "100", "--threads", "1"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.bench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def fitted(built, tmp_path_factory):
    """A home (with the trained dense model from the session cache) after one fit to 0.85x."""
    root = tmp_path_factory.mktemp("fit")
    home = root / "home"
    shutil.copytree(built.cache_root, home / "cache")
    first = cli("fit", *ARGS, "--budget", "0.85x", "--home", str(home), cwd=root)
    return root, home, first


def test_a_fit_measures_a_table_commits_steps_and_writes_the_recipe_and_report(fitted):
    root, home, first = fitted
    assert first.returncode in (0, 1), first.stdout[-3000:] + first.stderr[-3000:]  # 1: over budget on a noisy machine, still a fit
    out = first.stdout
    assert "fit: granularity" in out and "fit step 1:" in out
    store = Store(home / "edgebench.sqlite")
    result = store.fits()[0]
    assert result.status in ("fitted", "over-budget") and first.returncode == (0 if result.status == "fitted" else 1)
    table = result.table
    assert not result.table_reused and table.points and table.narrowest_ms is not None and table.uniform
    assert {p.group for p in table.points} >= {g.name for g in result.groups} | {None, "*"}
    assert store.latency_table(table.key) is not None
    # every committed step was measured on the target, in a run of its own that `latest` leaves out
    assert result.steps and all(s.measured_p50_ms > 0 and s.cell_key for s in result.steps)
    runs = store.runs()
    assert {r.status for r in runs} == {"fit"}
    # the verdict: fitted, dense and uniform measured together, with intervals from their samples
    assert result.fitted.p50_low_ms <= result.fitted.p50_ms <= result.fitted.p50_high_ms
    assert result.uniform.detail["fine_tune_epochs"] == result.fitted.detail["fine_tune_epochs"] == (len(result.steps) - 1) * 1 + 1
    assert result.builtin is None and "no stored run" in result.builtin_note
    recipe = Path(result.recipe_path)
    data = yaml.safe_load(recipe.read_text())
    assert data["method"] == "channel_widths" and len(data["params"]["steps"]) == len(result.steps)
    assert data["params"]["steps"][-1] == result.steps[-1].widths
    report = Path(home / "reports" / result.id / "report.md").read_text()
    for section in ("Same latency", "Committed steps", "Latency lookup table", "Sensitivity", "Time"):
        assert section in report
    assert f"recipe: {recipe}" in out and "median |error|" in out


def test_the_same_fit_again_reuses_the_table_and_the_sensitivity(fitted):
    root, home, first = fitted
    again = cli("fit", *ARGS, "--budget", "0.85x", "--home", str(home), cwd=root)
    assert again.returncode in (0, 1), again.stdout[-3000:] + again.stderr[-3000:]
    assert "latency table" in again.stdout and "reused" in again.stdout and "sensitivity cached" in again.stdout
    result = Store(home / "edgebench.sqlite").fits()[0]
    assert result.table_reused and result.sensitivity_reused
    assert "granularity" not in result.phases_s and "table" not in result.phases_s


def test_run_with_the_fitted_recipe_reuses_the_fitted_model(fitted):
    root, home, first = fitted
    result = Store(home / "edgebench.sqlite").fits()[0]
    recipe = result.recipe_path
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "refit", "models": ["small_cnn"], "recipes": [recipe], "backends": [{"name": "onnxruntime", "threads": 1}],
                                     "batch_sizes": [1], "measure": {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 20, "min_seconds": 0.1}}))
    run = cli("run", str(suite), "--home", str(home), cwd=root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{result.recipe_name} small_cnn: cached" in run.stdout and " 0 pruned" in run.stdout  # the fit's fine-tuned model, not a new one


def test_a_budget_below_the_narrowest_plan_exits_2_naming_the_best_reachable_latency(fitted):
    root, home, first = fitted
    low = cli("fit", *ARGS, "--budget", "0.05x", "--home", str(home), cwd=root)
    assert low.returncode == 2, low.stdout[-3000:] + low.stderr[-3000:]
    assert "cannot be met" in low.stderr and "best reachable latency is about" in low.stderr and "ms" in low.stderr
    assert Store(home / "edgebench.sqlite").fits()[0].status == "unreachable"


def test_a_budget_that_is_not_a_latency_is_one_line_and_exit_2(tmp_path):
    bad = cli("fit", "small_cnn", "--budget", "fast", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--budget 'fast'" in bad.stderr


def test_a_suite_fits_entry_refits_before_the_cells_and_measures_the_fitted_recipe(fitted):
    """The nightly form: `fits:` in a suite; the table is the stored one (same key), the recipe joins the cells."""
    root, home, first = fitted
    suite = root / "nightly.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "nightly-fit", "models": ["small_cnn"], "recipes": ["dense"], "backends": [{"name": "onnxruntime", "threads": 1}],
        "batch_sizes": [1], "measure": {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 20, "min_seconds": 0.1},
        "fits": [{"model": "small_cnn", "budget": "0.85x", "threads": 1, "steps": 2, "epochs_per_step": 1, "finetune_epochs": 1,
                  "max_accuracy_drop": 100, "quick": True}]}))
    run = cli("run", str(suite), "--home", str(home), cwd=root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "latency table" in run.stdout and "reused" in run.stdout
    store = Store(home / "edgebench.sqlite")
    recipes = {c.recipe for c in store.cells(store.resolve("latest"))}
    assert recipes == {"dense", store.fits()[0].recipe_name}


def test_fits_lists_the_stored_fits_newest_first(fitted):
    root, home, first = fitted
    listed = cli("fits", "--home", str(home), cwd=root)
    assert listed.returncode == 0 and "small_cnn on local (onnxruntime/fp32/b1) to 0.85x" in listed.stdout


def test_a_budget_the_dense_model_already_meets_prunes_nothing_and_says_so(fitted):
    root, home, first = fitted
    easy = cli("fit", *ARGS, "--budget", "100ms", "--home", str(home), cwd=root)
    assert easy.returncode == 0, easy.stdout[-3000:] + easy.stderr[-3000:]
    assert "already meets the budget 100ms" in easy.stdout and "nothing to prune" in easy.stdout
    assert Store(home / "edgebench.sqlite").fits()[0].recipe_path == ""
