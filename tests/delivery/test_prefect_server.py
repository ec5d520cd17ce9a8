"""The stack's Prefect server begins SQLite transactions IMMEDIATE: a writer that read first waits, it does not fail.

The race, on a real SQLite file in WAL mode through Prefect's own database configuration. Transaction A
reads. B then writes and commits. A writes after that. Prefect's DEFERRED transactions fail there with
"database is locked" (a 503 from the API). With the stack's configuration, B waits until A commits, and
both writes land.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration
from sqlalchemy.exc import OperationalError

from cli.prefect_server import ImmediateSqliteConfiguration, install


async def _race(config: AioSqliteConfiguration) -> list[int]:
    engine = await config.engine()
    async with engine.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY)"))
    a_has_read = asyncio.Event()
    b_is_done = asyncio.Event()

    async def transaction_a() -> None:
        session = await config.session(engine)
        async with session, config.begin_transaction(session):
            await session.execute(sa.text("SELECT count(*) FROM runs"))
            a_has_read.set()
            # B gets its chance now: under DEFERRED it commits; under IMMEDIATE it waits for A's lock
            await asyncio.wait({asyncio.ensure_future(b_is_done.wait())}, timeout=1.0)
            await session.execute(sa.text("INSERT INTO runs (id) VALUES (1)"))

    async def transaction_b() -> None:
        await a_has_read.wait()
        session = await config.session(engine)
        try:
            async with session, config.begin_transaction(session):
                await session.execute(sa.text("INSERT INTO runs (id) VALUES (2)"))
        finally:
            b_is_done.set()

    try:
        await asyncio.gather(transaction_a(), transaction_b())
        async with engine.connect() as connection:
            return sorted(row[0] for row in await connection.execute(sa.text("SELECT id FROM runs")))
    finally:
        await engine.dispose()


def _run(race: Coroutine[Any, Any, list[int]]) -> list[int]:
    # a loop of its own: asyncio.run would leave the main thread without a current loop, which
    # later tests (Pulumi's mocks) need
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(race)
    finally:
        loop.close()


def test_prefects_deferred_transactions_fail_the_writer_that_read_first(tmp_path: Path) -> None:
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}")
    with pytest.raises(OperationalError, match="database is locked"):
        _run(_race(config))


def test_the_stacks_immediate_transactions_queue_both_writers(tmp_path: Path) -> None:
    config = ImmediateSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}")
    assert _run(_race(config)) == [1, 2]


def test_it_is_installed_for_sqlite_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.server.database import dependencies
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    monkeypatch.setitem(dependencies.MODELS_DEPENDENCIES, "database_config", None)
    with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: "postgresql+asyncpg://u:p@127.0.0.1/prefect"}):
        assert install() is False
    assert dependencies.MODELS_DEPENDENCIES["database_config"] is None
    with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"}):
        assert install() is True
    assert isinstance(dependencies.MODELS_DEPENDENCIES["database_config"], ImmediateSqliteConfiguration)


def test_open_websockets_do_not_take_the_places_of_http_requests_under_prefects_sqlite_limit() -> None:
    import anyio
    from prefect.server.api.server import RequestLimitMiddleware

    from cli.prefect_server import admit_websockets

    async def scenario() -> list[str]:
        """Two websockets open under a limit of two, then an HTTP request: what the app served, in order."""
        sockets_end, served = anyio.Event(), []

        async def app(scope, receive, send) -> None:  # noqa: ANN001 - an ASGI app
            if scope["type"] == "websocket":
                await sockets_end.wait()
            served.append(scope["type"])

        middleware = RequestLimitMiddleware(app, limit=2)
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(middleware, {"type": "websocket"}, None, None)
            await anyio.sleep(0.05)
            with anyio.move_on_after(1):
                await middleware({"type": "http"}, None, None)
            sockets_end.set()
        return served

    original = RequestLimitMiddleware.__call__
    try:
        assert anyio.run(scenario) == ["websocket", "websocket"]  # Prefect's own: the request never ran
        admit_websockets()
        assert anyio.run(scenario) == ["http", "websocket", "websocket"]
    finally:
        RequestLimitMiddleware.__call__ = original
