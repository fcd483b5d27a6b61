"""The result store: runs, environments, cells, every latency sample and named baselines (SQLAlchemy Core).

SQLite is the embedded default; a PostgreSQL URL (``postgresql://user@host/db``) holds the same schema so
many boards report into one place. The schema is versioned with Alembic migrations shipped in
``edgebench.bench.migrations``: opening a store brings it to the current revision in place, including a
store made by edgebench 0.1 (schema version 1, no ``alembic_version`` table). Each finished cell is
written in its own transaction as soon as it ends, so a run that dies halfway keeps every cell it
finished, and several writers (boards, processes) can report into one store at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edgebench.bench.contracts.errors import EdgebenchError, one_line
from edgebench.bench.contracts.identity import FIELDS, CellFields, CellId
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.contracts.samples import CODEC, decode_ns, encode_ns
from edgebench.bench.store_faults import check_sqlite_file, open_error, refused_writes
from edgebench.bench.store_fit import FitStore

SCHEMA_VERSION = 5  # edgebench_meta's schema_version: what edgebench 0.1 checks before using a store
REVISIONS = ("0001", "0002", "0003", "0004", "0005")  # Alembic revisions in bench/migrations/versions, oldest first
HEAD = REVISIONS[-1]
# Status of a run that re-measured some cells of another run (`edgebench check --confirm`): kept in the
# store for the record, left out of `latest` and of a cell's history so it never becomes a night of its own.
CONFIRMATION = "confirmation"
# Status of a run that measured candidates for `edgebench fit` (bench/fit.py): kept with every sample, left
# out of `latest` and of cell histories like a confirmation (a fit's table is not a night of the suite).
FIT = "fit"
_NOT_NIGHTS = (CONFIRMATION, FIT)
# Opening a store of before revision 0005 converts its sample rows; from this many rows on that is said (logging,
# which prints warnings to stderr when the application set up nothing), with the rate migration 0005 was measured at.
SAY_CONVERSION_ROWS = 1_000_000
CONVERSION_ROWS_PER_S = 450_000
_log = logging.getLogger("edgebench.store")
_PG_MIGRATION_LOCK = 0x6564676562656E63  # "edgebenc": pg_advisory_xact_lock key that serialises migrations
metadata = sa.MetaData()

meta_table = sa.Table("edgebench_meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("suite_name", sa.String(200)),
    sa.Column("suite_source", sa.Text),
    sa.Column("suite_yaml", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("edgebench_version", sa.String(50)),
    sa.Column("git_commit", sa.String(60)),
    sa.Column("summary", sa.JSON),
    sa.Column("samples_dropped_at", sa.DateTime(timezone=True)),  # when `edgebench gc` removed the run's raw samples (bench/store_gc.py)
)

environments = sa.Table(
    "environments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fingerprint", sa.JSON, nullable=False),
)

cells = sa.Table(
    "cells", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("cell_key", sa.String(500), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("recipe", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(100), nullable=False),
    sa.Column("precision", sa.String(20), nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("p50_ms", sa.Float),
    sa.Column("p90_ms", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("top1", sa.Float),
    sa.Column("options", sa.JSON),
    sa.Column("facts", sa.JSON),
    sa.Column("result", sa.JSON),
    sa.Column("recipe_def", sa.JSON),  # the recipe as validated (models/recipes.py Recipe), so reports never re-read files
    sa.UniqueConstraint("run_id", "cell_key", name="uq_cell_per_run"),
)

# Each cell's samples as one blob (revision 0005; before, one row per sample, ~32 bytes each): exact int64
# nanoseconds in measurement order, about 2 bytes a sample. The format is bench/contracts/samples.py, named by `codec`.
cell_samples = sa.Table(
    "cell_samples", metadata,
    sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    sa.Column("codec", sa.String(40), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # bytea on PostgreSQL, BLOB on SQLite
)


baselines = sa.Table(
    "baselines", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("target", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("fingerprint", sa.JSON, nullable=False),
    sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("note", sa.Text),
)
sa.Index("ix_cells_coordinates", *(cells.c[f] for f in FIELDS))

# `edgebench fit` (revision 0004): latency lookup tables and fit results, each the contract dataclass as JSON
# (bench/contracts/fit.py); the Store methods that read and write them are in bench/store_fit.py.
latency_tables = sa.Table(
    "latency_tables", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(100), nullable=False),
    sa.Column("precision", sa.String(20), nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("table", sa.JSON, nullable=False),
    sa.Index("ix_latency_tables_model_target", "model", "target"),
)

fits = sa.Table(
    "fits", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no zone; every time edgebench writes is UTC, so say so on the way back.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _run_from_row(row: Any) -> RunRecord:
    data = dict(row)
    data["created_at"], data["finished_at"] = _utc(data["created_at"]), _utc(data["finished_at"])
    data["samples_dropped_at"] = _utc(data.get("samples_dropped_at"))
    data["summary"] = data["summary"] or {}
    return RunRecord(**data)


@dataclass
class RunRecord:
    id: str
    suite_name: str
    suite_source: str
    suite_yaml: str
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    edgebench_version: str | None = None
    git_commit: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    samples_dropped_at: dt.datetime | None = None  # set when `edgebench gc` removed the run's raw samples (summaries stay)


@dataclass
class BaselineRecord:
    """A named baseline for one target: the run it points at and the fingerprint of the environment it ran on."""

    name: str
    target: str
    run_id: str
    fingerprint: dict[str, Any]
    set_at: dt.datetime
    note: str | None = None


@dataclass
class CellRecord(CellFields):
    """A cell as stored: its coordinates, status, host-side facts, the worker's result and the recipe it ran.

    :attr:`id` is the cell's identity (the six coordinates); :attr:`row_id` is the database row.
    """

    status: str  # ok | failed | skipped
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    result: CellResult | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    recipe_def: dict[str, Any] | None = None  # Recipe.model_dump(mode="json"); None in cells stored before revision 0003
    row_id: int | None = None  # set by Store.add_cell and when read back
    samples_dropped: bool = False  # its run's raw samples were removed by `edgebench gc`: result.samples_ns is then []


class Store(FitStore, latency_tables=latency_tables, fits=fits):  # fit tables' methods: store_fit.py
    """Open a store at a path or SQLAlchemy URL, creating it or upgrading its schema in place if needed.

    ``postgresql://`` URLs use psycopg 3 (``pip install 'edgebench[postgres]'``).
    """

    def __init__(self, location: str | Path) -> None:
        url = str(location)
        if "://" not in url:
            path = Path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        url = normalize_url(url)
        self.url = url
        self.display_url = sa.engine.make_url(url).render_as_string(hide_password=True)
        try:
            self.engine = sa.create_engine(url, future=True)
        except ModuleNotFoundError as exc:
            raise EdgebenchError(f"{self.display_url}: the database driver is not installed ({exc.name}); pip install 'edgebench[postgres]'") from None
        database = self.engine.url.database
        # the SQLite file, as the user would name it in messages (None for a server or an in-memory store)
        self.path = database if self.engine.dialect.name == "sqlite" and database and database != ":memory:" else None
        if self.path is not None:
            check_sqlite_file(Path(self.path))  # before the first connection switches the file to WAL
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._migrate_retrying_locks()
        except sa.exc.DatabaseError as exc:  # OperationalError is one; a file that is not SQLite is the other common kind
            raise open_error(exc, self.path, self.display_url) from None

    # -- schema -----------------------------------------------------------------------------
    def revision(self) -> str | None:
        """The store's Alembic revision (None for an empty database or an edgebench 0.1 store)."""
        with self.engine.connect() as conn:
            return _revision(conn)

    def _migrate_retrying_locks(self, attempts: int = 8) -> None:
        """Open (and migrate) the store, retrying while SQLite says "database is locked".

        When several processes open a new SQLite store at once, SQLite can answer SQLITE_BUSY without
        waiting for busy_timeout (switching a fresh file to WAL, a read transaction that must become a
        write): seen once under CI load with five writers. A short backoff makes the open succeed."""
        for attempt in range(attempts):
            try:
                self._migrate()
                return
            except sa.exc.OperationalError as exc:
                if self.engine.dialect.name != "sqlite" or "locked" not in str(exc.orig) or attempt == attempts - 1:
                    raise
                self.engine.dispose()  # fresh connections: a pooled one may hold a stale snapshot
                time.sleep(0.1 * (attempt + 1))

    def _migrate(self) -> None:
        if self.revision() == HEAD:  # the common case costs one query and no alembic import
            self._check_schema_version()
            return
        with self._migration_lock() as conn:
            current = _revision(conn)
            if current is not None and current not in REVISIONS:
                raise EdgebenchError(f"{self.display_url}: store schema revision {current} is newer than this edgebench ({HEAD}); upgrade edgebench")
            if current != HEAD:
                self._say_sample_conversion(conn)
                _upgrade(conn, stamp_first="0001" if current is None and _is_v1_store(conn) else None)
        self._check_schema_version()

    def _say_sample_conversion(self, conn: sa.Connection) -> None:
        """A store from before revision 0005 has one row per sample; converting a team's hundreds of millions
        of rows takes minutes, once, and silence would look like a hang: say what is happening and how long."""
        if not sa.inspect(conn).has_table("samples"):
            return
        rows = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar() or 0
        if rows >= SAY_CONVERSION_ROWS:
            _log.warning("%s: converting %s latency samples (one row each) to one compressed blob per cell, once; "
                         "about %s s at ~%d rows/s measured, then `edgebench gc` gives SQLite's space back",
                         self.display_url, f"{rows:,}", f"{rows / CONVERSION_ROWS_PER_S:.0f}", CONVERSION_ROWS_PER_S)

    def _check_schema_version(self) -> None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
        if found is not None and int(found) > SCHEMA_VERSION:
            raise EdgebenchError(f"{self.display_url}: store schema {found} is newer than this edgebench ({SCHEMA_VERSION}); upgrade edgebench")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[sa.Connection]:
        """One transaction in which only this process migrates: several boards may open a new store at once."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                yield conn
            return
        database = self.engine.url.database
        with _file_lock(f"{database}.migrate.lock" if database and database != ":memory:" else None):
            with self.engine.begin() as conn:
                yield conn

    # -- writing ----------------------------------------------------------------------------
    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A write the disk refuses (full, quota, read-only) is CannotWrite naming the store."""
        return refused_writes(self.path or self.display_url)

    def create_run(self, run: RunRecord) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(runs.insert().values(**_run_row(run)))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(status=status, finished_at=now(), summary=summary))

    def add_environment(self, run_id: str, target: str, fingerprint: dict[str, Any]) -> None:
        """Store (or replace: a resumed run probes again) ``target``'s fingerprint for a run."""
        with self._writing(), self.engine.begin() as conn:
            conn.execute(environments.delete().where(environments.c.run_id == run_id, environments.c.target == target))
            conn.execute(environments.insert().values(run_id=run_id, target=target, captured_at=now(), fingerprint=fingerprint))

    def reopen_run(self, run_id: str) -> None:
        """Mark a stored run as running again (``edgebench run --resume``)."""
        with self._writing(), self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(status="running", finished_at=None))

    def add_cell(self, run_id: str, cell: CellRecord, replace: bool = False) -> int:
        """Write one finished cell and all its samples in one transaction; returns its id.

        ``replace`` first removes a stored cell with the same key (a resumed run re-measuring it).
        """
        result = cell.result
        lat = result.latency if result else None
        row = {
            "run_id": run_id, "cell_key": cell.cell_key, **dict(zip(FIELDS, cell.id.parts())),
            "status": cell.status, "error": cell.error, "started_at": cell.started_at, "finished_at": cell.finished_at,
            "p50_ms": lat.p50_ms if lat else None, "p90_ms": lat.p90_ms if lat else None, "p99_ms": lat.p99_ms if lat else None,
            "top1": result.accuracy.top1 if result and result.accuracy else None,
            "options": cell.options, "facts": cell.facts,
            "result": _result_without_samples(result), "recipe_def": cell.recipe_def,
        }
        # encoded before the transaction: the write lock is held for the inserts only
        blob = encode_ns(result.samples_ns) if result is not None and len(result.samples_ns) else None
        with self._writing(), self.engine.begin() as conn:
            if replace:
                old = conn.execute(sa.select(cells.c.id).where(cells.c.run_id == run_id, cells.c.cell_key == cell.cell_key)).scalars().all()
                if old:
                    conn.execute(cell_samples.delete().where(cell_samples.c.cell_id.in_(old)))
                    conn.execute(cells.delete().where(cells.c.id.in_(old)))
            cell_id = conn.execute(cells.insert().values(**row)).inserted_primary_key[0]
            if blob is not None:
                conn.execute(cell_samples.insert().values(cell_id=cell_id, codec=CODEC, count=len(result.samples_ns), data=blob))
        cell.row_id = cell_id
        return cell_id

    # -- reading ----------------------------------------------------------------------------
    def resolve(self, run_id: str) -> str:
        """A run id (or a unique prefix), ``latest``, or ``latest~N`` (N runs before the latest); raises a one-line error."""
        back = 0
        if run_id.startswith("latest~") and run_id[7:].isdigit():
            back = int(run_id[7:])
        with self.engine.connect() as conn:
            if run_id == "latest" or back:
                found = conn.execute(sa.select(runs.c.id).where(runs.c.status.notin_(_NOT_NIGHTS))
                                     .order_by(runs.c.created_at.desc(), runs.c.id.desc()).offset(back).limit(1)).scalar()
            else:
                found = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).scalar()
                if found is None:  # accept a unique prefix, as git does
                    matches = conn.execute(sa.select(runs.c.id).where(runs.c.id.like(f"{run_id}%"))).scalars().all()
                    found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise EdgebenchError(f"{self.display_url}: no run {run_id!r}; `edgebench runs` lists the stored runs")
        return found

    def run(self, run_id: str) -> RunRecord:
        run_id = self.resolve(run_id)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
        return _run_from_row(row)

    def cell_counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's stored cells have each status (ok, failed, skipped): every attempt's, a resumed run's too."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(cells.c.status, sa.func.count()).where(cells.c.run_id == run_id).group_by(cells.c.status)).all()
        return {status: int(n) for status, n in rows}

    def runs(self, limit: int = 50) -> list[RunRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.created_at.desc()).limit(limit)).mappings().all()
        return [_run_from_row(r) for r in rows]

    def environments(self, run_id: str) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(environments).where(environments.c.run_id == run_id).order_by(environments.c.id)).mappings().all()
        return {r["target"]: r["fingerprint"] for r in rows}

    def cells(self, run_id: str, with_samples: bool = True) -> list[CellRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(cells).where(cells.c.run_id == run_id).order_by(cells.c.id)).mappings().all()
            dropped = conn.execute(sa.select(runs.c.samples_dropped_at).where(runs.c.id == run_id)).scalar() is not None
            ids = [r["id"] for r in rows]
            by_cell: dict[int, list[int]] = {}
            if with_samples and rows:
                q = sa.select(cell_samples).where(cell_samples.c.cell_id.in_(ids))
                by_cell = {b["cell_id"]: self._decoded(b) for b in conn.execute(q).mappings()}
            # in a run gc summarised, a cell measured later (a resume) has its blob: only the others are dropped
            kept = set(by_cell) if with_samples or not dropped else _with_blobs(conn, ids)
        return [_cell_from_row(r, by_cell.get(r["id"], []), dropped and r["id"] not in kept) for r in rows]

    def _decoded(self, blob_row: Any) -> list[int]:
        """A ``cell_samples`` row's samples; a codec or blob this edgebench cannot read is one line naming the cell row."""
        where = f"{self.display_url}: samples of cell row {blob_row['cell_id']}"
        if blob_row["codec"] != CODEC:
            raise EdgebenchError(f"{where} are in codec {blob_row['codec']!r}, which this edgebench cannot read (it reads {CODEC!r}); upgrade edgebench")
        try:
            values = decode_ns(blob_row["data"])
        except ValueError as exc:
            raise EdgebenchError(f"{where}: {exc}") from None
        if values.size != blob_row["count"]:
            raise EdgebenchError(f"{where}: the blob holds {values.size} samples where the row says {blob_row['count']}")
        return values.tolist()

    # -- baselines --------------------------------------------------------------------------
    def set_baseline(self, name: str, run_id: str, target: str, fingerprint: dict[str, Any], note: str | None = None) -> BaselineRecord:
        """Point baseline ``name`` for ``target`` at a run (replacing what it pointed at)."""
        record = BaselineRecord(name, target, self.resolve(run_id), fingerprint, now(), note)
        with self.engine.begin() as conn:
            # delete first: the transaction starts with a write, so concurrent writers queue instead of failing
            conn.execute(baselines.delete().where(baselines.c.name == name, baselines.c.target == target))
            conn.execute(baselines.insert().values(name=name, target=target, run_id=record.run_id, fingerprint=fingerprint,
                                                   set_at=record.set_at, note=note))
        return record

    def baselines(self, name: str | None = None) -> list[BaselineRecord]:
        """Every baseline (or every target of one name), by name then target."""
        q = sa.select(baselines).order_by(baselines.c.name, baselines.c.target)
        if name is not None:
            q = q.where(baselines.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [BaselineRecord(r["name"], r["target"], r["run_id"], r["fingerprint"], _utc(r["set_at"]), r["note"]) for r in rows]

    def delete_baseline(self, name: str, target: str | None = None) -> int:
        q = baselines.delete().where(baselines.c.name == name)
        if target is not None:
            q = q.where(baselines.c.target == target)
        with self.engine.begin() as conn:
            return conn.execute(q).rowcount

    # -- history ----------------------------------------------------------------------------
    def cell_history(self, model: str, recipe: str, backend: str, precision: str, batch: int, target: str,
                     until: str | None = None, limit: int = 200) -> list[tuple[RunRecord, CellRecord]]:
        """The last ``limit`` runs (oldest first) that have this cell, each with the cell without its samples.

        ``until`` (a run id) leaves out runs created after it.
        """
        cell = CellId(model, recipe, backend, precision, batch, target)
        q = (sa.select(cells.c.id).join(runs, runs.c.id == cells.c.run_id)
             .where(*(cells.c[f] == v for f, v in zip(FIELDS, cell.parts())), runs.c.status.notin_(_NOT_NIGHTS)))
        if until is not None:
            q = q.where(runs.c.created_at <= sa.select(runs.c.created_at).where(runs.c.id == self.resolve(until)).scalar_subquery())
        with self.engine.connect() as conn:
            ids = conn.execute(q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)).scalars().all()
            if not ids:
                return []
            run_rows = {r["id"]: _run_from_row(r) for r in conn.execute(
                sa.select(runs).where(runs.c.id.in_(sa.select(cells.c.run_id).where(cells.c.id.in_(ids))))).mappings()}
            cell_rows = conn.execute(sa.select(cells).where(cells.c.id.in_(ids))).mappings().all()
            kept = _with_blobs(conn, ids)
        found = [(run_rows[r["run_id"]], _cell_from_row(r, [], run_rows[r["run_id"]].samples_dropped_at is not None and r["id"] not in kept))
                 for r in cell_rows]
        return sorted(found, key=lambda rc: (rc[0].created_at, rc[0].id))

    def cell_coordinates(self, **where: Any) -> list[dict[str, Any]]:
        """Distinct (model, recipe, backend, precision, batch, target) of stored cells, filtered by any of them."""
        cols = [cells.c[f] for f in FIELDS]
        q = sa.select(*cols).distinct()
        for k, v in where.items():
            if v is not None:
                q = q.where(cells.c[k] == v)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(*cols)).mappings()]


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _is_v1_store(conn: sa.Connection) -> bool:
    """A store edgebench 0.1 created: its tables and schema_version 1, but no Alembic revision."""
    if not sa.inspect(conn).has_table("edgebench_meta"):
        return False
    return conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar() == "1"


