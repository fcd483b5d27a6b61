"""Each cell's latency samples as one compact blob (``cell_samples``: codec, count, data) instead of one
``samples`` row per sample (~32 bytes each on SQLite; the blob is about 2), and ``runs.samples_dropped_at``
for runs whose raw samples `edgebench gc` removed. edgebench_meta schema_version 5.

The rows are converted streaming, cell by cell in (cell_id, idx) order, a batch of blobs written at a time:
a store with hundreds of millions of sample rows never has more than one cell's in memory. The format of a blob is
bench/contracts/samples.py (``CODEC`` is stored beside each). Downgrading writes the rows back the same way.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa
from alembic import op

from edgebench.bench.contracts.samples import CODEC, decode_ns, encode_ns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

META = sa.table("edgebench_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
SAMPLES = sa.table("samples", sa.column("cell_id", sa.Integer), sa.column("idx", sa.Integer), sa.column("latency_ns", sa.BigInteger))
CELL_SAMPLES = sa.table("cell_samples", sa.column("cell_id", sa.Integer), sa.column("codec", sa.String),
                        sa.column("count", sa.Integer), sa.column("data", sa.LargeBinary))
BATCH_BYTES = 8 << 20  # blob bytes buffered before one executemany
BATCH_ROWS = 100_000  # going down: sample rows buffered before one executemany (~20 MB of dicts)


def upgrade() -> None:
    op.create_table(
        "cell_samples",
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
        sa.Column("codec", sa.String(40), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    conn = op.get_bind()
    batch: list[dict] = []
    buffered = 0
    for cell_id, values in _cells_of_rows(conn):
        blob = encode_ns(values)
        batch.append({"cell_id": cell_id, "codec": CODEC, "count": int(values.size), "data": blob})
        buffered += len(blob)
        if buffered >= BATCH_BYTES:
            conn.execute(CELL_SAMPLES.insert(), batch)
            batch, buffered = [], 0
    if batch:
        conn.execute(CELL_SAMPLES.insert(), batch)
    op.drop_table("samples")
    # A nullable column: a plain ALTER TABLE ADD COLUMN. Never batch mode on `runs`: copying it would drop
    # the old table, and with foreign keys on that deletes every cell through ON DELETE CASCADE.
    op.add_column("runs", sa.Column("samples_dropped_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(META.update().where(META.c.key == "schema_version").values(value="5"))


def downgrade() -> None:
    """Back to one row per sample (runs whose samples gc dropped keep none, as in 0005)."""
    op.create_table(
        "samples",
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("latency_ns", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    ids = conn.execute(sa.select(CELL_SAMPLES.c.cell_id).order_by(CELL_SAMPLES.c.cell_id)).scalars().all()
    rows: list[dict] = []
    for cell_id in ids:  # one blob read at a time; at most one cell's rows beyond BATCH_ROWS are held
        data = conn.execute(sa.select(CELL_SAMPLES.c.data).where(CELL_SAMPLES.c.cell_id == cell_id)).scalar_one()
        rows.extend({"cell_id": cell_id, "idx": i, "latency_ns": v} for i, v in enumerate(decode_ns(data).tolist()))
        if len(rows) >= BATCH_ROWS:
            conn.execute(SAMPLES.insert(), rows)
            rows = []
    if rows:
        conn.execute(SAMPLES.insert(), rows)
    op.drop_table("cell_samples")
    op.drop_column("runs", "samples_dropped_at")  # not batch mode (see upgrade); SQLite has DROP COLUMN since 3.35
    op.execute(META.update().where(META.c.key == "schema_version").values(value="4"))


def _cells_of_rows(conn: sa.Connection) -> Iterator[tuple[int, np.ndarray]]:
    """Each cell's samples from the old table, in idx order, one cell at a time.

    One query per cell, answered from the (cell_id, idx) primary key's index on SQLite and PostgreSQL:
    no cursor stays open across the inserts (which not every driver's server-side cursor allows), and
    the most held at once is one cell's samples."""
    cells = sa.table("cells", sa.column("id", sa.Integer))
    for cell_id in conn.execute(sa.select(cells.c.id).order_by(cells.c.id)).scalars().all():
        values = conn.execute(sa.select(SAMPLES.c.latency_ns).where(SAMPLES.c.cell_id == cell_id).order_by(SAMPLES.c.idx)).scalars().all()
        if values:
            yield cell_id, np.asarray(values, dtype=np.int64)
