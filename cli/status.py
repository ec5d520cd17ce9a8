"""``delivery status``: every environment at a glance, from the ledger (no flow is run, nothing is changed).

Per environment and application: the release and revision running, since when, who approved it,
its health, its drift (Synced, Drifted, Degraded) from the latest drift check and when that check ran, and
a newer attempt that did not replace it. The rows are the ones the ``environments`` artifact shows
(:mod:`delivery.overview`); ``--json`` prints them as one JSON list for agents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import typer
from rich.console import Console
from rich.table import Table

from cli.errors_out import fail
from delivery.errors import DeliveryError, InvalidInput
from delivery.overview import OverviewRow, attempt_text, drift_text, environment_overview, format_time

console = Console()


def read_overview(*, path: Iterable[str] | None = None, ledger_url: str | None = None) -> list[OverviewRow]:
    """The overview rows from the ledger of the stack found from here (creating nothing).

    Args:
        path: the promotion path, in order; default: the environments the ledger knows.
        ledger_url: the ledger's SQLAlchemy URL; default ``DELIVERY_LEDGER_URL``, else the stack's
            (:func:`cli.stack.find_stack`, from any directory).

    Raises:
        StackNotFound: no ledger was given and no stack is found from the working directory.
    """
    from cli.stack_info import find_stack
    from delivery.ledger import Ledger

    ledger = Ledger(ledger_url or find_stack().require_ledger(), create=False)
    return environment_overview(ledger, path=path)


def _parse_path(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InvalidInput("--path: name at least one environment, e.g. dev,staging,prod")
    return names


def _table(rows: list[OverviewRow]) -> Table:
    table = Table("environment", "app", "release", "rev", "since", "approved by", "health", "drift", "last check",
                  "last attempt")
    for row in rows:
        table.add_row(
            row.environment, row.app or "-", row.release_id if row.deployed else "[dim]not deployed[/dim]",
            str(row.revision) if row.revision is not None else "-", format_time(row.since),
            ", ".join(row.approved_by) or "-", row.health.value,
            drift_text(row.sync_state), format_time(row.last_check),
            attempt_text(row.last_attempt),
        )
    return table


def status_command(
    path: str | None = typer.Option(None, "--path", help="The promotion path, comma-separated, e.g. "
                                    "dev,staging,prod (default: the environments the ledger knows)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for agents)."),
) -> None:
    """Show every environment at a glance: what runs, since when, approved by whom, health and drift."""
    try:
        rows = read_overview(path=_parse_path(path))
    except (DeliveryError, ValueError) as exc:
        raise fail(exc, as_json=as_json, console=console) from None
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows]))
    elif rows:
        console.print(_table(rows))
    else:
        console.print("no environment yet: nothing was planned or checked for drift")


__all__ = ["read_overview", "status_command"]
