"""Migration 0005 (one blob per cell instead of one row per sample) on a store written by the release
before it (tests/bench/data/store-rev0004.sqlite, see the README there): every sample comes back exactly,
on SQLite and on PostgreSQL, and the 0.1 store still reaches the head."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgebench.bench import store as store_mod
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import HEAD, SCHEMA_VERSION, CellRecord, RunRecord, Store

DATA = Path(__file__).parent / "data"
REV4_STORE = DATA / "store-rev0004.sqlite"
V1_STORE = DATA / "store-v1.sqlite"
RUNS = ["20261201-175021-b14d5269", "20261201-174911-b7926f8b"]  # newest first, as Store.runs() lists them
TABLES = ["runs", "environments", "cells", "samples", "baselines", "latency_tables", "fits"]  # parents first


def raw_samples(path: Path) -> dict[int, list[int]]:
    """cell row id -> its samples in idx order, read with sqlite3 from a store at revision 0004 or older."""
    by_cell: dict[int, list[int]] = {}
    with sqlite3.connect(path) as c:
        for cid, v in c.execute("SELECT cell_id, latency_ns FROM samples ORDER BY cell_id, idx"):
            by_cell.setdefault(cid, []).append(v)
    return by_cell


def stored_samples(s: Store) -> dict[int, list[int]]:
    """cell row id -> samples, through Store.cells (cells without samples left out)."""
    return {c.row_id: c.result.samples_ns for r in s.runs() for c in s.cells(r.id) if c.result and c.result.samples_ns}


def table_names(s: Store) -> set[str]:
    with s.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def schema_version(s: Store) -> str:
    with s.engine.connect() as conn:
        return conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar()


def check_migrated(s: Store, before: dict[int, list[int]]) -> None:
    """What every migrated copy of the fixture must show."""
    assert s.revision() == HEAD == "0005" and schema_version(s) == str(SCHEMA_VERSION) == "5"
    names = table_names(s)
    assert "samples" not in names and "cell_samples" in names
    assert stored_samples(s) == before  # every cell, every sample, in order
    assert [r.id for r in s.runs()] == RUNS and all(r.samples_dropped_at is None for r in s.runs())
    cells = s.cells(RUNS[0])
    assert sorted(c.status for c in cells) == ["ok"] * 4 + ["skipped"] * 2 and not any(c.samples_dropped for c in cells)
    assert [(b.name, b.target, b.run_id) for b in s.baselines()] == [("nightly", "local", RUNS[1])]
    assert set(s.environments(RUNS[1])) == {"local"}
    history = s.cell_history("small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert [r.id for r, _ in history] == RUNS[::-1] and all(c.result.latency.p50_ms > 0 for _, c in history)
    with s.engine.connect() as conn:  # one blob per ok cell, its count beside it
        counts = dict(conn.execute(sa.text("SELECT cell_id, count FROM cell_samples")).all())
    assert counts == {cid: len(v) for cid, v in before.items()}


def test_the_fixture_is_what_its_readme_says():
    with sqlite3.connect(REV4_STORE) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
        assert c.execute("SELECT count(*) FROM samples").fetchone()[0] == 16531
    assert REV4_STORE.stat().st_size < 1_000_000


def test_a_rev0004_sqlite_store_is_migrated_with_every_sample(tmp_path):
    path = tmp_path / "edgebench.sqlite"
    shutil.copy(REV4_STORE, path)
    before = raw_samples(path)
    assert len(before) == 8 and sum(map(len, before.values())) == 16531
    s = Store(path)
    check_migrated(s, before)
    check_migrated(Store(path), before)  # reopening changes nothing


def _copy_rows(source: Path, url: str) -> None:
    """The fixture's rows, table by table, into a PostgreSQL database that 0001..0004 created."""
    src_engine = sa.create_engine(f"sqlite:///{source}")
    dst_engine = sa.create_engine(store_mod.normalize_url(url))
    src_meta, dst_meta = sa.MetaData(), sa.MetaData()
    src_meta.reflect(src_engine)
    dst_meta.reflect(dst_engine)
    with src_engine.connect() as src, dst_engine.begin() as dst:
        for name in TABLES:
            rows = [dict(r) for r in src.execute(sa.select(src_meta.tables[name])).mappings()]
            if rows:
                dst.execute(dst_meta.tables[name].insert(), rows)
        for table in ("cells", "environments"):  # ids were copied as they are: move the sequences past them
            dst.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    src_engine.dispose()
    dst_engine.dispose()


