"""Store schema management (Alembic migrations in bench/migrations): new stores, in-place upgrade of an
edgebench 0.1 store, refusal of newer stores, baselines and cell history. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgebench.bench import store as store_mod
from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import HEAD, REVISIONS, CellRecord, RunRecord, Store, normalize_url

UTC = dt.timezone.utc
V1_STORE = Path(__file__).parent / "data" / "store-v1.sqlite"  # written by edgebench 0.1's store.py (commit 058d2ce)
MIGRATIONS = Path(store_mod.__file__).parent / "migrations" / "versions"


def run_record(run_id: str, created: dt.datetime) -> RunRecord:
    return RunRecord(run_id, "s", "/x/s.yaml", "models: [small_cnn]\n", "finished", created, git_commit=f"commit-{run_id}")


def cell(key_recipe: str = "dense", batch: int = 1, p50: float | None = None) -> CellRecord:
    from edgebench.bench.contracts.results import LatencyStats

    lat = LatencyStats(3, 1, 1, 0, 0, p50 or 1.0, 1.0, 1.0, 1.0, 1.0, 1.0) if p50 is not None else None
    return CellRecord(f"m/{key_recipe}/onnxruntime/fp32/b{batch}/local", "m", key_recipe, "onnxruntime", "fp32", batch, "local", "ok",
                      result=CellResult("ok", samples_ns=[1, 2, 3], latency=lat))


def test_revisions_match_the_shipped_migration_files():
    files = sorted(p.name for p in MIGRATIONS.glob("[0-9]*.py"))
    assert [f.split("_")[0] for f in files] == list(REVISIONS)
    chain = {}
    for f in files:
        text = (MIGRATIONS / f).read_text()
        rev = re.search(r'^revision = "(\w+)"', text, re.M).group(1)
        down = re.search(r'^down_revision = (None|"(\w+)")', text, re.M).group(2)
        chain[rev] = down
    assert chain == {r: (REVISIONS[i - 1] if i else None) for i, r in enumerate(REVISIONS)}  # one linear history


def test_new_store_is_at_head_with_every_table(store_url):
    s = Store(store_url)
    assert s.revision() == HEAD
    with s.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        version = conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar()
    assert {"runs", "environments", "cells", "cell_samples", "baselines", "edgebench_meta", "alembic_version"} <= names
    assert "samples" not in names  # one blob per cell since 0005, no row per sample
    assert version == str(store_mod.SCHEMA_VERSION)
    assert Store(store_url).revision() == HEAD  # reopening changes nothing


def test_an_edgebench_01_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_STORE, path)
    with sqlite3.connect(path) as c:  # what the old code left: no alembic_version, schema_version 1
        assert "alembic_version" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        assert c.execute("SELECT value FROM edgebench_meta").fetchall() == [("1",)]
        old_samples = c.execute("SELECT count(*) FROM samples").fetchone()[0]
    s = Store(path)
    assert s.revision() == HEAD
    runs = s.runs()
    assert [r.id for r in runs] == ["20261102-020000-bbbb", "20261101-020000-aaaa"]
    cells = s.cells(runs[0].id)
    assert [c.status for c in cells] == ["ok", "ok", "skipped"]
    assert sum(len(c.result.samples_ns) for rid in (r.id for r in runs) for c in s.cells(rid) if c.result) == old_samples
    # and the new features work on it
    s.set_baseline("nightly", runs[1].id, "local", s.environments(runs[1].id)["local"])
    assert [b.run_id for b in s.baselines("nightly")] == ["20261101-020000-aaaa"]
    history = s.cell_history("small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert [r.id for r, _ in history] == ["20261101-020000-aaaa", "20261102-020000-bbbb"]


def test_downgrade_and_upgrade_again(tmp_path):
    from alembic import command

    s = Store(tmp_path / "s.sqlite")
    s.create_run(run_record("r", dt.datetime(2026, 1, 1, tzinfo=UTC)))
    with s.engine.begin() as conn:
        command.downgrade(store_mod._alembic_config(conn), "0001")
    assert s.revision() == "0001"
    with s.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("baselines")
    s2 = Store(tmp_path / "s.sqlite")  # opening upgrades again, keeping the data
    assert s2.revision() == HEAD and [r.id for r in s2.runs()] == ["r"]


def test_a_store_from_a_newer_edgebench_is_refused(store_url):
    s = Store(store_url)
    with s.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(EdgebenchError, match=rf"revision 9999 is newer than this edgebench \({HEAD}\); upgrade edgebench"):
        Store(store_url)


def test_a_newer_schema_version_is_refused(store_url):
    s = Store(store_url)
    with s.engine.begin() as conn:
        conn.execute(sa.text("UPDATE edgebench_meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(EdgebenchError, match="store schema 99 is newer"):
        Store(store_url)


def test_baselines_per_name_and_target(store_url):
    s = Store(store_url)
    for i, rid in enumerate(("r1", "r2")):
        s.create_run(run_record(rid, dt.datetime(2026, 1, 1 + i, tzinfo=UTC)))
    fp = {"cpu_model": "A", "backends": {"onnxruntime": {"version": "1.32.0"}}}
    s.set_baseline("nightly", "r1", "pi5", fp, note="first")
    s.set_baseline("nightly", "r1", "jetson", {"cpu_model": "B"})
    s.set_baseline("release", "r1", "pi5", fp)
    replaced = s.set_baseline("nightly", "r2", "pi5", fp)  # replaces, does not add
    assert replaced.run_id == "r2" and replaced.set_at.tzinfo is not None
    got = s.baselines("nightly")
    assert [(b.name, b.target, b.run_id) for b in got] == [("nightly", "jetson", "r1"), ("nightly", "pi5", "r2")]
    assert got[1].fingerprint == fp and got[1].note is None
    assert len(s.baselines()) == 3
    assert s.delete_baseline("nightly", "jetson") == 1
    assert [b.target for b in s.baselines("nightly")] == ["pi5"]
    with pytest.raises(EdgebenchError, match="no run 'nope'"):
        s.set_baseline("x", "nope", "pi5", fp)


def test_cell_history_is_oldest_first_and_stops_at_until(store_url):
    s = Store(store_url)
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        rid = f"r{i}"
        s.create_run(run_record(rid, t0 + dt.timedelta(days=i)))
        s.add_cell(rid, cell(p50=1.0 + i))
        s.add_cell(rid, cell("other", p50=9.0))
    hist = s.cell_history("m", "dense", "onnxruntime", "fp32", 1, "local")
    assert [(r.id, c.result.latency.p50_ms) for r, c in hist] == [(f"r{i}", 1.0 + i) for i in range(5)]
    assert all(c.result.samples_ns == [] for _, c in hist)  # no samples: history reads summaries
    assert [r.id for r, _ in s.cell_history("m", "dense", "onnxruntime", "fp32", 1, "local", until="r2")] == ["r0", "r1", "r2"]
    assert [r.id for r, _ in s.cell_history("m", "dense", "onnxruntime", "fp32", 1, "local", limit=2)] == ["r3", "r4"]
    assert s.cell_history("m", "dense", "onnxruntime", "fp32", 8, "local") == []


def test_urls_and_passwords():
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"  # an explicit driver is kept
    assert normalize_url("sqlite:///x") == "sqlite:///x"


def test_unreachable_server_is_one_line_without_the_password():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EdgebenchError) as info:
        Store(f"postgresql://bob:s3cret@127.0.0.1:{port}/db?connect_timeout=2")
    msg = str(info.value)
    assert "s3cret" not in msg and "bob:***@127.0.0.1" in msg
    assert "cannot open the store" in msg and "\n" not in msg


def test_recipe_def_column_is_added_in_place_and_removed_without_losing_samples(store_url):
    """0003 adds cells.recipe_def to a store that has cells; old cells read back with None, and going back
    to 0002 drops only the column (no table copy: on SQLite that would cascade-delete the samples)."""
    from alembic import command

    s = Store(store_url)
    s.create_run(run_record("r", dt.datetime(2026, 1, 1, tzinfo=UTC)))
    s.add_cell("r", cell(p50=1.0))
    with s.engine.begin() as conn:
        command.downgrade(store_mod._alembic_config(conn), "0002")
    with s.engine.connect() as conn:
        assert "recipe_def" not in {c["name"] for c in sa.inspect(conn).get_columns("cells")}
        assert conn.execute(sa.text("SELECT count(*) FROM samples")).scalar() == 3
        assert conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar() == "2"
    s2 = Store(store_url)  # opening upgrades again
    assert s2.revision() == HEAD
    [old] = s2.cells("r")
    assert old.recipe_def is None and old.result.samples_ns == [1, 2, 3]
    new = cell("pruned")
    new.recipe_def = {"name": "pruned", "method": "magnitude_unstructured", "params": {"sparsity": 0.5}}
    s2.add_cell("r", new)
    assert [c.recipe_def for c in s2.cells("r")] == [None, new.recipe_def]


def test_an_upgraded_01_store_has_no_recipe_definitions(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_STORE, path)
    s = Store(path)
    cells = [c for r in s.runs() for c in s.cells(r.id, with_samples=False)]
    assert cells and all(c.recipe_def is None for c in cells)