def _alembic_config(conn: sa.Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def _upgrade(conn: sa.Connection, stamp_first: str | None = None) -> None:
    """Bring the schema to HEAD on ``conn`` (stamping an unversioned 0.1 store first)."""
    from alembic import command

    cfg = _alembic_config(conn)
    if stamp_first is not None:
        command.stamp(cfg, stamp_first)
    command.upgrade(cfg, HEAD)


@contextlib.contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    """An exclusive lock on ``path`` (no-op without a path or on systems without fcntl)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer at a time is then up to the user
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _with_blobs(conn: sa.Connection, cell_ids: list[int]) -> set[int]:
    """Which of these cell rows have their samples stored."""
    if not cell_ids:
        return set()
    return set(conn.execute(sa.select(cell_samples.c.cell_id).where(cell_samples.c.cell_id.in_(cell_ids))).scalars())


def _cell_from_row(r: Any, sample_values: list[int], samples_dropped: bool = False) -> CellRecord:
    result = CellResult.from_dict(r["result"]) if r["result"] else None
    if result is not None:
        result.samples_ns = sample_values
    return CellRecord(
        cell_key=r["cell_key"], **{f: r[f] for f in FIELDS}, status=r["status"], error=r["error"], options=r["options"] or {},
        facts=r["facts"] or {}, result=result, started_at=_utc(r["started_at"]), finished_at=_utc(r["finished_at"]),
        recipe_def=r["recipe_def"], row_id=r["id"], samples_dropped=samples_dropped,
    )


def _run_row(run: RunRecord) -> dict[str, Any]:
    return {k: getattr(run, k) for k in ("id", "suite_name", "suite_source", "suite_yaml", "status", "created_at", "finished_at", "edgebench_version", "git_commit", "summary")}


def _result_without_samples(result: CellResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return dataclasses.replace(result, samples_ns=[]).to_dict()  # samples live in their own table, one blob per cell


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL below may have to wait for another writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()
