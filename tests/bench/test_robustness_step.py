"""The suite's ``robustness:`` key, the cached host step (bench/robustness.py) and the facts it puts into
each cell's record (Runner._prepare), on the session's trained small_cnn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.prepare import Preparer
from edgebench.bench.robustness import RobustnessFacts, RobustnessStep, config_of
from edgebench.bench.runner import Job, Paths, Runner
from edgebench.models import data as datasets
from edgebench.models import recipes
from edgebench.models import robustness as rob
from edgebench.models.cache import Cache

SMALL = rob.RobustnessConfig(("gaussian_noise", "contrast"), (1, 3), (8 / 255,), seed=0)


def suite_with(write_suite, robustness) -> Path:
    body = {"models": ["small_cnn"], "backends": ["torch"]}
    if robustness is not ...:
        body["robustness"] = robustness
    return write_suite("suite.yaml", body)


# -- the suite key ----------------------------------------------------------------------------------------
def test_robustness_is_off_by_default(write_suite):
    assert config_of(load_suite(suite_with(write_suite, ...)).suite.robustness) is None
    assert config_of(load_suite(suite_with(write_suite, False)).suite.robustness) is None


def test_robustness_true_is_every_corruption_at_three_severities_and_two_fgsm_budgets(write_suite):
    cfg = config_of(load_suite(suite_with(write_suite, True)).suite.robustness)
    assert cfg == rob.RobustnessConfig()
    assert cfg.corruptions == ("gaussian_noise", "gaussian_blur", "brightness", "contrast")
    assert cfg.severities == (1, 2, 3) and cfg.fgsm_eps == pytest.approx((2 / 255, 8 / 255))


def test_robustness_mapping_with_eps_as_fractions_of_255(write_suite):
    cfg = config_of(load_suite(suite_with(write_suite, {"corruptions": ["contrast"], "severities": [3], "fgsm_eps": ["4/255", 0.01], "seed": 5})).suite.robustness)
    assert cfg == rob.RobustnessConfig(("contrast",), (3,), (4 / 255, 0.01), 5)


@pytest.mark.parametrize("block, message", [
    ({"corruptions": ["gaussian_nois"]}, "robustness.corruptions: .*unknown corruption 'gaussian_nois'; did you mean 'gaussian_noise'"),
    ({"corruptions": ["contrast", "contrast"]}, "listed twice"),
    ({"severities": [4]}, "robustness.severities: .*severities are 1, 2, 3"),
    ({"fgsm_eps": [8]}, "robustness.fgsm_eps: .*outside the pixel range \\[0, 1\\].*'8/255'"),
    ({"fgsm_eps": ["8/zero"]}, "robustness.fgsm_eps: .*not a number or a fraction"),
    ({"sed": 1}, "robustness.sed: unknown key; did you mean 'seed'"),
    ("yes please", "robustness: .*give true, false or a mapping"),
])
def test_robustness_errors_are_one_line_naming_the_file_and_key(write_suite, block, message):
    path = suite_with(write_suite, block)
    with pytest.raises(ConfigError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# -- the cached step ----------------------------------------------------------------------------------------
@pytest.fixture
def cache_root(built, tmp_path) -> Path:
    """A copy of the session's cache (the dense small_cnn is in it): this test's robustness entries stay here."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path / "cache"
    shutil.copytree(built.cache_root, root)
    return root


def test_the_step_is_cached_by_content_and_dense_has_delta_0(cache_root):
    dense_recipe = recipes.load("dense")
    log: list[str] = []
    facts = RobustnessStep(Preparer(Cache(cache_root), log=log.append), SMALL, log.append).facts("small_cnn", dense_recipe)
    assert any("robustness dense small_cnn: evaluated (PyTorch fp32 on the host)" in m for m in log), log
    assert facts["measured_on"] == "PyTorch fp32 on the host" and facts["n_images"] == 360
    assert facts["clean_delta_pts"] == 0 and facts["mean_corrupted_delta_pts"] == 0
    assert [c["delta_pts"] for c in facts["corrupted"]] == [0, 0, 0, 0] and facts["fgsm"][0]["delta_pts"] == 0
    assert facts["fgsm"][0]["top1"] < facts["clean_top1"]
    entries = list((cache_root / "robustness").iterdir())
    assert len(entries) == 1 and json.loads((entries[0] / "manifest.json").read_text())["payload"]["settings"] == SMALL.to_dict()

    log2: list[str] = []  # a new run: nothing evaluated again, the same numbers
    again = RobustnessStep(Preparer(Cache(cache_root), log=log2.append), SMALL, log2.append).facts("small_cnn", dense_recipe)
    assert any("robustness dense small_cnn: cached" in m for m in log2), log2
    assert again == facts
    other = rob.RobustnessConfig(("contrast",), (1,), (), seed=0)  # other settings: another entry
    RobustnessStep(Preparer(Cache(cache_root), log=log2.append), other, log2.append).facts("small_cnn", dense_recipe)
    assert len(list((cache_root / "robustness").iterdir())) == 2


