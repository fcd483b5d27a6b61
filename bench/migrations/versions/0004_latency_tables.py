"""`edgebench fit`: latency lookup tables measured on a target (``latency_tables``, keyed by target
fingerprint + runtime version + model + settings, reused by later fits) and the fits' results (``fits``).
Both hold the contract dataclass as JSON (bench/contracts/fit.py ``to_data``), with the columns a listing
filters and sorts by beside it. edgebench_meta schema_version 4.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

META = sa.table("edgebench_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    # New tables only: nothing stored before changes, so an 0003 store keeps every run, cell and sample.
    op.create_table(
        "latency_tables",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(100), nullable=False),
        sa.Column("precision", sa.String(20), nullable=False),
        sa.Column("batch", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("table", sa.JSON, nullable=False),
    )
    op.create_index("ix_latency_tables_model_target", "latency_tables", ["model", "target"])
    op.create_table(
        "fits",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
    )
    op.execute(META.update().where(META.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    op.drop_table("fits")
    op.drop_index("ix_latency_tables_model_target", table_name="latency_tables")
    op.drop_table("latency_tables")
    op.execute(META.update().where(META.c.key == "schema_version").values(value="3"))
