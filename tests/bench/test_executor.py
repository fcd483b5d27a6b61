"""`--executor ray` (bench/executor.py): the prepare steps as Ray tasks on a local Ray (2 CPUs) give the
same cache keys, the same files (sha256) and the same counters as the in-process pipeline; a step that
cannot exist is skipped with the same reason; the driver's in-process pass is all lookups."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgebench.bench import executor
from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError, one_line
from edgebench.bench.contracts.files import CannotWrite
from edgebench.bench.prepare import NotApplicable, Preparer
from edgebench.backends import base as backends
from edgebench.models.cache import Cache

SMALL_MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2}
SUITE = {"name": "ray-tiny", "models": ["small_cnn"], "recipes": ["dense", "l1-unstructured-50"],
         "backends": ["torch", {"name": "onnxruntime", "precisions": ["fp32", "int8"]}, {"name": "litert", "precisions": ["fp32"]}],
         "precisions": ["fp32"], "batch_sizes": [1], "measure": SMALL_MEASURE}


def prepare_inprocess(cells, preparer) -> dict[str, tuple[str, str]]:
    """What Runner._prepare decides per cell: ("ok", artifact key) or (skipped|failed, reason)."""
    out = {}
    for cell in cells:
        if executor._skipped_before_prepare(cell, preparer):
            out[cell.key] = ("skipped", "before prepare")
            continue
        backend = backends.get(cell.backend)
        try:
            preparer.dense(cell.model)
            preparer.pruned(cell.model, cell.recipe)
            art = preparer.artifact(cell.model, cell.recipe, cell.backend, cell.precision,
                                    {k: v for k, v in cell.options.items() if k in backend.export_options})
            out[cell.key] = ("ok", art.key)
        except NotApplicable as exc:
            out[cell.key] = ("skipped", str(exc))
        except Exception as exc:
            out[cell.key] = ("failed", f"{type(exc).__name__}: {one_line(exc, 400)}")
    return out


def file_hashes(cache_root: Path) -> dict[str, str]:
    """sha256 of every built file (manifest.json holds build times, so it is compared by payload)."""
    return {str(p.relative_to(cache_root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cache_root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def counts(preparer) -> tuple[int, int, int, int]:
    c = preparer.counters
    return c.trained, c.pruned, c.exported, c.cache_hits


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def driver_threads():
    """The in-process run's torch thread count matters (1 vs 2 threads train different bits): pin it to
    what a fresh process on this machine has, on both sides, and put it back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def suite_cells(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "ray-tiny.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    return load_suite(path).cells()


def no_builds(monkeypatch):
    """The driver must not build or even look up anything after the tasks seeded it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the driver's in-process pass built a step the Ray tasks should have done")
    monkeypatch.setattr(Cache, "get_or_build", refuse)


# -- without Ray: the plan, the exceptions that travel, the executor names ---------------------------
def test_plan_has_each_step_once_in_the_in_process_order(suite_cells):
    prep = Preparer(Cache(Path("/nonexistent")), log=lambda m: None)
    plan = executor.plan(suite_cells, prep, threads=2)
    kinds = [s.kind for s in plan.steps]
    assert kinds.count("dense") == 1 and kinds.count("pruned") == 1  # the dense recipe is an alias of the dense model
    assert kinds.count("artifact") == 2 * 4  # 2 recipes x (torch, ort fp32, ort int8, litert fp32)
    assert len({s.key for s in plan.steps}) == len(plan.steps)
    assert list(plan.aliases.values()) == [executor.dense_key("small_cnn")]
    int8 = [s for s in plan.steps if s.precision == "int8"]
    assert all(any(n[0] == "artifact" and n[4] == "fp32" for n in s.needs) for s in int8)  # its reference first
    for step in plan.steps:  # every step's inputs come before it
        earlier = {s.key for s in plan.steps[: plan.steps.index(step)]} | set(plan.aliases)
        assert set(step.needs) <= earlier


def test_plan_gives_each_step_the_threads_the_in_process_run_uses(suite_cells):
    plan = executor.plan(suite_cells, Preparer(Cache(Path("/nonexistent")), log=lambda m: None), threads=2)
    assert any(s.kind == "artifact" and s.backend == "torch" for s in plan.steps)
    assert {s.threads for s in plan.steps} == {2}  # the torch artifact's check gives torch its threads back


def test_errors_travel_with_their_type():
    skip = executor.portable(NotApplicable("x.onnx: recipe 'l1' needs the PyTorch module"))
    assert type(pickle.loads(pickle.dumps(skip))) is NotApplicable
    full = pickle.loads(pickle.dumps(executor.portable(CannotWrite("/cache/x", "No space left on device"))))
    assert isinstance(full, CannotWrite) and full.path == "/cache/x" and "free some space" in str(full)

    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}-{b}")

    odd = pickle.loads(pickle.dumps(executor.portable(Odd(1, 2))))
    assert type(odd).__name__ == "Odd" and str(odd) == "1-2"  # the cell's failure text is unchanged


def test_unknown_executor_is_one_line():
    with pytest.raises(ConfigError, match=r"--executor 'dask': unknown executor; use one of inprocess, ray"):
        executor.check_executor("dask")


def test_ray_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'edgebench\[fleet\]'"):
        executor.check_executor("ray")


def test_no_cluster_at_the_address_is_one_line(suite_cells, monkeypatch):
    ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray instance is running here: address 'auto' would find it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    prep = Preparer(Cache(Path("/nonexistent")), log=lambda m: None)
    with pytest.raises(ConfigError, match=r"--ray-address auto: cannot connect to a Ray cluster there .*ray start --head"):
        executor.prepare_on_ray(suite_cells, prep, address="auto")


def test_nothing_to_prepare_starts_no_ray():
    ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already initialised in this process")
    plan = executor.prepare_on_ray([], Preparer(Cache(Path("/nonexistent")), log=lambda m: None))
    assert plan.steps == [] and not ray.is_initialized()


# -- a local Ray against the in-process pipeline ----------------------------------------------------
@pytest.mark.slow
def test_same_keys_files_and_counters_as_in_process(local_ray, suite_cells, driver_threads, tmp_path, monkeypatch):
    inproc = Preparer(Cache(tmp_path / "B"), log=lambda m: None)
    expected = prepare_inprocess(suite_cells, inproc)
    import torch

    assert torch.get_num_threads() == driver_threads  # checking the torch artifact gave torch its threads back
    lines: list[str] = []
    remote = Preparer(Cache(tmp_path / "A"), log=lines.append)
    executor.prepare_on_ray(suite_cells, remote)
    with monkeypatch.context() as m:
        no_builds(m)
        got = prepare_inprocess(suite_cells, remote)
    assert got == expected
    assert all(status == "ok" for status, _ in got.values())
    assert counts(remote) == counts(inproc) == (1, 1, 8, 0)
    assert file_hashes(tmp_path / "A") == file_hashes(tmp_path / "B")
    assert sum("trained" in line for line in lines) == 1 and sum("exported" in line for line in lines) == 8

    again = Preparer(Cache(tmp_path / "A"), log=lambda m: None)  # a second Ray run finds everything cached
    executor.prepare_on_ray(suite_cells, again)
    assert counts(again) == (0, 0, 0, 10)


@pytest.mark.slow
def test_a_step_that_cannot_exist_is_skipped_with_the_same_reason(local_ray, built, driver_threads, tmp_path, monkeypatch):
    """A given ONNX file cannot be pruned (NotApplicable) nor exported for LiteRT: the same skips both ways,
    and a failing step is not retried for its second cell."""
    onnx_file = tmp_path / "given.onnx"
    onnx_file.write_bytes(built.ort_path.read_bytes())
    suite = tmp_path / "given.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "given", "models": [{"name": "mine", "onnx": "given.onnx", "dataset": "digits", "input_size": 32}],
        "recipes": ["dense", "l1-unstructured-50"], "backends": ["onnxruntime", "litert"], "precisions": ["fp32"],
        "batch_sizes": [1, 8], "measure": SMALL_MEASURE,
    }))
    loaded = load_suite(suite)
    cells = loaded.cells()
    expected = prepare_inprocess(cells, Preparer(Cache(tmp_path / "B"), log=lambda m: None, models=dict(loaded.user_models)))
    remote = Preparer(Cache(tmp_path / "A"), log=lambda m: None, models=dict(loaded.user_models))
    plan = executor.prepare_on_ray(cells, remote)
    with monkeypatch.context() as m:
        no_builds(m)
        got = prepare_inprocess(cells, remote)
    assert got == expected
    reasons = {k: v for k, v in got.items() if v[0] == "skipped"}
    assert any("needs the PyTorch module" in r for _, r in reasons.values())
    assert any("it runs on" in r for _, r in reasons.values())
    assert got["mine/dense/onnxruntime/fp32/b1/local"][0] == "ok"
    assert len(plan.steps) == len({s.key for s in plan.steps})  # batch 1 and 8 share every step
    assert file_hashes(tmp_path / "A") == file_hashes(tmp_path / "B")


FACTORY = """
import torch.nn as nn

def tiny(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
"""


@pytest.mark.slow
def test_user_models_travel_with_the_tasks(local_ray, driver_threads, tmp_path, monkeypatch):
    """A factory beside the suite is imported on the Ray workers from the suite's folder (``pythonpath``)."""
    import numpy as np

    (tmp_path / "usernets_for_ray_test.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((30, 3, 32, 32)).astype(np.float32), y=np.arange(30) % 3)
    suite = tmp_path / "mine.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "mine", "models": [{"name": "mine", "factory": "usernets_for_ray_test:tiny", "dataset": "data.npz", "train_epochs": 1}],
        "recipes": ["dense", "l1-unstructured-50"], "backends": ["onnxruntime"], "batch_sizes": [1], "measure": SMALL_MEASURE,
    }))
    loaded = load_suite(suite)
    cells, models = loaded.cells(), dict(loaded.user_models)
    # first without the suite's folder on the workers (before any task of this test put it on their sys.path)
    lost = Preparer(Cache(tmp_path / "C"), log=lambda m: None, models=models)
    executor.prepare_on_ray(cells, lost)
    with monkeypatch.context() as m:
        no_builds(m)
        failed = prepare_inprocess(cells, lost)
    assert {status for status, _ in failed.values()} == {"failed"}
    assert all("usernets_for_ray_test" in reason for _, reason in failed.values())
    expected = prepare_inprocess(cells, Preparer(Cache(tmp_path / "B"), log=lambda m: None, models=models))
    import torch

    torch.set_num_threads(driver_threads)
    remote = Preparer(Cache(tmp_path / "A"), log=lambda m: None, models=models)
    executor.prepare_on_ray(cells, remote, pythonpath=[str(tmp_path)])
    with monkeypatch.context() as m:
        no_builds(m)
        assert prepare_inprocess(cells, remote) == expected
    assert {status for status, _ in expected.values()} == {"ok"}
    assert file_hashes(tmp_path / "A") == file_hashes(tmp_path / "B")



