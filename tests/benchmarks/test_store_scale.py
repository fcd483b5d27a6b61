"""Store benchmarks (``make bench``): bytes per stored latency sample, store growth per default-suite run,
and loading one cell's history over a year of nightly runs (issue 19's goals: <= 4 bytes a sample, >= 8x
smaller per run than one row per sample, a year's history in under a second).

The samples are real: the 16,531 of tests/bench/data/store-rev0004.sqlite (written by the release before
sample blobs), resampled with replacement to the default suite's size, 30 cells / 560,000 samples (tiling
them instead would repeat whole stretches, which zlib would find and make look smaller than it is). The old
layout is measured here too: the same cells beside a table of the old one-row-per-sample shape.
Only the round trip is asserted; sizes and times are printed, this machine being shared and noisy.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from edgebench.bench.contracts.results import CellResult
from edgebench.bench.contracts.samples import CODEC, decode_ns, encode_ns
from edgebench.bench.store import CellRecord, RunRecord, Store, cell_samples, cells, runs

pytestmark = pytest.mark.benchmark

REV4_STORE = Path(__file__).parents[1] / "bench" / "data" / "store-rev0004.sqlite"
CELLS, SAMPLES = 30, 560_000  # the default suite: 30 cells, 560k samples a run (3 processes x ~100-2000 runs)
NIGHTS = 365
T0 = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
OLD_SAMPLES = sa.Table("samples", sa.MetaData(),  # the layout before revision 0005 (bench/migrations/versions/0001_initial.py)
                       sa.Column("cell_id", sa.Integer, primary_key=True, autoincrement=False),
                       sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
                       sa.Column("latency_ns", sa.BigInteger, nullable=False))


@pytest.fixture(scope="module")
def suite_run() -> list[tuple[str, CellResult]]:
    """30 (cell key, result) of the default suite's size, from the fixture's real cells and samples."""
    with sqlite3.connect(REV4_STORE) as c:
        rows = c.execute("SELECT c.id, c.result FROM cells c WHERE c.status = 'ok' ORDER BY c.id").fetchall()
        samples = {cid: np.array([v for (v,) in c.execute("SELECT latency_ns FROM samples WHERE cell_id = ? ORDER BY idx", (cid,))],
                                 dtype=np.int64) for cid, _ in rows}
    rng = np.random.default_rng(19)
    out = []
    for i in range(CELLS):
        cid, result_json = rows[i % len(rows)]
        result = CellResult.from_dict(json.loads(result_json))
        result.samples_ns = rng.choice(samples[cid], SAMPLES // CELLS).tolist()
        out.append((f"small_cnn/r{i}/onnxruntime/fp32/b1/local", result))
    return out


def _file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as c:  # fold the WAL in, so the file is the store's whole size
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def _write_run(s: Store, run_id: str, day: int, suite_run: list[tuple[str, CellResult]], old_layout: bool) -> None:
    s.create_run(RunRecord(run_id, "default", "/x/default.yaml", "models: [small_cnn]\n", "finished", T0 + dt.timedelta(days=day)))
    for key, result in suite_run:
        stored = CellResult.from_dict(result.to_dict())
        if old_layout:
            stored.samples_ns = []  # the samples go into the old table below, not into a blob
        model, recipe, backend, precision, batch, target = key.split("/")
        row_id = s.add_cell(run_id, CellRecord(key, model, recipe, backend, precision, int(batch[1:]), target, "ok", result=stored))
        if old_layout:
            with s.engine.begin() as conn:
                conn.execute(OLD_SAMPLES.insert(), [{"cell_id": row_id, "idx": i, "latency_ns": v} for i, v in enumerate(result.samples_ns)])


def _growth(tmp_path: Path, name: str, suite_run, old_layout: bool) -> int:
    """Bytes the SQLite file grows by for the third default-suite run (the first two fill the pages a new file starts with)."""
    path = tmp_path / f"{name}.sqlite"
    s = Store(path)
    if old_layout:
        OLD_SAMPLES.create(s.engine)
    sizes = []
    for day in range(3):
        _write_run(s, f"{name}-{day}", day, suite_run, old_layout)
        sizes.append(_file_bytes(path))
    s.engine.dispose()
    return sizes[2] - sizes[1]


def test_bytes_per_sample_and_growth_per_run(benchmark, suite_run, tmp_path) -> None:
    n = sum(len(r.samples_ns) for _, r in suite_run)
    blobs = [encode_ns(r.samples_ns) for _, r in suite_run]
    for blob, (_, r) in zip(blobs, suite_run):
        assert decode_ns(blob).tolist() == r.samples_ns  # the one assertion: exact round trip
    one = np.asarray(suite_run[0][1].samples_ns, dtype=np.int64)
    benchmark.pedantic(encode_ns, args=(one,), rounds=20, iterations=1)
    old, new = _growth(tmp_path, "old", suite_run, True), _growth(tmp_path, "new", suite_run, False)
    start = time.perf_counter()
    for blob in blobs:
        decode_ns(blob)
    decode_s = time.perf_counter() - start
    blob_bytes = sum(map(len, blobs))
    benchmark.extra_info.update(samples=n, blob_bytes_per_sample=blob_bytes / n, old_growth=old, new_growth=new, ratio=old / new)
    print(f"\n[store scale] one default-suite run: {CELLS} cells, {n:,} real samples (the rev0004 fixture's, resampled)  codec {CODEC}")
    print(f"  {'':36s} {'one row per sample':>20s} {'one blob per cell':>20s}")
    print(f"  {'store growth per run (SQLite)':36s} {old / 1e6:17.2f} MB {new / 1e6:17.2f} MB   ratio {old / new:.1f}x")
    print(f"  {'bytes per sample, whole growth':36s} {old / n:20.2f} {new / n:20.2f}")
    print(f"  {'bytes per sample, sample data only':36s} {'':20s} {blob_bytes / n:20.2f}")
    print(f"  encode one cell of {one.size:,}: median {benchmark.stats.stats.median * 1e3:.1f} ms; decode all {CELLS}: {decode_s * 1e3:.0f} ms")


@pytest.fixture(scope="module")
def year(suite_run, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """365 nightly runs of the default suite's 30 cell rows; the measured cell carries its ~18.7k samples in each
    (the other cells' blobs would make 400 MB and change nothing in reading one cell)."""
    s = Store(tmp_path_factory.mktemp("year") / "edgebench.sqlite")
    result_rows = [(key, r.to_dict()) for key, r in suite_run]
    for _, data in result_rows:
        data["samples_ns"] = []
    blob = encode_ns(suite_run[0][1].samples_ns)
    with s.engine.begin() as conn:
        conn.execute(runs.insert(), [{"id": f"night-{d:03d}", "suite_name": "default", "suite_source": "/x/default.yaml", "suite_yaml": "",
                                      "status": "finished", "created_at": T0 + dt.timedelta(days=d), "summary": {}} for d in range(NIGHTS)])
        for d in range(NIGHTS):
            first = None
            for key, data in result_rows:
                model, recipe, backend, precision, batch, target = key.split("/")
                row_id = conn.execute(cells.insert().values(
                    run_id=f"night-{d:03d}", cell_key=key, model=model, recipe=recipe, backend=backend, precision=precision, batch=int(batch[1:]),
                    target=target, status="ok", p50_ms=data["latency"]["p50_ms"], p90_ms=data["latency"]["p90_ms"], p99_ms=data["latency"]["p99_ms"],
                    result=data, options={}, facts={})).inserted_primary_key[0]
                first = first or row_id
            conn.execute(cell_samples.insert().values(cell_id=first, codec=CODEC, count=len(suite_run[0][1].samples_ns), data=blob))
    return s


def test_one_cells_history_over_a_year(benchmark, year, suite_run) -> None:
    coords = ("small_cnn", "r0", "onnxruntime", "fp32", 1, "local")
    history = benchmark.pedantic(year.cell_history, args=coords, kwargs={"limit": NIGHTS}, rounds=5, iterations=1)
    assert len(history) == NIGHTS
    summaries_s = benchmark.stats.stats.median

    def with_samples() -> list[np.ndarray]:
        found = year.cell_history(*coords, limit=NIGHTS)
        ids = [c.row_id for _, c in found]
        with year.engine.connect() as conn:
            blobs = dict(conn.execute(sa.select(cell_samples.c.cell_id, cell_samples.c.data).where(cell_samples.c.cell_id.in_(ids))).all())
        return [decode_ns(blobs[i]) for i in ids]

    times = []
    for _ in range(3):
        start = time.perf_counter()
        arrays = with_samples()
        times.append(time.perf_counter() - start)
    assert all(a.tolist() == suite_run[0][1].samples_ns for a in arrays)  # the round trip, a year of it
    total = sum(a.size for a in arrays)
    print(f"\n[store scale] one cell's history over {NIGHTS} nightly runs ({NIGHTS * CELLS:,} cell rows in the store):")
    print(f"  Store.cell_history (summaries, no samples): median {summaries_s * 1e3:.0f} ms")
    print(f"  the same with every sample decoded ({total:,} samples, numpy): median {sorted(times)[1] * 1e3:.0f} ms  (goal: under 1 s)")


def test_growth_per_run_on_postgresql(benchmark, suite_run, postgres) -> None:
    """The same run in a team's PostgreSQL: the sample tables' size (heap, TOAST and indexes), old layout vs blobs."""
    s = Store(postgres.new_database())
    OLD_SAMPLES.create(s.engine)
    _write_run(s, "old", 0, suite_run, True)
    benchmark.pedantic(_write_run, args=(s, "new", 1, suite_run, False), rounds=1, iterations=1)
    with s.engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        size = {t: conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar() for t in ("samples", "cell_samples")}
    for (_, r), c in zip(suite_run, s.cells("new")):
        assert c.result.samples_ns == r.samples_ns  # the round trip through bytea
    n = sum(len(r.samples_ns) for _, r in suite_run)
    print(f"\n[store scale] PostgreSQL, one default-suite run ({n:,} samples): one row per sample {size['samples'] / 1e6:.1f} MB "
          f"({size['samples'] / n:.1f} B/sample), one blob per cell {size['cell_samples'] / 1e6:.2f} MB ({size['cell_samples'] / n:.2f} B/sample): "
          f"ratio {size['samples'] / size['cell_samples']:.0f}x")
