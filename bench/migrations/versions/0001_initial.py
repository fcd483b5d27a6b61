"""The schema edgebench 0.1 created with ``metadata.create_all`` (edgebench_meta schema_version 1).

Stores made by that version have these tables and no ``alembic_version``: the store stamps them 0001
and upgrades from there.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("edgebench_meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
    op.create_table(
        "runs",
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
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.JSON, nullable=False),
    )
    op.create_index("ix_environments_run_id", "environments", ["run_id"])
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
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
    op.create_index("ix_cells_run_id", "cells", ["run_id"])
    op.create_table(
        "samples",
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("latency_ns", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(sa.table("edgebench_meta", sa.column("key", sa.String), sa.column("value", sa.Text)),
                   [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in ("samples", "cells", "environments", "runs", "edgebench_meta"):
        op.drop_table(table)