@pytest.mark.slow
def test_cli_run_with_executor_ray(built, tmp_path):
    pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny", "models": ["small_cnn"], "recipes": ["dense", "l1-unstructured-50"],
        "backends": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1],
        "measure": SMALL_MEASURE, "cell_timeout_s": 120,
    }))
    exe = Path(sys.executable).parent / "edgebench"
    env = {**os.environ, "COLUMNS": "250"}
    home = tmp_path / "home"
    run = subprocess.run([str(exe), "run", str(suite), "--home", str(home), "--executor", "ray"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ray: started a local instance" in run.stdout
    assert "2 ok, 0 failed, 0 skipped" in run.stdout
    assert "built 1 trained, 1 pruned, 2 exported, 0 from cache" in run.stdout
    bad = subprocess.run([str(exe), "run", str(suite), "--home", str(home), "--executor", "dask"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "unknown executor" in bad.stderr


CTRL_C = """
import sys, ray, yaml
from pathlib import Path
from edgebench.bench import executor
from edgebench.bench.config import load_suite
from edgebench.bench.prepare import Preparer
from edgebench.models.cache import Cache

def interrupt(*args):
    raise KeyboardInterrupt
executor._seed = interrupt  # Ctrl-C as the first step comes back
loaded = load_suite(sys.argv[1])
try:
    executor.prepare_on_ray(loaded.cells(), Preparer(Cache(Path(sys.argv[2])), log=print), num_cpus=2)
except KeyboardInterrupt:
    print("interrupted; ray initialized:", ray.is_initialized())
"""


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_stops_the_ray_it_started(tmp_path):
    pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "backends": ["onnxruntime"]}))
    out = subprocess.run([sys.executable, "-c", CTRL_C, str(suite), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=300)
    assert "interrupted; ray initialized: False" in out.stdout, out.stdout + out.stderr
    assert not list((tmp_path / "cache").glob("artifacts/*/manifest.json"))  # the steps after the first never finished


@pytest.mark.slow
def test_fit_sensitivity_per_group_on_ray_is_the_same(local_ray, built, driver_threads):
    """`edgebench fit`'s sensitivity, one task per channel group: the same rows, bit for bit."""
    import torch

    from edgebench.models import data as datasets
    from edgebench.models import fit as fitlib

    module, data = built.module(), datasets.load("digits", 32)
    example = torch.from_numpy(data.x_test[:1])
    groups = fitlib.channel_groups(module, example)
    candidates = {g.name: fitlib.candidate_widths(g.width, 4) for g in groups}
    train_idx, hold = fitlib.holdout_split(len(data.x_train), 0.2, 0)
    args = (data.x_train[hold][:200], data.y_train[hold][:200], data.x_train[train_idx][:256])
    torch.set_num_threads(driver_threads)
    expected = fitlib.sensitivity(module, example, groups, candidates, *args[:2], recalib_x=args[2])
    torch.set_num_threads(driver_threads)
    got = executor.sensitivity_on_ray(module, example, groups, candidates, *args)
    assert len(groups) > 1 and len(got) == len(expected) > len(groups)
    assert got == expected


@pytest.mark.slow
def test_fitter_sensitivity_with_executor_ray(local_ray, built, driver_threads, tmp_path):
    """FitOptions(executor="ray") reaches the Fitter's sensitivity: the same cached rows as in-process."""
    import torch

    from edgebench.bench.fit import FitOptions, Fitter
    from edgebench.bench.runner import Paths
    from edgebench.models import data as datasets
    from edgebench.models import fit as fitlib

    module, data = built.module(), datasets.load("digits", 32)
    groups = fitlib.channel_groups(module, torch.from_numpy(data.x_test[:1]))
    candidates = {g.name: fitlib.candidate_widths(g.width, 8) for g in groups}
    dense = type("DenseEntry", (), {"key": "test-dense"})()  # the sensitivity's cache key needs only the dense key
    rows = {}
    for name in ("inprocess", "ray"):
        torch.set_num_threads(driver_threads)
        fitter = Fitter(Paths(tmp_path / name), log=lambda m: None)
        rows[name], reused = fitter._sensitivity(dense, module, groups, candidates, data, FitOptions(executor=name))
        assert not reused
    assert rows["ray"] == rows["inprocess"] and rows["ray"]
    with pytest.raises(ConfigError, match="unknown executor"):
        Fitter(Paths(tmp_path / "bad"), log=lambda m: None)._sensitivity(dense, module, groups, candidates, data, FitOptions(executor="dask"))
