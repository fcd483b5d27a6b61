"""A store file that is not a store (garbage, text, a damaged or another program's SQLite database) is one
line naming the file and the fix, and the file is left byte-identical; a write the disk refuses is
``CannotWrite`` naming the store; cell counts cover every stored cell of a run."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import sqlite3
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.files import CannotWrite, atomic_write_text, writing
from edgebench.bench.store import RunRecord, Store

sys.path.insert(0, str(Path(__file__).parents[1] / "reports"))
from tests_support import ar1_samples, cell_with  # noqa: E402


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_record(run_id: str) -> RunRecord:
    return RunRecord(id=run_id, suite_name="s", suite_source="/x/s.yaml", suite_yaml="models: [small_cnn]\n",
                     status="running", created_at=dt.datetime.now(dt.timezone.utc))


def real_store(path: Path) -> Store:
    store = Store(path)
    store.create_run(run_record("r1"))
    store.add_cell("r1", cell_with(ar1_samples(0.3, 50, 1)))
    return store


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(5000))


def text(path: Path) -> None:
    path.write_text("hello, this is not a database\n")


def truncated(path: Path) -> None:
    real_store(path).engine.dispose()
    data = path.read_bytes()
    # a store whose pages beyond the first are gone: SQLite's header survives, the tables do not
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    path.write_bytes(data[:4096] + os.urandom(4096))


def foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, says", [
    (garbage, "not a SQLite file"),
    (text, "not a SQLite file"),
    (truncated, "not a readable edgebench store"),
    (foreign, "without edgebench's tables (invoices)"),
])
def test_a_file_that_is_not_a_store_is_one_line_and_left_untouched(tmp_path, make, says):
    path = tmp_path / "edgebench.sqlite"
    make(path)
    before, files = digest(path), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(EdgebenchError) as err:
        Store(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message
    assert "--home/--store" in message  # the fix
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no lock, journal or WAL file beside it


def test_a_real_store_still_opens_and_an_empty_file_becomes_one(tmp_path):
    path = tmp_path / "edgebench.sqlite"
    real_store(path).engine.dispose()
    assert [r.id for r in Store(path).runs()] == ["r1"]
    empty = tmp_path / "new.sqlite"
    empty.touch()
    assert Store(empty).runs() == []


def test_a_full_disk_while_writing_the_store_names_it(tmp_path):
    store = real_store(tmp_path / "edgebench.sqlite")
    full = sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
    with pytest.raises(CannotWrite) as err:
        with store._writing():
            raise full
    assert err.value.path == str(tmp_path / "edgebench.sqlite") and "database or disk is full" in str(err.value)
    locked = sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
    with pytest.raises(sa.exc.OperationalError):  # not a disk problem: left as it is
        with store._writing():
            raise locked


def test_cell_counts_cover_every_stored_cell(tmp_path):
    store = real_store(tmp_path / "s.sqlite")
    store.add_cell("r1", cell_with(ar1_samples(0.3, 50, 2), batch=8))
    failed = cell_with([], recipe="l1-unstructured-50")
    failed.status, failed.error = "failed", "boom"
    store.add_cell("r1", failed)
    assert store.cell_counts("r1") == {"ok": 2, "failed": 1}
    assert store.cell_counts("nope") == {}


def test_writing_names_the_path_for_a_full_disk_only(tmp_path):
    target = tmp_path / "report.md"
    with pytest.raises(CannotWrite) as err:
        with writing(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == f"cannot write {target}: No space left on device; free some space there (or make it writable)"
    with pytest.raises(PermissionError):
        with writing(target):
            raise PermissionError(errno.EACCES, "denied")


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "samples.csv"
    atomic_write_text(target, "old,whole\n")
    os.chmod(target, 0o644)

    def full_replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_replace)
    with pytest.raises(CannotWrite, match=str(target)):
        atomic_write_text(target, "new," * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old,whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.csv"]  # the temporary file is gone
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old



def test_checking_a_store_file_does_not_break_a_store_open_in_this_process(tmp_path):
    # A plain open()/close() of the file would drop this process's SQLite locks: another process then
    # resets the WAL under the Store open here and the next check reads "database disk image is malformed".
    import subprocess
    import sys

    path = tmp_path / "edgebench.sqlite"
    held = Store(path)
    held.runs()
    writer = ("import sqlalchemy as sa\nfrom edgebench.bench.store import Store\n"
              f"s = Store({str(path)!r})\nwith s.engine.begin() as c:\n"
              "    c.execute(sa.text('create table if not exists big(x)'))\n"
              "    c.execute(sa.text('insert into big values ' + ','.join(['(randomblob(100))'] * 20000)))\n")
    for _ in range(3):
        subprocess.run([sys.executable, "-c", writer], check=True)
        held.runs()
        assert Store(path).runs() == []  # opened (and checked) again while `held` is open
