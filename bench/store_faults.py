"""What the store says when its file or its disk is not what it should be: a file that is not SQLite, a damaged
database, another program's database (each refused without changing a byte), and writes the disk refuses."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from edgebench.bench.contracts.errors import EdgebenchError, one_line
from edgebench.bench.contracts.files import CannotWrite, is_disk_error

_UNTOUCHED = "edgebench left it untouched: pass --home/--store pointing at your store"
_START_OVER = "or move it away and `edgebench run` starts a new one"
# SQLite's words for "this write needs space or permission the file does not have"
_REFUSED = ("disk is full", "readonly database", "disk I/O error")


def check_sqlite_file(path: Path) -> None:
    """Refuse, without changing a byte, a file that is not SQLite, is damaged, or is another program's database.

    Read through SQLite itself, with a SELECT only: the store's own connections set WAL mode, which rewrites the
    header of a database not in WAL mode yet. Never with a plain ``open()``: closing any descriptor of
    the file drops this process's POSIX locks on it, including those a Store already open in this
    process holds, and another process then takes itself for the last user and resets the WAL under it
    ("database disk image is malformed" on the next open here). SQLite keeps its own descriptors open
    while locks are held. A PostgreSQL database may hold other applications' tables beside edgebench's;
    a SQLite file is edgebench's alone."""
    try:
        if path.stat().st_size == 0:
            return  # a new store
    except FileNotFoundError:
        return
    try:
        conn = sqlite3.connect(path)  # a SELECT changes no byte of the file
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "file is not a database" in str(exc):
            raise EdgebenchError(f"{path}: not an edgebench store (not a SQLite file); {_UNTOUCHED}, {_START_OVER}") from None
        raise EdgebenchError(f"{path}: not a readable edgebench store ({one_line(exc, 200)}); {_UNTOUCHED}, {_START_OVER}") from None
    if tables and "runs" not in tables:
        raise EdgebenchError(f"{path}: a SQLite database without edgebench's tables ({', '.join(sorted(tables)[:5])}); {_UNTOUCHED}")


def open_error(exc: sa.exc.DatabaseError, path: str | None, display_url: str) -> EdgebenchError:
    """One line for a store that cannot be opened (``path``: its SQLite file, None for a server)."""
    reason = one_line(exc.orig, 300)
    if path is None:
        return EdgebenchError(f"{display_url}: cannot open the store ({reason}); check the URL and that the database server is running")
    if isinstance(exc, sa.exc.OperationalError) and not any(s in reason for s in ("not a database", "malformed", "encrypted")):
        return EdgebenchError(f"{path}: cannot open the store ({reason}); check that the folder exists and is readable and writable")
    return EdgebenchError(f"{path}: not a readable edgebench store ({reason}); {_UNTOUCHED}, {_START_OVER}")


@contextlib.contextmanager
def refused_writes(where: str) -> Iterator[None]:
    """Inside: a write the database or the disk refused for lack of space (or a read-only file) becomes
    :class:`CannotWrite` naming ``where``; any other error is left as it is."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        reason = one_line(exc.orig, 200)
        if any(s in reason for s in _REFUSED):
            raise CannotWrite(where, reason) from None
        raise
    except OSError as exc:
        if is_disk_error(exc):
            raise CannotWrite(where, exc.strerror or str(exc)) from None
        raise
