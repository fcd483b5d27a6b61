"""`edgebench compare / check / baseline / history / export` through the real console script, on stores built
from synthetic samples (no model is trained and nothing on this machine is timed), and pytest-benchmark's
own CLI reading the export."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.bench.store import RunRecord, Store
from test_cli import cli

sys.path.insert(0, str(Path(__file__).parent / "reports"))
from tests_support import ar1_samples, cell_with  # noqa: E402

pytestmark = pytest.mark.slow

FP = {"hostname": "pi5-a", "board_model": "Raspberry Pi 5 Model B Rev 1.0", "cpu_model": "Cortex-A76", "machine": "aarch64",
      "logical_cpus": 4, "physical_cores": 4, "cpu_affinity": [0, 1, 2, 3], "memory_total_mib": 8000,
      "cpufreq": [{"policy": "policy0", "cpus": "0 1 2 3", "governor": "performance", "min_mhz": 1500.0, "max_mhz": 2400.0, "cur_mhz": 2400.0}],
      "os": "Debian 12", "kernel": "6.6.31", "python": "3.11.2", "numpy": "2.4.6", "edgebench_version": "0.1.0",
      "backends": {"onnxruntime": {"available": True, "version": "1.32.0"}, "torch": {"available": True, "version": "2.13.0"}}}
RECIPES = ("dense", "l1-unstructured-50", "l1-unstructured-80")
LEVEL = {1: 0.30, 8: 1.1}


def add_run(store: Store, rid: str, day: int, slow: dict | None = None, fp: dict | None = None, contended: tuple = ()) -> None:
    """A default-suite-shaped run (3 recipes x batch 1, 8 on onnxruntime): ``slow`` maps (recipe, batch) -> factor."""
    store.create_run(RunRecord(rid, "default-ort", "ort.yaml", "", "running", dt.datetime(2026, 11, day, 2, 0, tzinfo=dt.timezone.utc),
                               git_commit=f"{rid}abcdef"))
    store.add_environment(rid, "pi5", fp or FP)
    seed = day * 100
    for recipe in RECIPES:
        for batch in (1, 8):
            seed += 1
            factor = (slow or {}).get((recipe, batch), 1.0)
            store.add_cell(rid, cell_with(ar1_samples(LEVEL[batch] * factor, 1500, seed=seed), recipe=recipe, batch=batch, target="pi5",
                                          threads=1 if factor > 1 else 2, contended=(recipe, batch) in contended))
    store.finish_run(rid, "finished", {"cells_ok": 6})


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    store = Store(h / "edgebench.sqlite")
    add_run(store, "r1", 1)
    add_run(store, "r2", 2)
    add_run(store, "r3", 3, slow={("l1-unstructured-50", 8): 1.6})
    return h


def test_check_flags_the_slowed_cell_and_only_it(home, tmp_path):
    out = cli("baseline", "set", "nightly", "r1", "--home", str(home), cwd=tmp_path)
    assert out.returncode == 0 and "baseline nightly [pi5] -> run r1" in out.stdout
    clean = cli("check", "r2", "--baseline", "nightly", "--home", str(home), cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 regressed" in clean.stdout
    md, js = tmp_path / "v.md", tmp_path / "v.json"
    slow = cli("check", "latest", "--baseline", "nightly", "--markdown", str(md), "--json", str(js), "--home", str(home), cwd=tmp_path)
    assert slow.returncode == 1, slow.stdout + slow.stderr
    verdict = json.loads(js.read_text())
    assert verdict["exit_code"] == 1 and verdict["counts"]["regressed"] == 1
    [reg] = [c for c in verdict["cells"] if c["verdict"] == "regressed"]
    assert reg["cell_key"] == "small_cnn/l1-unstructured-50/onnxruntime/fp32/b8/pi5"
    lat = next(m for m in reg["metrics"] if m["metric"] == "latency")
    assert 1.5 < lat["ratio"] < 1.7 and lat["p_value"] < 0.001 and lat["ci_low"] > 1.05
    assert "option threads: 2 -> 1" in reg["notes"]
    text = md.read_text()
    assert "1 regression(s)" in text and "small_cnn/l1-unstructured-50/onnxruntime/fp32/b8/pi5" in text and "p < 0.001" in text
    assert (home / "reports" / "r3").exists() is False  # explicit paths were given: nothing written elsewhere
    default = cli("check", "--baseline", "nightly", "--home", str(home), cwd=tmp_path)
    assert default.returncode == 1 and (home / "reports" / "r3" / "verdict.md").exists() and (home / "reports" / "r3" / "verdict.json").exists()


def test_check_refuses_another_environment_and_names_the_fields(home, tmp_path):
    store = Store(home / "edgebench.sqlite")
    other = {**FP, "cpu_model": "Cortex-A72", "backends": {"onnxruntime": {"available": True, "version": "1.31.0"}}, "kernel": "6.6.40"}
    add_run(store, "r4", 4, fp=other)
    cli("baseline", "set", "nightly", "r1", "--home", str(home), cwd=tmp_path)
    md = tmp_path / "err.md"
    out = cli("check", "r4", "--baseline", "nightly", "--markdown", str(md), "--home", str(home), cwd=tmp_path)
    assert out.returncode == 2
    err = out.stderr.strip()
    assert "cpu_model: Cortex-A76 -> Cortex-A72" in err and "backends.onnxruntime.version: 1.32.0 -> 1.31.0" in err
    assert "kernel" not in err  # informational only
    assert "--allow-env-mismatch" in err and len(err.splitlines()) == 1
    assert "cpu_model" in md.read_text()  # CI still gets a verdict file to post
    forced = cli("check", "r4", "--baseline", "nightly", "--allow-env-mismatch", "--home", str(home), cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "environments differ" in forced.stdout


def test_contended_slow_cell_is_inconclusive_not_a_regression(home, tmp_path):
    store = Store(home / "edgebench.sqlite")
    add_run(store, "r5", 5, slow={("dense", 1): 1.8}, contended=(("dense", 1),))
    out = cli("compare", "r1", "r5", "--home", str(home), cwd=tmp_path)
    assert out.returncode == 0
    assert "0 regressed" in out.stdout and "contended" in out.stdout


def test_errors_exit_2(home, tmp_path):
    out = cli("check", "--baseline", "nope", "--home", str(home), cwd=tmp_path)
    assert out.returncode == 2 and "no run 'nope'" in out.stderr
    out = cli("baseline", "delete", "nope", "--home", str(home), cwd=tmp_path)
    assert out.returncode == 2 and "no baseline 'nope'" in out.stderr
    listed = cli("baseline", "list", "--home", str(home), cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout == ""


def test_history_table_and_json(home, tmp_path):
    store = Store(home / "edgebench.sqlite")
    for day in range(4, 16):  # a step from day 10 on in one cell
        add_run(store, f"r{day:02d}", day, slow={("dense", 8): 1.25} if day >= 10 else None)
    out = cli("history", "small_cnn/dense/onnxruntime/fp32/b8/pi5", "--home", str(home), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "change point: +2" in out.stdout and "from run r10" in out.stdout
    js = cli("history", "--recipe", "dense", "--batch", "8", "--json", "--home", str(home), cwd=tmp_path)
    data = json.loads(js.stdout)
    assert [cp["run_id"] for cp in data["change_points"]] == ["r10"] and len(data["points"]) == 15
    ambiguous = cli("history", "--recipe", "dense", "--home", str(home), cwd=tmp_path)
    assert ambiguous.returncode == 2 and "2 stored cells match" in ambiguous.stderr


@pytest.mark.parametrize("key", ["small_cnn/dense/onnxruntime/fp32/8/pi5", "small_cnn/dense/onnxruntime/fp32/b8", "small_cnn//onnxruntime/fp32/b8/pi5"])
def test_history_of_a_malformed_cell_key_is_one_line(home, tmp_path, key):
    out = cli("history", key, "--home", str(home), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"edgebench: {key!r}: a cell key is model/recipe/backend/precision/bBATCH/target, "
                                  "e.g. small_cnn/dense/onnxruntime/fp32/b1/local")


def test_export_is_read_by_pytest_benchmark_compare(home, tmp_path):
    a, b = tmp_path / "0001_base.json", tmp_path / "0002_head.json"
    for rid, path in (("r1", a), ("r3", b)):
        out = cli("export", rid, "--format", "pytest-benchmark", "-o", str(path), "--home", str(home), cwd=tmp_path)
        assert out.returncode == 0 and "6 benchmarks" in out.stdout, out.stderr
    doc = json.loads(a.read_text())
    assert set(doc) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    bench = doc["benchmarks"][0]
    assert {"group", "name", "fullname", "params", "param", "extra_info", "options", "stats"} <= set(bench)
    assert {"min", "max", "mean", "stddev", "rounds", "median", "iqr", "outliers", "iterations", "ops"} <= set(bench["stats"])
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(a), str(b), "--group-by", "name", "--columns", "min,median,max"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for recipe in RECIPES:
        assert f"small_cnn/{recipe}/onnxruntime/fp32/b8/pi5" in proc.stdout
    assert "0001_base" in proc.stdout and "0002_head" in proc.stdout


def test_pytest_benchmark_stats_match_its_own_definitions():
    from pytest_benchmark.stats import Stats

    from edgebench.reports.pytest_benchmark import stats

    for n in (1, 2, 5, 6, 7, 8, 101):
        data = [v / 1e9 for v in ar1_samples(0.3, n, seed=n, sd=0.3)]
        theirs = Stats()
        for v in data:
            theirs.update(v)
        ours = stats(data)
        for k, v in theirs.as_dict().items():
            assert ours[k] == pytest.approx(v, rel=1e-12) if isinstance(v, float) else ours[k] == v, k
