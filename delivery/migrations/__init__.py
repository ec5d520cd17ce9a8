"""The ledger's schema migrations (Alembic): one module per revision under ``versions/``.

Applied by :func:`delivery.schema.upgrade_schema` (``delivery up``, ``delivery db upgrade``, and a writer
opening a SQLite ledger); the revision is kept in the table ``ledger_schema_version``. A new revision is a
new module in ``versions/`` whose ``down_revision`` is the previous head; ``tests/delivery/test_migrations.py``
proves the head builds exactly the tables the code declares.
"""
