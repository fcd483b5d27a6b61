"""The store's part for ``edgebench fit``: latency lookup tables measured on a target and the fits' results.

:class:`FitStore` is a base class of :class:`edgebench.bench.store.Store`, which hands it its two tables
(``latency_tables`` and ``fits``, defined with the rest of the schema in store.py, created by migration
0004) as class keywords: this module needs no import of store.py, which imports it. Each row keeps the
contract dataclass as JSON (:func:`edgebench.bench.contracts.fit.to_data`), so fields the contract gains
later default when an older row is read back; the columns beside it are what listings filter and sort by.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from edgebench.bench.contracts.fit import FitResult, LatencyTable, fit_from_data, table_from_data, to_data


def _created(text: str) -> dt.datetime:
    """A contract's ISO ``created_at`` as an aware datetime (now when empty; naive means UTC)."""
    if not text:
        return dt.datetime.now(dt.timezone.utc)
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


_FLOAT = "$float"  # {"$float": "nan" | "inf" | "-inf"}: a non-finite float, which JSON cannot hold


def _encode(data: Any) -> Any:
    """``data`` with NaN and infinities as ``{"$float": ...}``: PostgreSQL's json refuses the bare NaN token
    Python writes (an unmeasured loss, a step whose measurement failed), and other readers of SQLite's JSON would too."""
    if isinstance(data, float) and not math.isfinite(data):
        return {_FLOAT: repr(data)}
    if isinstance(data, dict):
        return {k: _encode(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_encode(v) for v in data]
    return data


def _decode(data: Any) -> Any:
    """:func:`_encode` undone."""
    if isinstance(data, dict):
        if len(data) == 1 and isinstance(data.get(_FLOAT), str):
            return float(data[_FLOAT])
        return {k: _decode(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_decode(v) for v in data]
    return data


def _stamped(obj: LatencyTable | FitResult) -> tuple[dict[str, Any], dt.datetime]:
    """``to_data(obj)`` and its creation time, the data's ``created_at`` filled in when it was empty
    (the caller's object is left as it is)."""
    created = _created(obj.created_at)
    data = to_data(obj)
    data["created_at"] = data["created_at"] or created.isoformat()
    return _encode(data), created


def _upsert(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> None:
    """Insert ``row`` or replace the row with its primary key, in one statement (ON CONFLICT DO UPDATE):
    two writers saving the same key at once both succeed, the later one's row kept (a delete then an
    insert lets both delete, and PostgreSQL then refuses the second insert)."""
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    keys = [c.name for c in table.primary_key.columns]
    if dialect is None:  # a database without ON CONFLICT here: delete then insert (concurrent first saves may collide)
        conn.execute(table.delete().where(*(table.c[k] == row[k] for k in keys)))
        conn.execute(table.insert().values(**row))
        return
    stmt = dialect.insert(table).values(**row)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_={k: stmt.excluded[k] for k in row if k not in keys}))


class FitStore:
    """Store methods for latency tables and fits (see the module docstring for how Store provides the tables)."""

    _latency_tables: ClassVar[sa.Table]
    _fits: ClassVar[sa.Table]
    engine: sa.Engine

    def __init_subclass__(cls, latency_tables: sa.Table | None = None, fits: sa.Table | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if latency_tables is not None:
            cls._latency_tables = latency_tables
        if fits is not None:
            cls._fits = fits

    def _writing(self) -> contextlib.AbstractContextManager[None]:  # Store's: a refused write is CannotWrite
        raise NotImplementedError

    # -- latency tables -----------------------------------------------------------------------
    def save_latency_table(self, table: LatencyTable) -> None:
        """Store ``table`` under its :attr:`~LatencyTable.key`, replacing a table stored with that key.

        An empty ``created_at`` is stored as the time of saving. A write the disk refuses is CannotWrite."""
        t = self._latency_tables
        data, created = _stamped(table)
        row = {"key": table.key, "target": table.target, "model": table.model, "backend": table.backend,
               "precision": table.precision, "batch": table.batch, "created_at": created, "table": data}
        with self._writing(), self.engine.begin() as conn:
            _upsert(conn, t, row)

    def latency_table(self, key: str) -> LatencyTable | None:
        """The table stored under ``key``, or None."""
        t = self._latency_tables
        with self.engine.connect() as conn:
            data = conn.execute(sa.select(t.c.table).where(t.c.key == key)).scalar()
        return None if data is None else table_from_data(_decode(data))

    def latency_tables(self, model: str | None = None, target: str | None = None) -> list[LatencyTable]:
        """Every stored table, newest first, of one model and/or one target when given."""
        t = self._latency_tables
        q = sa.select(t.c.table).order_by(t.c.created_at.desc(), t.c.key.desc())
        if model is not None:
            q = q.where(t.c.model == model)
        if target is not None:
            q = q.where(t.c.target == target)
        with self.engine.connect() as conn:
            return [table_from_data(_decode(d)) for d in conn.execute(q).scalars()]

    # -- fits -----------------------------------------------------------------------------------
    def save_fit(self, result: FitResult) -> None:
        """Store a fit's result under its :attr:`~FitResult.id`, replacing one stored with that id (a fit
        saved as it goes and again when it ends). An empty ``created_at`` is stored as the time of saving."""
        f = self._fits
        data, created = _stamped(result)
        row = {"id": result.id, "model": result.model, "target": result.target, "status": result.status,
               "created_at": created, "result": data}
        with self._writing(), self.engine.begin() as conn:
            _upsert(conn, f, row)

    def fit(self, fit_id: str) -> FitResult | None:
        """The fit stored under ``fit_id``, or None."""
        f = self._fits
        with self.engine.connect() as conn:
            data = conn.execute(sa.select(f.c.result).where(f.c.id == fit_id)).scalar()
        return None if data is None else fit_from_data(_decode(data))

    def fits(self, limit: int = 20) -> list[FitResult]:
        """The last ``limit`` fits, newest first."""
        f = self._fits
        q = sa.select(f.c.result).order_by(f.c.created_at.desc(), f.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [fit_from_data(_decode(d)) for d in conn.execute(q).scalars()]
