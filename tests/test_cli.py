"""The `edgebench` console script end to end: run twice (the second run rebuilds nothing), show, list,
and a broken suite. Runs by default; `-m "not slow"` skips it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import os

import pytest
import yaml

pytestmark = pytest.mark.slow

SMALL_MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2}


def edgebench_exe() -> str:
    exe = Path(sys.executable).parent / "edgebench"
    if exe.exists():
        return str(exe)
    found = shutil.which("edgebench")
    assert found, "the edgebench console script is not installed"
    return found


def cli(*args: str, cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "250", **env}  # wide enough that rich tables do not fold
    return subprocess.run([edgebench_exe(), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def two_runs(built, tmp_path_factory):
    """`edgebench run` twice on a tiny suite. The home starts with only the trained dense model (from the
    session build), so the first run prunes and exports and the second must rebuild nothing."""
    tmp = tmp_path_factory.mktemp("cli")
    home = tmp / "home"
    shutil.copytree(built.cache_root / "dense", home / "cache" / "dense")
    suite = tmp / "tiny.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny", "models": ["small_cnn"], "recipes": ["dense", "l1-unstructured-50"],
        "backends": ["onnxruntime", "torch"], "precisions": ["fp32"], "batch_sizes": [1],
        "measure": SMALL_MEASURE, "cell_timeout_s": 120,
    }))
    first = cli("run", str(suite), "--home", str(home), cwd=tmp)
    after_first = snapshot(home / "cache")
    second = cli("run", str(suite), "--home", str(home), cwd=tmp)
    after_second = snapshot(home / "cache")
    return {"tmp": tmp, "home": home, "suite": suite, "first": first, "second": second,
            "cache_first": after_first, "cache_second": after_second}


def report_path(out: str) -> Path:
    m = re.search(r"^report: (.+report\.md)$", out, re.M)
    assert m, out
    return Path(m.group(1))


def run_id(out: str) -> str:
    m = re.search(r"^run (\S+): \d+ ok", out, re.M)
    assert m, out
    return m.group(1)


def test_first_run_builds_and_reports(two_runs):
    first = two_runs["first"]
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "4 ok, 0 failed, 0 skipped" in out
    # the dense model came from the copied cache; the pruned model and four artifacts were built
    assert "built 0 trained, 1 pruned, 4 exported" in out
    assert "all from cache" not in out
    md = report_path(out)
    assert md.exists() and md.parent.parent == two_runs["home"] / "reports"
    assert {p.name for p in md.parent.iterdir()} == {"report.md", "report.html", "report.json", "cells.csv", "samples.npz"}


def test_second_run_rebuilds_nothing(two_runs):
    second = two_runs["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout
    assert "4 ok, 0 failed, 0 skipped" in out
    assert "built 0 trained, 0 pruned, 0 exported" in out
    assert "nothing rebuilt: all from cache" in out
    assert "trained (" not in out and "exported (" not in out and "pruned (" not in out
    # nothing in the cache was written or touched
    assert two_runs["cache_second"] == two_runs["cache_first"]
    assert run_id(second.stdout) != run_id(two_runs["first"].stdout)


def test_report_has_a_table_per_target_and_dense_reference_rows(two_runs):
    md = report_path(two_runs["second"].stdout).read_text()
    assert md.count("## Target `local`") == 1
    rows = [line for line in md.splitlines() if line.startswith("| small_cnn |")]
    assert len(rows) == 4
    for backend in ("onnxruntime", "torch"):
        ref = [r for r in rows if f"| dense (ref) | {backend} | fp32 | 1 |" in r]
        assert len(ref) == 1 and ref[0].rstrip().endswith("| 1.00x |")
        pruned = [r for r in rows if f"| l1-unstructured-50 | {backend} | fp32 | 1 |" in r]
        assert len(pruned) == 1 and re.search(r"\| \d+\.\d\dx \|$", pruned[0].rstrip())
        assert f"`small_cnn/l1-unstructured-50/{backend}/fp32/b1/local`: sparse-not-used" in md
    assert "## Failed and skipped cells" not in md


def test_show_latest_prints_the_cells(two_runs):
    res = cli("show", "latest", "--home", str(two_runs["home"]), cwd=two_runs["tmp"])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"run {run_id(two_runs['second'].stdout)} (tiny, finished)" in out
    assert "target local" in out
    for text in ("dense (ref)", "l1-unstructured-50", "onnxruntime", "torch"):
        assert text in out
    assert out.count("small_cnn") >= 4


def test_show_and_runs_use_edgebench_home(two_runs):
    res = cli("runs", cwd=two_runs["tmp"], EDGEBENCH_HOME=str(two_runs["home"]))
    assert res.returncode == 0, res.stderr
    ids = [run_id(two_runs[k].stdout) for k in ("first", "second")]
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert [l.split()[0] for l in lines] == ids[::-1]  # newest first
    prefix = ids[0][:15]  # YYYYMMDD-HHMMSS: the runs started seconds apart, so this is unique
    res = cli("show", prefix, cwd=two_runs["tmp"], EDGEBENCH_HOME=str(two_runs["home"]))
    assert res.returncode == 0, res.stderr
    assert f"run {ids[0]} " in res.stdout


def test_show_unknown_run_is_exit_2(two_runs):
    res = cli("show", "no-such-run", "--home", str(two_runs["home"]), cwd=two_runs["tmp"])
    assert res.returncode == 2
    assert "no-such-run" in res.stderr and "Traceback" not in res.stderr


def test_list_backends(tmp_path):
    res = cli("list", "backends", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = {l.split(":", 1)[0]: l for l in res.stdout.splitlines() if ":" in l}
    assert lines["torch"].startswith("torch: available (")
    assert lines["onnxruntime"].startswith("onnxruntime: available (")
    # no GPU here (CI neither): torch-cuda is listed with the reason, and suites without it are unchanged
    assert lines["torch-cuda"].startswith("torch-cuda: not available: no CUDA device (torch.cuda.is_available() is False); precisions: fp32, fp16, bf16")


def test_list_recipes_and_models(tmp_path):
    recipes = cli("list", "recipes", cwd=tmp_path)
    assert recipes.returncode == 0
    for name in ("dense", "l1-unstructured-50", "l1-unstructured-80", "l1-unstructured-layer-50"):
        assert f"{name}: " in recipes.stdout
    models = cli("list", "models", cwd=tmp_path)
    assert models.returncode == 0 and "small_cnn:" in models.stdout


def test_list_suites_names_each_builtin_suite_with_its_description(tmp_path):
    from edgebench.bench.config import builtin_suites

    res = cli("list", "suites", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"{name}: {text}" for name, text in builtin_suites().items()]
    assert "default: " in res.stdout and "sweep: " in res.stdout


def test_list_targets_is_target_list(tmp_path):
    mine = tmp_path / "targets.yaml"
    mine.write_text(yaml.safe_dump({"targets": [{"name": "pi5-lab", "description": "the lab's Pi", "ssh": {"host": "pi5.lab", "user": "bench"}}]}))
    listed = cli("list", "targets", "--targets", str(mine), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == cli("target", "list", "--targets", str(mine), cwd=tmp_path).stdout
    assert "local: this host" in listed.stdout and "pi5-lab: ssh bench@pi5.lab; the lab's Pi" in listed.stdout


@pytest.mark.parametrize("family, names", [
    ("methods", ["dense", "magnitude_unstructured"]),
    ("datasets", ["digits", "synthetic"]),
    ("samplers", ["thermal", "cpufreq"]),
    ("transports", ["local", "ssh"]),
])
def test_list_a_plugin_family_from_its_registry(tmp_path, family, names):
    res = cli("list", family, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = {line.split(":", 1)[0]: line for line in res.stdout.splitlines()}
    for name in names:
        assert name in lines and len(lines[name]) > len(name) + 2, res.stdout  # a name and a description


def test_describe_prefers_a_description_then_the_docstring():
    from edgebench.bench.cli_list import describe

    class Documented:
        """First line,
        wrapped.

        More."""

    class Described(Documented):
        description = "said so"

    assert describe(Documented) == "First line, wrapped." and describe(Described) == "said so"
    assert describe(lambda: None) == ""


@pytest.mark.parametrize("text", [
    "models: [small_cnn]\nbackends: [torch]\nbatch_size: [1]\n",   # unknown key
    "models: [small_cnn]\nbackends: [torch\n",                      # invalid YAML
    "models: [small_cnn]\nbackends: [tensorflow]\n",                # unknown backend
], ids=["unknown-key", "invalid-yaml", "unknown-backend"])
def test_broken_suite_is_exit_2_with_one_line(tmp_path, text):
    suite = tmp_path / "broken.yaml"
    suite.write_text(text)
    res = cli("run", str(suite), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(suite) in lines[0]
    assert lines[0].startswith("edgebench: ")
    assert not (tmp_path / "home" / "edgebench.sqlite").exists()  # nothing ran


def test_missing_suite_is_exit_2(tmp_path):
    res = cli("run", str(tmp_path / "nope.yaml"), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "nope.yaml" in res.stderr and "not found" in res.stderr


def test_real_run_html_report_renders_in_chromium(two_runs, tmp_path):
    """The report.html written by a real `edgebench run` opens in headless Debian Chromium: no console or
    page errors, no network requests, every chart has marks. (CI sets CI=1: a missing browser fails.)"""
    import os
    import shutil

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed; CI must run the browser test")
        pytest.skip("playwright is not installed")
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (make browser); CI must run the browser test")
        pytest.skip("Chromium is not installed (make browser)")
    html = report_path(two_runs["first"].stdout).with_name("report.html")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
            page.goto(html.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(tmp_path / "real-run.png"), full_page=True)
            marks = page.evaluate("() => Array.from(document.querySelectorAll('svg.chart')).map(s => s.querySelectorAll('.mark').length)")
            rows = page.locator("table.cells tbody tr").count()
        finally:
            browser.close()
    assert errors == []
    assert marks and all(n > 0 for n in marks)
    assert rows == 4  # the suite's four cells
    assert (tmp_path / "real-run.png").stat().st_size > 30_000
