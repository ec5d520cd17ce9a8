"""``delivery db upgrade|status``: the ledger's schema revision, and its migrations applied to a database.

``delivery up`` applies them itself; a production ledger (PostgreSQL, which a worker refuses to open at an
older revision) is upgraded by its operator: ``DELIVERY_LEDGER_URL=postgresql+psycopg://... delivery db
upgrade``, or ``--url``. The URL defaults to ``DELIVERY_LEDGER_URL``, else the ledger of the stack found.
"""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from delivery.errors import DeliveryError
from delivery.schema import head_revision, schema_revision, upgrade_ledger
from delivery.settings import LEDGER_ENV

db_app = typer.Typer(help="The ledger's schema: its revision, and its migrations.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)

URL_OPTION = typer.Option(None, "--url", help=f"The ledger's SQLAlchemy URL (default {LEDGER_ENV}, else the "
                                              "ledger of the stack found).")


def _url(url: str | None) -> str:
    if url:
        chosen = url
    elif os.environ.get(LEDGER_ENV):
        chosen = os.environ[LEDGER_ENV]
    else:
        from cli.stack_info import find_stack

        try:
            chosen = find_stack().require_ledger()
        except DeliveryError as exc:
            console.print(f"[red]no ledger to use[/red]: {exc}; pass --url or set {LEDGER_ENV}")
            raise typer.Exit(1) from None
    try:
        make_url(chosen)
    except ArgumentError as exc:
        raise typer.BadParameter(f"not a database URL: {exc}", param_hint="--url") from None
    return chosen


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def upgrade_command(url: str | None = URL_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply the ledger's migrations the database lacks (safe to run again, and from several places at once)."""
    target = _url(url)
    try:
        before, after = upgrade_ledger(target)
    except (SQLAlchemyError, DeliveryError) as exc:
        console.print(f"[red]delivery db upgrade failed[/red] on {_shown(target)}: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"url": _shown(target), "before": before, "after": after}))
    elif before == after:
        console.print(f"{_shown(target)}: already at revision {after}")
    else:
        console.print(f"{_shown(target)}: upgraded from {before or 'an unmigrated ledger'} to {after}")


def status_command(url: str | None = URL_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the ledger's schema revision and the one this version needs; exit 1 when they differ."""
    target = _url(url)
    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            current = schema_revision(conn)
    except SQLAlchemyError as exc:
        console.print(f"[red]cannot read the ledger[/red] at {_shown(target)}: {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    head = head_revision()
    if as_json:
        typer.echo(json.dumps({"url": _shown(target), "revision": current, "head": head}))
    else:
        console.print(f"{_shown(target)}: revision {current or 'none'}; this version needs {head}"
                      + ("" if current == head else " (run `delivery db upgrade`)"))
    if current != head:
        raise typer.Exit(1)


db_app.command("upgrade")(upgrade_command)
db_app.command("status")(status_command)
