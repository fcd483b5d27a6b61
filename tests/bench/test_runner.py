"""Host orchestration (bench/runner.py): child timeouts and kills, and a run where one cell fails."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.runner import Paths, Runner
from edgebench.targets.transport import describe_exit, run_worker
from edgebench.bench.store import Store
from edgebench.bench.worker import CellSpec
from edgebench.reports import render

SMALL_MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2}


def ort_spec(built, key="small_cnn/dense/onnxruntime/fp32/b1/local", **measure) -> CellSpec:
    m = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05, **measure}
    return CellSpec(cell_key=key, backend="onnxruntime", precision="fp32", artifact=str(built.ort_path), batch=1,
                    eval_data=str(built.eval_npz), options={"threads": 1}, measure=MeasureSettings(**m))


def test_run_worker_ok(built, tmp_path):
    out = run_worker(ort_spec(built), tmp_path / "cells", timeout_s=120)
    assert out.returncode == 0
    assert out.result.status == "ok", out.result.error
    assert out.result.accuracy.top1 > 0.9
    stem = "small_cnn__dense__onnxruntime__fp32__b1__local"
    assert {p.name for p in (tmp_path / "cells").iterdir()} >= {f"{stem}.spec.json", f"{stem}.result.json", f"{stem}.stderr.txt"}


def test_run_worker_times_out(built, tmp_path):
    started = []
    out = run_worker(ort_spec(built, min_seconds=60.0, max_seconds=120.0), tmp_path, timeout_s=3, on_start=started.append)
    assert out.result.status == "failed"
    assert "timed out after 3s" in out.result.error
    assert out.returncode is None
    [proc] = started
    assert proc.poll() is not None  # the child was killed, not left running
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # and so was its process group


def test_run_worker_killed_by_sigkill(built, tmp_path):
    def kill(proc: subprocess.Popen) -> None:
        os.kill(proc.pid, signal.SIGKILL)

    out = run_worker(ort_spec(built), tmp_path, timeout_s=60, on_start=kill)
    assert out.result.status == "failed"
    assert "killed by SIGKILL" in out.result.error
    assert out.returncode == -signal.SIGKILL


def test_describe_exit():
    assert describe_exit(3) == "worker exited with code 3 without a result"
    assert "SIGSEGV" in describe_exit(-signal.SIGSEGV)
    assert "out of memory" in describe_exit(-signal.SIGKILL)


@pytest.fixture(scope="module")
def broken_ort_run(built, tmp_path_factory):
    """A real Runner run over a private copy of the cache whose ONNX artifact is garbage."""
    tmp = tmp_path_factory.mktemp("broken-run")
    home = tmp / "home"
    shutil.copytree(built.cache_root, home / "cache")
    # the dense fp32 ONNX artifact (other tests may have added more artifacts to the shared cache)
    broken = [home / "cache" / "artifacts" / built.ort_path.parent.name / built.ort_path.name]
    assert broken[0].exists()
    broken[0].write_bytes(b"garbage, not protobuf" * 100)
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "one-broken", "models": ["small_cnn"], "recipes": ["dense"], "backends": ["onnxruntime", "torch"],
        "precisions": ["fp32", "fp16"], "batch_sizes": [1], "measure": SMALL_MEASURE, "cell_timeout_s": 120,
    }))
    paths = Paths(home=home)
    log: list[str] = []
    runner = Runner(paths, log=log.append)
    summary = runner.run(load_suite(suite))
    return paths, runner, summary, broken[0], log


def test_one_broken_artifact_fails_only_its_cell(broken_ort_run):
    paths, runner, summary, broken, log = broken_ort_run
    assert (summary.cells_ok, summary.cells_failed, summary.cells_skipped) == (1, 1, 2)
    assert (summary.trained, summary.exported) == (0, 0)  # everything came from the copied cache
    store = Store(paths.store_location)
    run = store.run(summary.run_id)
    assert run.status == "finished" and run.summary["cells_failed"] == 1
    cells = {c.cell_key: c for c in store.cells(summary.run_id)}
    assert len(cells) == 4
    bad = cells["small_cnn/dense/onnxruntime/fp32/b1/local"]
    assert bad.status == "failed" and str(broken) in bad.error
    good = cells["small_cnn/dense/torch/fp32/b1/local"]
    assert good.status == "ok" and good.error is None
    assert good.result.accuracy.top1 > 0.9 and len(good.result.samples_ns) >= SMALL_MEASURE["min_runs"]
    assert good.facts["artifact"]["export_check"]["ok"] is True and good.facts["model_key"]
    for key in ("small_cnn/dense/onnxruntime/fp16/b1/local", "small_cnn/dense/torch/fp16/b1/local"):
        assert cells[key].status == "skipped" and "fp16" in cells[key].error
    assert summary.failures == [f"small_cnn/dense/onnxruntime/fp32/b1/local: {bad.error}"]
    assert "local" in store.environments(summary.run_id)
    assert any("failed" in line and "onnxruntime/fp32" in line for line in log)


def test_report_of_a_run_with_a_failed_cell(broken_ort_run):
    paths, runner, summary, broken, log = broken_ort_run
    out = render.write(runner.store, summary.run_id, paths.reports)
    md = (out / "report.md").read_text()
    assert "## Failed and skipped cells" in md
    failures = md.split("## Failed and skipped cells", 1)[1]
    assert "`small_cnn/dense/onnxruntime/fp32/b1/local` (failed)" in failures and str(broken) in failures
    assert "`small_cnn/dense/torch/fp16/b1/local` (skipped)" in failures
    assert "`small_cnn/dense/torch/fp32/b1/local`" not in failures
    table = [line for line in md.splitlines() if line.startswith("| small_cnn |")]
    assert len(table) == 4
    ok_rows = [line for line in table if "| torch | fp32 |" in line]
    assert len(ok_rows) == 1 and "FAILED" not in ok_rows[0] and "SKIPPED" not in ok_rows[0]
    assert any("| onnxruntime | fp32 | 1 | FAILED |" in line for line in table)


def test_paths_layout(tmp_path):
    p = Paths(home=tmp_path)
    assert p.store_location == str(tmp_path / "edgebench.sqlite")
    assert p.cache == tmp_path / "cache" and p.reports == tmp_path / "reports"
    assert p.cells_dir("r1") == tmp_path / "runs" / "r1" / "cells"
    assert Paths(home=tmp_path, store="sqlite:///x.db").store_location == "sqlite:///x.db"


def test_quantize_notes_say_what_a_recipe_quantize_block_does(write_suite, monkeypatch):
    from edgebench.backends.ort import OrtBackend
    from edgebench.bench.runner import quantize_notes

    recipe = write_suite("q.yaml", {"name": "l1-q", "method": "magnitude_unstructured", "params": {"sparsity": 0.5},
                                    "quantize": {"precision": "int8", "calibration": "entropy", "qat": True}})
    only_fp32 = write_suite("a.yaml", {"name": "a", "models": ["small_cnn"], "recipes": [str(recipe)], "backends": ["onnxruntime"]})
    loaded = load_suite(only_fp32)
    notes = quantize_notes(loaded.recipes, loaded.cells())
    assert any("asks for int8" in n and "add int8 to the suite's precisions" in n for n in notes)
    assert not any("quantisation-aware" in n for n in notes)  # no int8 cell: nothing is trained
    with_int8 = write_suite("b.yaml", {"name": "b", "models": ["small_cnn"], "recipes": [str(recipe)], "backends": ["onnxruntime"], "precisions": ["fp32", "int8"]})
    loaded = load_suite(with_int8)
    notes = quantize_notes(loaded.recipes, loaded.cells())
    assert not any("asks for" in n for n in notes)
    assert any("quantisation-aware trained at export on onnxruntime (torchao X86InductorQuantizer)" in n and "2 epochs at lr 0.001" in n for n in notes)
    # a backend without QAT is named, and its int8 said to be post-training with the recipe's calibration
    monkeypatch.setattr(OrtBackend, "qat_quantizer", None)
    notes = quantize_notes(loaded.recipes, loaded.cells())
    assert any("onnxruntime has no quantisation-aware training" in n and "post-training (entropy calibration)" in n for n in notes)


def test_a_full_disk_while_building_stops_the_run_and_names_the_file(tmp_path, write_suite, monkeypatch):
    from edgebench.bench.contracts.files import CannotWrite
    from edgebench.bench.prepare import Preparer

    suite = write_suite("s.yaml", {"name": "s", "models": ["small_cnn"], "recipes": ["dense"], "backends": ["onnxruntime"], "batch_sizes": [1, 8]})
    blocked = tmp_path / "home" / "cache" / "dense" / "k" / "model.pt"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(blocked))

    monkeypatch.setattr(Preparer, "dense", full)
    runner = Runner(Paths(home=tmp_path / "home"), log=lambda m: None)
    with pytest.raises(CannotWrite) as err:
        runner.run(load_suite(suite))
    # one error for the run, not one failed cell per cell with the same cause
    assert err.value.path == str(blocked) and "No space left on device" in str(err.value)
    assert runner.store.run(runner.run_id).status == "interrupted"
    assert runner.store.cells(runner.run_id) == []


def test_cancelling_a_local_cell_kills_its_worker_at_once(built, tmp_path):
    """Ctrl-C cancels the board's task: the worker child (its own session, so the terminal's SIGINT never
    reaches it) is killed then, not left to finish its cell."""
    import asyncio

    import psutil

    from edgebench.targets.profiles import Profiles
    from edgebench.targets.transport import LocalTransport

    transport = LocalTransport(Profiles().get("local"), tmp_path)
    spec = ort_spec(built, min_seconds=30.0, min_runs=10**7)

    async def scenario() -> tuple[list[psutil.Process], float]:
        task = asyncio.ensure_future(transport.run_cell(spec.to_json(), "long", 120))
        me, workers = psutil.Process(), []
        for _ in range(600):
            await asyncio.sleep(0.05)
            workers = [c for c in me.children(recursive=True) if "long.spec.json" in " ".join(c.cmdline())]
            if workers:
                break
        assert workers, "the worker never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)
        assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "the worker outlived its cancelled cell"
        return workers, time.monotonic()

    workers, cancelled_at = asyncio.run(scenario())
    # asyncio.run returns once the thread waiting for the child is done: at once, not in 30 s
    assert time.monotonic() - cancelled_at < 2.0
