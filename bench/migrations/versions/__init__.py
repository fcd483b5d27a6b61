"""Store schema revisions, oldest first: 0001 is the schema edgebench 0.1 created without Alembic."""
