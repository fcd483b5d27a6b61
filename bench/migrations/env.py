"""Alembic environment: migrations always run on a connection the store hands over (no alembic.ini, no URL here)."""

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things, so column changes become copy-and-rename there.
context.configure(connection=connection, target_metadata=None, render_as_batch=True, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
