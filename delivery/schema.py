"""The ledger database's schema: the column helpers its tables use, and its migrations.

The schema is under Alembic migrations (``delivery/migrations/versions``); its revision is kept in the table
``ledger_schema_version``, not Alembic's default ``alembic_version``, which Prefect's own database keeps (the
ledger may share a PostgreSQL database with it).

- :func:`upgrade_schema` (:func:`upgrade_ledger` by URL) applies the revisions a database lacks: ``delivery up``,
  ``delivery db upgrade``.
- :func:`ensure_schema` is what opening a ledger does, once per process and database: a SQLite ledger (the
  embedded default) is upgraded in place; any other database must be at the head already, else
  :class:`SchemaOutOfDate` says to run ``delivery db upgrade``: a production schema changes when its operator
  says so, not when the first worker of a new version starts.

Processes upgrading one database at once take turns: on PostgreSQL under an advisory lock held by the
migrating connection, on SQLite under an exclusive lock on a file beside the database. The one that comes
second finds the head already applied.
"""

from __future__ import annotations

import fcntl
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, DateTime, Integer, MetaData, text
from sqlalchemy.engine import Engine

from delivery.errors import InvalidInput

VERSION_TABLE = "ledger_schema_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The PostgreSQL advisory lock the migrating connection holds; any fixed number, the same in every process.
_SCHEMA_LOCK = 7_310_542_108


class SchemaOutOfDate(InvalidInput):
    """The database's schema is behind (or ahead of) what this version of the product needs."""


def row_id() -> Column:
    """The key of a table whose rows are only appended: a number counting up."""
    return Column("id", Integer, primary_key=True, autoincrement=True)


def required(name: str, type_: Any, **options: Any) -> Column:
    """A column every row fills (``NOT NULL``)."""
    return Column(name, type_, nullable=False, **options)


def timestamp(name: str = "at") -> Column:
    """When a row was written, with its timezone."""
    return required(name, DateTime(timezone=True))


def ledger_metadata() -> MetaData:
    """Every table of the ledger database: the ledger's own and the drift check's, as the code declares them."""
    from delivery.ledger_tables import metadata
    from delivery.sync_state_store import drift_metadata

    combined = MetaData()
    for table in (*metadata.sorted_tables, *drift_metadata.sorted_tables):
        table.to_metadata(combined)
    return combined


@functools.cache
def head_revision() -> str:
    """The newest revision of the schema this version of the product ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS}"
    return head


def schema_revision(conn: Connection) -> str | None:
    """The revision a database's ledger schema is at; None for a database never migrated."""
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade_schema(engine: Engine) -> tuple[str | None, str]:
    """Apply the migrations the database lacks.

    Args:
        engine: the ledger's database.

    Returns:
        The revision it was at (None: never migrated) and the one it is at now.
    """
    from alembic import command
    from alembic.config import Config

    with _migration_lock(engine), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
            conn.commit()
        try:
            before = schema_revision(conn)
            conn.commit()
            if before != head_revision():
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            return before, head_revision()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})
                conn.commit()


def upgrade_ledger(url: str) -> tuple[str | None, str]:
    """:func:`upgrade_schema` on the database at ``url`` (an engine of its own, closed after)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return upgrade_schema(engine)
    finally:
        engine.dispose()


def ensure_schema(engine: Engine) -> None:
    """Make sure the database's schema is the head: upgrade a SQLite ledger, refuse any other one behind.

    Raises:
        SchemaOutOfDate: a database other than SQLite is not at the head revision.
    """
    with engine.connect() as conn:
        current = schema_revision(conn)
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade_schema(engine)
        return
    raise SchemaOutOfDate(
        f"the ledger at {engine.url.render_as_string(hide_password=True)} has schema revision "
        f"{current or 'none (never migrated)'}, this version needs {head_revision()}: "
        "run `delivery db upgrade` (with DELIVERY_LEDGER_URL set to it) before starting workers")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On a SQLite file, an exclusive lock on ``<file>.migrate-lock`` while migrating; elsewhere nothing."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