def test_facts_round_trip_and_deltas_are_points_against_dense():
    dense = rob.RobustnessResult(0.98, [rob.CorruptionTop1("contrast", 1, 0.90)], [rob.FgsmTop1(8 / 255, 0.50)], 360)
    pruned = rob.RobustnessResult(0.97, [rob.CorruptionTop1("contrast", 1, 0.80)], [rob.FgsmTop1(8 / 255, 0.45)], 360)
    f = RobustnessFacts(pruned, dense, SMALL.to_dict(), "k")
    d = f.to_dict()
    assert d["clean_delta_pts"] == pytest.approx(-1.0) and d["mean_corrupted_delta_pts"] == pytest.approx(-10.0)
    assert d["corrupted"][0]["delta_pts"] == pytest.approx(-10.0) and d["fgsm"][0]["delta_pts"] == pytest.approx(-5.0)
    assert d["fgsm"][0]["eps_255"] == 8
    assert RobustnessFacts.from_dict(json.loads(json.dumps(d))) == f
    assert RobustnessFacts.from_dict({"skipped": "why"}) is None


def fake_preparer(data: datasets.Dataset, given=None) -> SimpleNamespace:
    spec = SimpleNamespace(dataset=data.name, input_size=None, given=lambda: given)
    return SimpleNamespace(spec=lambda name: spec, dataset=lambda name, size=None: data)


def test_latency_only_models_and_given_files_are_skipped_with_one_note():
    log: list[str] = []
    step = RobustnessStep(fake_preparer(datasets.synthetic(size=8, n_train=2, n_test=2, num_classes=3)), SMALL, log.append)
    first = step.facts("big", recipes.load("dense"))
    step.facts("big", recipes.load("l1-unstructured-50"))
    assert "latency-only model" in first["skipped"] and len(log) == 1
    digits_like = datasets.Dataset("d", np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64), np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64), 2)
    given = RobustnessStep(fake_preparer(digits_like, ("onnx", "/m.onnx")), SMALL, log.append).facts("mine", recipes.load("dense"))
    assert "given onnx file has no PyTorch module" in given["skipped"]
    scaled = datasets.Dataset("d", digits_like.x_train, digits_like.y_train, digits_like.x_test + 5, digits_like.y_test, 2)
    outside = RobustnessStep(fake_preparer(scaled), SMALL, log.append).facts("mine", recipes.load("dense"))
    assert "outside [-1, 1]" in outside["skipped"]


def test_prepare_puts_the_facts_into_every_cell_of_the_pair(cache_root, write_suite, tmp_path):
    path = write_suite("suite.yaml", {"models": ["small_cnn"], "backends": ["torch"], "batch_sizes": [1, 8],
                                      "robustness": {"corruptions": ["contrast"], "severities": [1], "fgsm_eps": ["8/255"]}})
    loaded = load_suite(path)
    runner = Runner(Paths(tmp_path / "home"), log=lambda m: None)
    preparer = Preparer(Cache(cache_root), log=lambda m: None)
    runner.robustness = RobustnessStep(preparer, config_of(loaded.suite.robustness), lambda m: None)
    jobs = [runner._prepare(cell, preparer, loaded.measure_settings(), i) for i, cell in enumerate(loaded.cells())]
    assert all(isinstance(j, Job) for j in jobs) and len(jobs) == 2
    facts = [j.record.facts["robustness"] for j in jobs]
    assert facts[0] == facts[1] and facts[0]["settings"]["corruptions"] == ["contrast"]
    assert facts[0]["clean_top1"] == pytest.approx(jobs[0].record.facts["dense_top1_torch"])


def test_prepare_without_robustness_adds_nothing(built, write_suite, tmp_path):
    loaded = load_suite(write_suite("suite.yaml", {"models": ["small_cnn"], "backends": ["torch"]}))
    runner = Runner(Paths(tmp_path / "home"), log=lambda m: None)
    job = runner._prepare(loaded.cells()[0], Preparer(Cache(built.cache_root), log=lambda m: None), loaded.measure_settings(), 0)
    assert "robustness" not in job.record.facts


@pytest.mark.slow
def test_cli_run_with_robustness_end_to_end(built, tmp_path):
    """`edgebench run` on small_cnn (torch only, short measure) with robustness on: facts in the store, tables in
    report.md/json/html, the robust Pareto axis; the session's trained model is copied in, so nothing trains."""
    import subprocess
    import sys

    import yaml

    from edgebench.bench.store import Store

    home = tmp_path / "home"
    shutil.copytree(built.cache_root, home / "cache")
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "robust-e2e", "models": ["small_cnn"], "recipes": ["dense"], "backends": ["torch"],
        "robustness": {"corruptions": ["gaussian_noise", "brightness"], "severities": [1, 3], "fgsm_eps": ["8/255"]},
        "measure": {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2, "processes": 1}}))
    exe = Path(sys.executable).parent / "edgebench"
    proc = subprocess.run([str(exe), "run", str(suite), "--home", str(home), "--pareto-accuracy", "robust"],
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "robustness dense small_cnn: evaluated (PyTorch fp32 on the host)" in proc.stdout
    store = Store(home / "edgebench.sqlite")
    (run,) = store.runs()
    (cell,) = store.cells(run.id, with_samples=False)
    assert cell.facts["robustness"]["mean_corrupted_delta_pts"] == 0 and len(cell.facts["robustness"]["corrupted"]) == 4
    out = home / "reports" / run.id
    assert "## Robustness (PyTorch fp32 on the host)" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["robustness"][0]["recipe"] == "dense"
    page = (out / "report.html").read_text()
    assert '<section id="robustness">' in page and "robust top-1: mean over corruptions" in page
