"""Named baselines (name, target -> run, with the environment fingerprint it was set on) and an index for
the history of one cell across runs. edgebench_meta schema_version 2.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

META = sa.table("edgebench_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.create_table(
        "baselines",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fingerprint", sa.JSON, nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_cells_coordinates", "cells", ["model", "recipe", "backend", "precision", "batch", "target"])
    op.execute(META.update().where(META.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    op.drop_index("ix_cells_coordinates", table_name="cells")
    op.drop_table("baselines")
    op.execute(META.update().where(META.c.key == "schema_version").values(value="1"))
