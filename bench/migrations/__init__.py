"""Alembic migrations of the result store, shipped inside the package so an installed wheel can upgrade
a store in place. ``edgebench.bench.store.Store`` runs them; nobody needs an ``alembic.ini``.

To add a revision: write ``versions/NNNN_what.py`` by hand (``down_revision`` = the previous one), add its id
to ``store.REVISIONS``, and bump ``store.SCHEMA_VERSION`` (kept in ``edgebench_meta`` for older edgebench
versions, which refuse a store whose schema is newer than theirs).
"""
