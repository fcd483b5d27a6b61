"""The result store (bench/store.py): exact round trips, run lookup, two handles on one store; every test runs on
SQLite and on a real PostgreSQL server (the ``store_url`` fixture, tests/conftest.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.evidence import Delegation, Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.identity import CellId
from edgebench.bench.contracts.results import Accuracy, CellResult, Contention, Fidelity, LatencyStats, MemoryStats
from edgebench.bench.store import CellRecord, RunRecord, Store

UTC = dt.timezone.utc


def run_record(run_id: str, created: dt.datetime) -> RunRecord:
    return RunRecord(id=run_id, suite_name="s", suite_source="/x/s.yaml", suite_yaml="models: [small_cnn]\n",
                     status="running", created_at=created, edgebench_version="9.9", git_commit="abc123")


def full_result() -> CellResult:
    return CellResult(
        status="ok",
        evidence=Evidence("onnxruntime", version="1.2.3", providers=["CPUExecutionProvider"], threads=2, sparse_kernels=False,
                          delegation=Delegation("none", 12, 10, 1, ["Gemm", "Softmax"]), details={"intra_op_threads": 2}),
        load_s=0.0123,
        first_inference_s=0.00456,
        warmup_runs=12,
        warmup_s=0.51,
        samples_ns=[987_654, 123_456, 2**40 + 7, 555_555, 123_456],  # unsorted, a repeat, one beyond 32 bits
        latency=LatencyStats(n=5, min_ms=0.123456, mean_ms=0.3, std_ms=0.1, cov=1 / 3, p50_ms=0.555555, p90_ms=0.9,
                             p95_ms=0.95, p99_ms=0.99, max_ms=1099511.627783, throughput_ips=1234.5),
        memory=MemoryStats(baseline_rss_mib=50.5, peak_rss_mib=70.25, peak_rss_delta_mib=19.75, peak_uss_mib=None,
                           peak_uss_delta_mib=None, baseline_uss_mib=None, sample_interval_s=0.01, n_samples=3),
        memory_timeline=[[0.0, 50.5, -1.0], [0.01, 60.0, 55.5], [0.02, 70.25, -1.0]],
        accuracy=Accuracy(n=360, top1=0.975, top5=1.0),
        fidelity=Fidelity(top1_agreement=0.99722, max_abs_diff=3.1e-6, mean_abs_diff=4.2e-7),
        contention=Contention(other_cpu_share=0.07, own_cpu_share=0.49, logical_cpus=2, contended=True),
        flags=[Flag("high-variance", "high variance: CoV 33.3% > 5%"),
               Flag("contended", "contended: other processes used 7% of the CPU while measuring")],
        worker_wall_s=3.5,
    )


@pytest.fixture
def store(store_url) -> Store:
    return Store(store_url)


def test_run_and_environment_round_trip(store):
    created = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    run = run_record("run-a", created)
    store.create_run(run)
    fp = {"cpu_model": "X", "logical_cpus": 2, "cpufreq": "not available", "backends": {"torch": {"available": True, "version": "2"}}}
    store.add_environment("run-a", "local", fp)
    assert store.environments("run-a") == {"local": fp}

    got = store.run("run-a")
    assert got == run
    assert got.created_at.tzinfo is not None and got.created_at == created

    store.finish_run("run-a", "finished", {"cells_ok": 3, "failures": ["a: b"]})
    done = store.run("run-a")
    assert done.status == "finished"
    assert done.summary == {"cells_ok": 3, "failures": ["a: b"]}
    assert done.finished_at is not None and done.finished_at.tzinfo is not None


def test_cell_round_trip_with_full_result_and_samples(store):
    store.create_run(run_record("r1", dt.datetime.now(UTC)))
    cell = CellRecord(
        cell_key="small_cnn/dense/onnxruntime/fp32/b1/local", model="small_cnn", recipe="dense", backend="onnxruntime",
        precision="fp32", batch=1, target="local", status="ok", options={"threads": 2},
        facts={"model": {"params": 23466, "weight_sparsity": 0.0}, "artifact": {"size_bytes": 112451, "files": ["model.onnx"]}},
        result=full_result(),
        started_at=dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), finished_at=dt.datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC),
    )
    cell_id = store.add_cell("r1", cell)
    assert cell.row_id == cell_id

    [back] = store.cells("r1")
    assert back == cell  # every field, nested dataclasses included
    assert back.result.samples_ns == [987_654, 123_456, 2**40 + 7, 555_555, 123_456]
    assert all(type(v) is int for v in back.result.samples_ns)
    assert back.result.latency.p50_ms == 0.555555

    [light] = store.cells("r1", with_samples=False)
    assert light.result.samples_ns == []
    assert light.result.latency == cell.result.latency


def test_failed_and_skipped_cells_round_trip(store):
    store.create_run(run_record("r1", dt.datetime.now(UTC)))
    failed = CellRecord("m/dense/torch/fp32/b1/local", "m", "dense", "torch", "fp32", 1, "local", status="failed",
                        error="worker killed by SIGKILL", result=CellResult.failed("worker killed by SIGKILL"))
    skipped = CellRecord("m/dense/torch/int8/b1/local", "m", "dense", "torch", "int8", 1, "local", status="skipped",
                         error="torch supports precisions fp32, not int8", result=None)
    store.add_cell("r1", failed)
    store.add_cell("r1", skipped)
    back = store.cells("r1")
    assert [c.cell_key for c in back] == [failed.cell_key, skipped.cell_key]
    assert back[0] == failed and back[0].result.status == "failed" and back[0].result.samples_ns == []
    assert back[1] == skipped and back[1].result is None


def test_cells_are_per_run(store):
    for rid in ("r1", "r2"):
        store.create_run(run_record(rid, dt.datetime.now(UTC)))
    store.add_cell("r1", CellRecord("k1", "m", "dense", "torch", "fp32", 1, "local", "ok", result=CellResult("ok", samples_ns=[1, 2])))
    store.add_cell("r2", CellRecord("k2", "m", "dense", "torch", "fp32", 1, "local", "ok", result=CellResult("ok", samples_ns=[3])))
    assert [c.cell_key for c in store.cells("r1")] == ["k1"]
    assert [c.result.samples_ns for c in store.cells("r2")] == [[3]]


def test_resolve_latest_prefix_and_unknown(store):
    t = dt.datetime(2024, 1, 1, tzinfo=UTC)
    store.create_run(run_record("20240101-000000-aaaa", t))
    store.create_run(run_record("20240101-000000-abcd", t + dt.timedelta(seconds=5)))
    store.create_run(run_record("20231231-235959-ffff", t - dt.timedelta(days=1)))
    assert store.resolve("latest") == "20240101-000000-abcd"
    assert store.run("latest").id == "20240101-000000-abcd"
    assert store.resolve("20240101-000000-aaaa") == "20240101-000000-aaaa"
    assert store.resolve("2023") == "20231231-235959-ffff"  # unique prefix
    assert store.resolve("20240101-000000-ab") == "20240101-000000-abcd"
    assert [r.id for r in store.runs()] == ["20240101-000000-abcd", "20240101-000000-aaaa", "20231231-235959-ffff"]
    for bad in ("2024", "nope"):  # ambiguous prefix, unknown id
        with pytest.raises(EdgebenchError) as info:
            store.resolve(bad)
        msg = str(info.value)
        assert repr(bad) in msg
        assert store.display_url in msg
        assert "\n" not in msg


def test_latest_on_an_empty_store_is_an_error(store):
    with pytest.raises(EdgebenchError, match="no run 'latest'"):
        store.resolve("latest")


def test_two_handles_see_each_others_writes(store_url):
    a, b = Store(store_url), Store(store_url)
    a.create_run(run_record("from-a", dt.datetime.now(UTC)))
    assert [r.id for r in b.runs()] == ["from-a"]
    b.add_cell("from-a", CellRecord("k", "m", "dense", "torch", "fp32", 1, "local", "ok", result=CellResult("ok", samples_ns=[42, 7])))
    assert [c.result.samples_ns for c in a.cells("from-a")] == [[42, 7]]
    a.finish_run("from-a", "finished", {"cells_ok": 1})
    assert b.run("from-a").status == "finished"


def test_store_accepts_a_sqlalchemy_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'via-url.sqlite'}"
    s = Store(url)
    s.create_run(run_record("u", dt.datetime.now(UTC)))
    assert (tmp_path / "via-url.sqlite").exists()
    assert Store(tmp_path / "via-url.sqlite").resolve("u") == "u"


def test_cell_identity_is_a_cell_id(store):
    store.create_run(run_record("r1", dt.datetime.now(UTC)))
    cell = CellRecord("small_cnn/dense/torch/fp32/b4/pi5", "small_cnn", "dense", "torch", "fp32", 4, "pi5", "ok")
    store.add_cell("r1", cell)
    [back] = store.cells("r1")
    assert back.id == CellId("small_cnn", "dense", "torch", "fp32", 4, "pi5") == CellId.parse(back.cell_key)
    assert back.id.key == back.cell_key and back.row_id == cell.row_id is not None


def test_recipe_definition_round_trips(store):
    """The recipe as it was validated is kept with the cell, so a report needs no suite or recipe file."""
    from edgebench.models import recipes

    store.create_run(run_record("r1", dt.datetime.now(UTC)))
    recipe = recipes.load("l1-unstructured-50")
    definition = recipe.model_dump(mode="json")
    store.add_cell("r1", CellRecord("m/l1-unstructured-50/torch/fp32/b1/local", "m", recipe.name, "torch", "fp32", 1, "local", "ok",
                                    result=CellResult("ok", samples_ns=[1]), recipe_def=definition))
    store.add_cell("r1", CellRecord("m/dense/torch/fp32/b1/local", "m", "dense", "torch", "fp32", 1, "local", "ok"))
    with_def, without = store.cells("r1")
    assert with_def.recipe_def == definition and recipes.parse(with_def.recipe_def, "stored") == recipe
    assert without.recipe_def is None
    [light] = store.cells("r1", with_samples=False)[:1]
    assert light.recipe_def == definition
