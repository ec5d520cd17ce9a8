"""The ledger's schema under migrations: built, adopted, upgraded, refused when behind, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, inspect, text
from typer.testing import CliRunner

from cli.main import app
from delivery.ledger import Ledger, ledger_engine
from delivery.schema import (
    VERSION_TABLE,
    SchemaOutOfDate,
    head_revision,
    ledger_metadata,
    schema_revision,
    upgrade_ledger,
)
from delivery.sync_state_store import SyncStateStore

PROCESSES = 6
_databases = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with nothing in it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    from cli.postgres_server import create_database

    server = request.getfixturevalue("postgres")
    name = f"schema_{next(_databases)}_{tmp_path.name[-12:].lower().replace('-', '_')}"
    create_database(server, name)
    return server.url(name)


def test_the_migrations_build_exactly_the_tables_the_code_declares(empty_database: str) -> None:
    assert upgrade_ledger(empty_database) == (None, head_revision())

    engine = create_engine(empty_database)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}),
                                       ledger_metadata())
        assert schema_revision(conn) == head_revision()
    engine.dispose()
    assert differences == []
    assert upgrade_ledger(empty_database) == (head_revision(), head_revision())  # a second run: nothing to do


def _legacy_ledger(url: str) -> None:
    """The two tables as the version before migrations made them, without its later columns, with a row each."""
    old = MetaData()
    Table("release_actions", old, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("release_id", String(64), nullable=False), Column("action", String(64), nullable=False),
          Column("actor", String(200), nullable=False), Column("reason", Text, nullable=False),
          Column("detail", JSON, nullable=False), Column("at", DateTime(timezone=True), nullable=False))
    Table("plan_transitions", old, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("plan_id", String(200), nullable=False), Column("from_state", String(32), nullable=False),
          Column("to_state", String(32), nullable=False), Column("actor", String(200), nullable=False),
          Column("reason", Text, nullable=False), Column("at", DateTime(timezone=True), nullable=False))
    engine = create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO release_actions (release_id, action, actor, reason, detail, at) VALUES "
                          "('rel-1', 'retried', 'user:a', 'kept', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO plan_transitions (plan_id, from_state, to_state, actor, reason, at) VALUES "
                          "('rel-1/r1/dev', 'Planned', 'PendingApproval', 'agent:rm', 'kept', CURRENT_TIMESTAMP)"))
    engine.dispose()


def test_a_ledger_made_before_migrations_is_adopted_with_its_rows(empty_database: str) -> None:
    _legacy_ledger(empty_database)

    upgrade_ledger(empty_database)

    ledger = Ledger(empty_database)
    columns = {c["name"] for c in inspect(ledger.engine).get_columns("plan_transitions")}
    assert "cause" in columns
    assert [a["reason"] for a in ledger.actions(release_id="rel-1")] == ["kept"]
    assert [t.reason for t in ledger.transitions("rel-1/r1/dev")] == ["kept"]
    # the key that makes an action once-only holds on the adopted table too
    first = ledger.record_action("rel-1", action="drift-reconciled", actor="system:drift-check", reason="r", key="k")
    assert ledger.record_action("rel-1", action="drift-reconciled", actor="system:drift-check", reason="r",
                                key="k") == first
    with ledger.engine.connect() as conn:
        assert schema_revision(conn) == head_revision()
    assert {t.name for t in ledger_metadata().sorted_tables} <= set(inspect(ledger.engine).get_table_names())


def test_a_sqlite_ledger_upgrades_itself_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _legacy_ledger(url)

    ledger = Ledger(url)

    with ledger.engine.connect() as conn:
        assert schema_revision(conn) == head_revision()


def test_a_postgresql_ledger_behind_is_refused_until_delivery_db_upgrade(postgres, tmp_path: Path) -> None:
    from cli.postgres_server import create_database

    create_database(postgres, "schema_behind")
    url = postgres.url("schema_behind")
    _legacy_ledger(url)
    runner = CliRunner()

    with pytest.raises(SchemaOutOfDate, match=r"revision none \(never migrated\).*run `delivery db upgrade`"):
        Ledger(url)
    status = runner.invoke(app, ["db", "status", "--url", url, "--json"])
    assert status.exit_code == 1 and json.loads(status.stdout)["revision"] is None

    upgraded = runner.invoke(app, ["db", "upgrade", "--url", url, "--json"])
    again = runner.invoke(app, ["db", "upgrade", "--url", url])

    assert upgraded.exit_code == 0, upgraded.output
    report = json.loads(upgraded.stdout)
    assert (report["before"], report["after"]) == (None, head_revision()) and "schema_behind" in report["url"]
    assert again.exit_code == 0 and f"already at revision {head_revision()}" in again.output
    assert runner.invoke(app, ["db", "status", "--url", url]).exit_code == 0
    assert [a["reason"] for a in Ledger(url).actions(release_id="rel-1")] == ["kept"]


def test_delivery_db_refuses_a_url_that_is_not_one() -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--url", "not a url"])

    assert result.exit_code == 2 and "not a database URL" in result.output


def test_one_engine_per_process_and_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    assert Ledger(url).engine is Ledger(url).engine is ledger_engine(url)
    for n in range(10):  # more databases than the process keeps engines for: the first is closed and let go
        Ledger(f"sqlite:///{tmp_path / f'other-{n}.db'}")
    reopened = Ledger(url)

    assert reopened.engine is ledger_engine(url)
    reopened.record_action("rel-1", action="retried", actor="user:a", reason="after the engine was closed")
    assert len(reopened.actions()) == 1


def _open_ledger(url: str, start: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue) -> None:
    start.wait(timeout=60)
    try:
        if url.startswith("sqlite"):
            SyncStateStore(Ledger(url).engine)
        else:
            upgrade_ledger(url)
    except Exception as error:  # reported to the test, which names it
        errors.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("round_", range(2))
def test_processes_migrating_a_fresh_ledger_at_once_all_succeed(empty_database: str, round_: int) -> None:
    context = multiprocessing.get_context("spawn")
    start, errors = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_open_ledger, args=(empty_database, start, errors)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        assert schema_revision(conn) == head_revision()
    assert {table.name for table in ledger_metadata().sorted_tables} <= set(inspect(engine).get_table_names())
    engine.dispose()
