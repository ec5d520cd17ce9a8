"""Create the ledger's tables when missing, safely while other processes do the same.

On a fresh ledger, the CLI, the worker and each flow run start at once and all create the
tables. ``create_all`` looks before it creates, and SQLite commits each ``CREATE TABLE`` on its
own, so two processes interleave table by table and the slower one fails with "already exists".
Each creation therefore runs in one transaction that holds the database's write lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL): the others wait for it, then
find every table there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, DateTime, Integer, MetaData, inspect, text
from sqlalchemy.engine import Engine

# The PostgreSQL advisory lock the creators of the schema take; any fixed number, the same in every process.
_SCHEMA_LOCK = 7_310_542_108


def row_id() -> Column:
    """The key of a table whose rows are only appended: a number counting up."""
    return Column("id", Integer, primary_key=True, autoincrement=True)


def required(name: str, type_: Any, **options: Any) -> Column:
    """A column every row fills (``NOT NULL``)."""
    return Column(name, type_, nullable=False, **options)


def timestamp(name: str = "at") -> Column:
    """When a row was written, with its timezone."""
    return required(name, DateTime(timezone=True))


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create the tables of ``metadata`` and the nullable columns an older version lacks.

    Args:
        engine: the database.
        metadata: the tables it must hold.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The driver's own transaction handling would begin late and deferred: take the lock first.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                _create(conn, metadata)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
            return
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            _create(conn, metadata)


def _create(conn: Connection, metadata: MetaData) -> None:
    metadata.create_all(conn)
    _add_missing_columns(conn, metadata)


def _add_missing_columns(conn: Connection, metadata: MetaData) -> None:
    """Add the nullable columns a table created by an older version lacks (``create_all`` adds tables only).

    A stopgap until the schema is under migrations: only nullable columns are ever added this way.
    """
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                                  f"{column.type.compile(conn.dialect)}"))
