"""Alembic's entry: run the migrations on the connection :func:`delivery.schema.upgrade_schema` gives."""

from alembic import context

from delivery.schema import VERSION_TABLE, ledger_metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=ledger_metadata(), version_table=VERSION_TABLE,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
