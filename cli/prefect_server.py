"""The stack's Prefect server: Prefect's own, with SQLite write transactions that wait instead of failing.

Measured with bench/api_contention.py. The set-up: four releases running on the embedded default, and a
browser-like submit every half second (one ``create_flow_run``, no retry). The result: 9 of 37 submits got
a 503 within 0.3 s. A 503 is the Custom run form's "Unknown error while creating flow run".

The cause. Prefect begins its SQLite transactions ``DEFERRED``. Under WAL, a deferred transaction that
has read fails at once with ``SQLITE_BUSY_SNAPSHOT`` ("database is locked") when it then writes after
another connection committed. SQLite's busy timeout cannot help there, and Prefect answers 503 ("retry").
Prefect's client retries. The browser does not. A run's own client gives up after five retries, which a
busy fault-injection suite also met.

No Prefect setting chooses the transaction mode. Prefect's database configuration is injectable
(:func:`prefect.server.database.dependencies.set_database_config`), so this server begins every
transaction ``IMMEDIATE``. A writer then takes the lock first and queues on the busy timeout (60 s)
instead of failing. Reads outside transactions are unchanged. Where Prefect's state lives in PostgreSQL,
none of this applies.

On SQLite Prefect also admits at most 100 requests at once (its ``RequestLimitMiddleware``), and an
open websocket (every flow run's event and log streams, the UI's) holds its place for as long as it is
open: about 20 releases at once on one worker held all 100, and the server then answered nothing, not
even ``/api/health`` (bench/concurrency.py). Websockets write nothing while they wait, so this server
lets them past the limit (:func:`admit_websockets`); HTTP requests stay limited.

It also serves the product's block type logo (``blocks/logos``, at ``/delivery/logos``), which the
Blocks catalog shows offline (:func:`serve_logos`).

Run as ``python -m cli.prefect_server server start ...``: the arguments of ``prefect``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from prefect.server.database.configurations import SQLITE_BEGIN_MODE, AioSqliteConfiguration
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction


class ImmediateSqliteConfiguration(AioSqliteConfiguration):
    """Prefect's SQLite configuration whose transactions all begin ``IMMEDIATE``."""

    @asynccontextmanager
    async def begin_transaction(
        self, session: AsyncSession, with_for_update: bool = False
    ) -> AsyncGenerator[AsyncSessionTransaction, None]:
        token = SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            SQLITE_BEGIN_MODE.reset(token)


def install() -> bool:
    """Use :class:`ImmediateSqliteConfiguration` in this process when Prefect's database is SQLite.

    Returns:
        Whether it was installed (not for PostgreSQL).
    """
    from prefect.server.database.dependencies import set_database_config
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    if not url.startswith("sqlite"):
        return False
    set_database_config(ImmediateSqliteConfiguration(connection_url=url))
    return True


def admit_websockets() -> None:
    """Let websocket connections past Prefect's SQLite request limit; HTTP requests stay under it."""
    from prefect.server.api.server import RequestLimitMiddleware

    limited = RequestLimitMiddleware.__call__

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "websocket":
            await self.app(scope, receive, send)
            return
        await limited(self, scope, receive, send)

    RequestLimitMiddleware.__call__ = call


def serve_logos() -> None:
    """Make Prefect's server app (``create_app``) also serve ``blocks/logos`` at ``/delivery/logos``.

    ``prefect server start`` builds its app in this process with ``prefect.server.api.server.create_app``,
    read when it starts: the wrapper adds a static mount ahead of the UI's, which would answer any path
    with its single-page app. Without a credential, as the UI's own files: an ``<img>`` sends none.
    """
    import prefect.server.api.server as server
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from blocks.loading import LOGO_DIR, LOGO_ROUTE

    create_app = server.create_app

    def create_app_serving_logos(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        if not any(getattr(route, "path", None) == LOGO_ROUTE for route in app.router.routes):  # apps are cached
            app.router.routes.insert(0, Mount(LOGO_ROUTE, app=StaticFiles(directory=LOGO_DIR), name="delivery-logos"))
        return app

    server.create_app = create_app_serving_logos


def main() -> None:
    """Prefect's command line, with the SQLite configuration installed first and the product's logo served."""
    from prefect.cli import app

    if install():
        admit_websockets()
        print("delivery: Prefect's SQLite transactions begin IMMEDIATE; websockets pass its request limit",
              flush=True)
    serve_logos()
    app()


if __name__ == "__main__":
    main()
