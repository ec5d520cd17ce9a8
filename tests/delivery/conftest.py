"""The ledger suite runs on SQLite and on the session's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from delivery.ledger import Ledger
from delivery.schema import ledger_metadata, upgrade_ledger

POSTGRES_SUITE_DATABASE = "ledger_suite"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """A fresh, empty ledger (a SQLite file; or the session's PostgreSQL database emptied), the default for code
    under test too."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = _empty_postgres_ledger(request.getfixturevalue("postgres"))
    monkeypatch.setenv("DELIVERY_LEDGER_URL", url)
    return Ledger(url)


def _empty_postgres_ledger(server) -> str:  # noqa: ANN001 - cli.postgres_server.PostgresServer
    from cli.postgres_server import create_database

    url = server.url(POSTGRES_SUITE_DATABASE)
    if create_database(server, POSTGRES_SUITE_DATABASE):
        upgrade_ledger(url)
    tables = ", ".join(table.name for table in ledger_metadata().sorted_tables)
    with Ledger(url).engine.begin() as conn:
        conn.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY"))
    return url
