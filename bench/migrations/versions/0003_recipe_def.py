"""Each cell keeps its recipe's full definition (``cells.recipe_def``, JSON, nullable), so a report never
re-reads suite or recipe files that may have changed since. Cells stored before stay NULL.
edgebench_meta schema_version 3.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

META = sa.table("edgebench_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE ADD COLUMN on SQLite and PostgreSQL, no table copy.
    op.add_column("cells", sa.Column("recipe_def", sa.JSON, nullable=True))
    op.execute(META.update().where(META.c.key == "schema_version").values(value="3"))


def downgrade() -> None:
    # Not batch mode: copying the table would drop the old one, and with foreign keys on that deletes
    # every sample through ON DELETE CASCADE. SQLite has DROP COLUMN since 3.35 (2021).
    op.drop_column("cells", "recipe_def")
    op.execute(META.update().where(META.c.key == "schema_version").values(value="2"))
