"""The result store: runs, environments, cells and every latency sample (SQLAlchemy Core).

SQLite is the embedded default; the schema uses only portable types so the same tables work on
other databases. Each finished cell is written in its own transaction as soon as it ends, so a run
that dies halfway keeps every cell it finished.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edgebench.bench.errors import EdgebenchError
from edgebench.bench.results import CellResult

SCHEMA_VERSION = 1
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
    sa.UniqueConstraint("run_id", "cell_key", name="uq_cell_per_run"),
)

samples = sa.Table(
    "samples", metadata,
    sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("latency_ns", sa.BigInteger, nullable=False),
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


@dataclass
class CellRecord:
    """A cell as stored: its coordinates, status, host-side facts and the worker's result."""

    cell_key: str
    model: str
    recipe: str
    backend: str
    precision: str
    batch: int
    target: str
    status: str  # ok | failed | skipped
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    result: CellResult | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    id: int | None = None


class Store:
    """Open (and create if needed) a store at a path or SQLAlchemy URL."""

    def __init__(self, location: str | Path) -> None:
        url = str(location)
        if "://" not in url:
            path = Path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
            if found is None:
                conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(found) > SCHEMA_VERSION:
                raise EdgebenchError(f"{location}: store schema {found} is newer than this edgebench ({SCHEMA_VERSION}); upgrade edgebench")

    # -- writing ----------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs.insert().values(**_run_row(run)))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(status=status, finished_at=now(), summary=summary))

    def add_environment(self, run_id: str, target: str, fingerprint: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(environments.insert().values(run_id=run_id, target=target, captured_at=now(), fingerprint=fingerprint))

    def add_cell(self, run_id: str, cell: CellRecord) -> int:
        """Write one finished cell and all its samples in one transaction; returns its id."""
        result = cell.result
        lat = result.latency if result else None
        row = {
            "run_id": run_id, "cell_key": cell.cell_key, "model": cell.model, "recipe": cell.recipe,
            "backend": cell.backend, "precision": cell.precision, "batch": cell.batch, "target": cell.target,
            "status": cell.status, "error": cell.error, "started_at": cell.started_at, "finished_at": cell.finished_at,
            "p50_ms": lat.p50_ms if lat else None, "p90_ms": lat.p90_ms if lat else None, "p99_ms": lat.p99_ms if lat else None,
            "top1": result.accuracy.top1 if result and result.accuracy else None,
            "options": cell.options, "facts": cell.facts,
            "result": _result_without_samples(result),
        }
        with self.engine.begin() as conn:
            cell_id = conn.execute(cells.insert().values(**row)).inserted_primary_key[0]
            if result and result.samples_ns:
                conn.execute(samples.insert(), [{"cell_id": cell_id, "idx": i, "latency_ns": int(v)} for i, v in enumerate(result.samples_ns)])
        cell.id = cell_id
        return cell_id

    # -- reading ----------------------------------------------------------------------------
    def resolve(self, run_id: str) -> str:
        """A run id, or ``latest``; raises a one-line error naming the known runs."""
        with self.engine.connect() as conn:
            if run_id == "latest":
                found = conn.execute(sa.select(runs.c.id).order_by(runs.c.created_at.desc()).limit(1)).scalar()
            else:
                found = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).scalar()
                if found is None:  # accept a unique prefix, as git does
                    matches = conn.execute(sa.select(runs.c.id).where(runs.c.id.like(f"{run_id}%"))).scalars().all()
                    found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise EdgebenchError(f"{self.url}: no run {run_id!r}; `edgebench runs` lists the stored runs")
        return found

    def run(self, run_id: str) -> RunRecord:
        run_id = self.resolve(run_id)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
        return _run_from_row(row)

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
            by_cell: dict[int, list[int]] = {}
            if with_samples and rows:
                q = sa.select(samples.c.cell_id, samples.c.latency_ns).where(samples.c.cell_id.in_([r["id"] for r in rows])).order_by(samples.c.cell_id, samples.c.idx)
                for cid, v in conn.execute(q):
                    by_cell.setdefault(cid, []).append(int(v))
        out = []
        for r in rows:
            result = CellResult.from_dict(r["result"]) if r["result"] else None
            if result is not None:
                result.samples_ns = by_cell.get(r["id"], [])
            out.append(CellRecord(
                cell_key=r["cell_key"], model=r["model"], recipe=r["recipe"], backend=r["backend"], precision=r["precision"],
                batch=r["batch"], target=r["target"], status=r["status"], error=r["error"], options=r["options"] or {},
                facts=r["facts"] or {}, result=result, started_at=_utc(r["started_at"]), finished_at=_utc(r["finished_at"]), id=r["id"],
            ))
        return out


def _run_row(run: RunRecord) -> dict[str, Any]:
    return {k: getattr(run, k) for k in ("id", "suite_name", "suite_source", "suite_yaml", "status", "created_at", "finished_at", "edgebench_version", "git_commit", "summary")}


def _result_without_samples(result: CellResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    data = result.to_dict()
    data["samples_ns"] = []  # samples live in their own table, one row each
    return data


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