def test_a_rev0004_postgresql_store_is_migrated_with_every_sample(postgres):
    from alembic import command

    url = postgres.new_database()
    engine = sa.create_engine(store_mod.normalize_url(url))
    with engine.begin() as conn:  # the schema exactly as the release before wrote it
        command.upgrade(store_mod._alembic_config(conn), "0004")
    engine.dispose()
    _copy_rows(REV4_STORE, url)
    before = raw_samples(REV4_STORE)
    s = Store(url)
    check_migrated(s, before)
    new = s.add_cell(RUNS[0], CellRecord("m/r/onnxruntime/fp32/b1/local", "m", "r", "onnxruntime", "fp32", 1, "local", "ok",
                                         result=CellResult("ok", samples_ns=[5, 6, 7])))
    assert new > max(before) and [c.result.samples_ns for c in s.cells(RUNS[0]) if c.row_id == new] == [[5, 6, 7]]


def test_downgrade_to_0004_gives_the_rows_back(store_url):
    """0005 -> 0004 writes one row per sample again (cell by cell), and upgrading again gives the same blobs' samples."""
    from alembic import command

    s = Store(store_url)
    s.create_run(RunRecord("r", "s", "/x/s.yaml", "models: [m]\n", "finished", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))
    want = {}
    for i, values in enumerate([[20_000, 30_000_000_000, 20_001], list(range(5000, 0, -1)), [1]]):
        want[s.add_cell("r", CellRecord(f"m/r{i}/onnxruntime/fp32/b1/local", "m", f"r{i}", "onnxruntime", "fp32", 1, "local", "ok",
                                        result=CellResult("ok", samples_ns=values)))] = values
    s.add_cell("r", CellRecord("m/skip/onnxruntime/fp32/b1/local", "m", "skip", "onnxruntime", "fp32", 1, "local", "skipped"))
    with s.engine.begin() as conn:
        command.downgrade(store_mod._alembic_config(conn), "0004")
    with s.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("cell_samples")
        assert "samples_dropped_at" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
        rows = conn.execute(sa.text("SELECT cell_id, idx, latency_ns FROM samples ORDER BY cell_id, idx")).all()
    got: dict[int, list[int]] = {}
    for cid, idx, v in rows:
        assert idx == len(got.setdefault(cid, []))
        got[cid].append(v)
    assert got == want and schema_version(s) == "4"
    s.engine.dispose()
    s2 = Store(store_url)
    assert s2.revision() == HEAD and stored_samples(s2) == want


def test_the_01_store_still_reaches_the_head_with_every_sample(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_STORE, path)
    before = raw_samples(path)
    assert before
    s = Store(path)
    assert s.revision() == HEAD and "samples" not in table_names(s)
    assert stored_samples(s) == before


def test_a_blob_this_edgebench_cannot_read_is_one_line_naming_the_cell(tmp_path):
    from edgebench.bench.contracts.errors import EdgebenchError

    path = tmp_path / "edgebench.sqlite"
    shutil.copy(REV4_STORE, path)
    s = Store(path)
    with s.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cell_samples SET codec = 'ebs-for-shuf-zstd/9' WHERE cell_id = 3"))
        conn.execute(sa.text("UPDATE cell_samples SET data = X'00' WHERE cell_id = 9"))
    with pytest.raises(EdgebenchError, match=r"samples of cell row 3 are in codec 'ebs-for-shuf-zstd/9', which this edgebench cannot read.*upgrade edgebench"):
        s.cells(RUNS[1])
    with pytest.raises(EdgebenchError, match=r"samples of cell row 9: sample blob of 1 bytes is shorter"):
        s.cells(RUNS[0])
    assert len(s.cells(RUNS[0], with_samples=False)) == 6  # summaries still read


def test_converting_many_sample_rows_says_so_and_how_long(tmp_path, monkeypatch, caplog):
    path = tmp_path / "edgebench.sqlite"
    shutil.copy(REV4_STORE, path)
    monkeypatch.setattr(store_mod, "SAY_CONVERSION_ROWS", 10_000)  # the fixture has 16,531 rows
    with caplog.at_level("WARNING", logger="edgebench.store"):
        Store(path)
    [said] = [r.getMessage() for r in caplog.records if r.name == "edgebench.store"]
    assert "converting 16,531 latency samples" in said and str(path) in said and "about 0 s" in said
    caplog.clear()
    Store(path)  # converted: nothing more to say
    assert not [r for r in caplog.records if r.name == "edgebench.store"]


def test_a_small_store_converts_without_a_word(tmp_path, caplog):
    path = tmp_path / "edgebench.sqlite"
    shutil.copy(REV4_STORE, path)
    with caplog.at_level("WARNING", logger="edgebench.store"):
        Store(path)
    assert not [r for r in caplog.records if r.name == "edgebench.store"]
