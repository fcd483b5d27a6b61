"""Hand-built stores for the report tests: real Store, real CellRecords with every latency sample, no
models trained. ``default_suite_store`` has the shape of the built-in default suite (3 recipes x torch and
ONNX Runtime x batch 1 and 8 on one target); ``failed_store`` has failed and skipped cells."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Contention, Fidelity, MemoryStats
from edgebench.bench.stats import summarize
from edgebench.bench.store import CellRecord, RunRecord, Store

# The suite the synthetic cells below came from (the default suite of edgebench 0.1): fixed here so the
# report tests do not change when the built-in default suite does.
DEFAULT_SUITE_YAML = """name: default
models: [small_cnn]
recipes: [dense, l1-unstructured-50, l1-unstructured-80]
backends: [torch, onnxruntime]
precisions: [fp32]
batch_sizes: [1, 8]
targets: [local]
"""

FINGERPRINT = {
    "hostname": "bench-host", "board_model": "not available", "cpu_model": "Test CPU @ 2.0GHz", "machine": "x86_64",
    "logical_cpus": 2, "physical_cores": 2, "cpu_affinity": [0, 1],
    "cpufreq": [{"policy": "policy0", "cpus": "0 1", "governor": "performance", "min_mhz": 800.0, "max_mhz": 3000.0, "cur_mhz": 2999.9}],
    "cpu_freq_mhz": {"current": 2999.9, "min": 800.0, "max": 3000.0}, "memory_total_mib": 24106,
    "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-test", "python": "3.11.7", "python_implementation": "CPython",
    "numpy": "2.4.6", "backends": {"onnxruntime": {"available": True, "version": "1.32.0", "reason": ""},
                                   "torch": {"available": True, "version": "2.13.0+cpu", "reason": ""}},
    "edgebench_version": "0.1.0", "edgebench_commit": "0123456789abcdef", "load_average": [0.5, 0.4, 0.3],
}


def samples_ns(median_ms: float, n: int, seed: int, spread: float = 0.03) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.lognormal(np.log(median_ms * 1e6), spread, n)]


def ok_cell(model: str, recipe: str, backend: str, batch: int, samples: list[int], top1: float, *, target: str = "local",
            precision: str = "fp32", sparsity: float = 0.0, params: int = 24346, macs: int = 2_892_426, size: int = 112_451,
            rss: float = 70.0, agreement: float = 1.0, flags: tuple[Flag, ...] = (), contended: bool = False,
            evidence: Evidence | None = None, processes: int = 3) -> CellRecord:
    key = f"{model}/{recipe}/{backend}/{precision}/b{batch}/{target}"
    nonzero = int(params * (1 - sparsity))
    # measured in ``processes`` worker processes, as measure.processes does (samples in process order)
    counts = [len(part) for part in np.array_split(np.arange(len(samples)), processes)] if processes > 1 else []
    result = CellResult(
        "ok", evidence=evidence or Evidence(backend, sparse_kernels=False), load_s=0.01, first_inference_s=0.002,
        samples_ns=list(samples), latency=summarize(samples, batch),
        memory=MemoryStats(rss - 14, rss, 14.0, rss / 2, 3.0, rss / 2 - 3, 0.01, 100),
        accuracy=Accuracy(360, top1, 1.0), fidelity=Fidelity(agreement, 0.5, 0.05),
        contention=Contention(0.3 if contended else 0.01, 0.5, 2, contended),
        flags=list(flags) + ([Flag("contended", "contended: other processes used 30% of the CPU while measuring")] if contended else []),
        processes=max(1, processes), process_samples=counts,
    )
    return CellRecord(key, model, recipe, backend, precision, batch, target, "ok", options={"threads": 2},
                      facts={"model": {"params": params, "nonzero_params": nonzero, "macs": macs, "sparsity": sparsity,
                                       "weight_sparsity": sparsity},
                             "artifact": {"size_bytes": size, "export_check": {"max_abs_diff": 3e-6}}},
                      result=result)


@dataclass
class BuiltStore:
    home: Path
    store: Store
    run_id: str
    cells: list[CellRecord]

    @property
    def location(self) -> str:
        return str(self.home / "edgebench.sqlite")


def new_run(home: Path, run_id: str, suite_yaml: str = DEFAULT_SUITE_YAML, name: str = "default", minute: int = 0) -> Store:
    store = Store(home / "edgebench.sqlite")
    store.create_run(RunRecord(run_id, name, str(Path(__file__).resolve().parents[2] / "bench" / "suites" / "default.yaml"),
                               suite_yaml, "running", dt.datetime(2026, 11, 24, 7, minute, 0, tzinfo=dt.timezone.utc)))
    store.add_environment(run_id, "local", FINGERPRINT)
    return store


def finish(store: Store, run_id: str, cells: list[CellRecord]) -> None:
    for c in cells:
        store.add_cell(run_id, c)
    counts = {s: sum(c.status == s for c in cells) for s in ("ok", "failed", "skipped")}
    store.finish_run(run_id, "finished", {"cells_ok": counts["ok"], "cells_failed": counts["failed"], "cells_skipped": counts["skipped"],
                                          "trained": 1, "pruned": 2, "exported": 6, "cache_hits": 0})


def default_suite_cells() -> list[CellRecord]:
    """small_cnn x {dense, l1-unstructured-50, l1-unstructured-80} x {torch, onnxruntime} x batch {1, 8}.

    As on a real CPU: unstructured zeros run dense, so each backend's three recipes take the same time;
    ONNX Runtime is ~3x faster than torch; l1-unstructured-80 loses 1.5 points of top-1 (over the default
    1-point limit). So the p90 answer is a tie between dense and l1-unstructured-50 on onnxruntime at batch 1.
    """
    base = {("torch", 1): 0.90, ("torch", 8): 3.2, ("onnxruntime", 1): 0.30, ("onnxruntime", 8): 1.1}
    top1 = {"dense": 0.9806, "l1-unstructured-50": 0.9806, "l1-unstructured-80": 0.9656}
    cells = []
    seed = 0
    for recipe, sparsity in (("dense", 0.0), ("l1-unstructured-50", 0.5), ("l1-unstructured-80", 0.8)):
        for backend in ("torch", "onnxruntime"):
            for batch in (1, 8):
                seed += 1
                n = 400 if backend == "onnxruntime" else 150
                cells.append(ok_cell("small_cnn", recipe, backend, batch, samples_ns(base[(backend, batch)], n, seed), top1[recipe],
                                     sparsity=sparsity, size=112_451 if backend == "onnxruntime" else 104_448,
                                     rss=70.0 if backend == "onnxruntime" else 238.0, agreement=1.0 if recipe == "dense" else 0.99,
                                     contended=(backend == "torch" and batch == 8 and recipe == "dense")))
    return cells


@pytest.fixture(scope="session")
def default_store(tmp_path_factory) -> BuiltStore:
    home = tmp_path_factory.mktemp("default-suite-home")
    run_id = "20261124-070000-d3f4"
    store = new_run(home, run_id)
    cells = default_suite_cells()
    finish(store, run_id, cells)
    return BuiltStore(home, store, run_id, cells)


FAILED_REASON = "worker killed by SIGKILL (out of memory, or killed from outside)"
LOAD_REASON = "/cache/x/model.onnx: onnxruntime could not load it (InvalidProtobuf: ...); re-export it or check the file"


def failed_cells() -> list[CellRecord]:
    ok = [ok_cell("small_cnn", "dense", "torch", 1, samples_ns(0.9, 120, 1), 0.98),
          ok_cell("small_cnn", "l1-unstructured-50", "torch", 1, samples_ns(0.9, 120, 2), 0.98, sparsity=0.5)]
    failed = CellRecord("small_cnn/dense/onnxruntime/fp32/b1/local", "small_cnn", "dense", "onnxruntime", "fp32", 1, "local", "failed",
                        error=LOAD_REASON, result=CellResult.failed(LOAD_REASON, traceback="Traceback (most recent call last):\n  File \"worker.py\"\nRuntimeError: InvalidProtobuf"))
    killed = CellRecord("small_cnn/l1-unstructured-50/onnxruntime/fp32/b1/local", "small_cnn", "l1-unstructured-50", "onnxruntime", "fp32", 1,
                        "local", "failed", error=FAILED_REASON, result=CellResult.failed(FAILED_REASON))
    skipped = CellRecord("small_cnn/dense/torch/int8/b1/local", "small_cnn", "dense", "torch", "int8", 1, "local", "skipped",
                         error="torch supports precisions fp32, not int8")
    return ok + [failed, killed, skipped]


@pytest.fixture(scope="session")
def failed_store(tmp_path_factory) -> BuiltStore:
    home = tmp_path_factory.mktemp("failed-home")
    run_id = "20261124-080000-fa11"
    store = new_run(home, run_id, suite_yaml="name: broken\nmodels: [small_cnn]\n", name="broken")
    cells = failed_cells()
    finish(store, run_id, cells)
    return BuiltStore(home, store, run_id, cells)
