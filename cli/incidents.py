"""``delivery incidents list|show|replay|ack``: what exhausted its retries, and closing the loop.

An incident is recorded by the stage failure hook (tasks/stage.py) with the whole envelope:
flow, task, parameters, trace, attempts, error and traceback. ``replay`` and ``ack`` run the
operations ``replay-incident`` and ``acknowledge-incident`` (flows/operations.py) through the Prefect
API, as an agent would, and wait for their verdict: a replay resubmits the release run the
incident belongs to (a Failed environment goes back to Promoting first) and it continues from its
stored stages; an acknowledgement marks the incident as owned. Both are written to the ledger with
the actor who asked. Agents read incidents without the ledger from the ``delivery-incidents``
artifact (tasks/incidents.py).
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DeliveryClient
from cli.client_models import Operation
from cli.errors_out import fail
from cli.stack_info import find_stack
from delivery.errors import DeliveryError, InvalidInput
from delivery.ledger import Ledger

incidents_app = typer.Typer(help="List, show, replay and acknowledge incidents.", no_args_is_help=True)
console = Console()

JsonOption = typer.Option(False, "--json", help="Print one JSON document (for agents).")
ApiOption = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="The Prefect API (…/api).")
ActorOption = typer.Option(None, "--as", envvar="DELIVERY_IDENTITY", help="Your identity (audited).")

REPLAY_DEPLOYMENT = "replay-incident/replay-incident"
ACKNOWLEDGE_DEPLOYMENT = "acknowledge-incident/acknowledge-incident"


def run_incident_operation(deployment: str, incident_id: int, actor: str | None, api_url: str | None,
                           **parameters: Any) -> Operation:
    """Run an incident operation's deployment as ``actor`` and wait for its verdict.

    Raises:
        InvalidInput: no identity given, or the operation refused (already replayed, acknowledged...).
        NotFound: no such incident.
    """
    if not actor or not actor.strip():
        raise InvalidInput("--as: give your identity (e.g. user:alice), or set DELIVERY_IDENTITY")
    with DeliveryClient(api_url) as client:
        return client.run_operation(deployment, {"incident_id": incident_id, "requested_by": actor, **parameters})


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "status": row["status"], "flow": row["flow"], "task": row["task"],
        "release_id": row["release_id"], "trace_id": row["trace_id"], "error": row["error"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
    }


def _ledger() -> Ledger:
    """The found stack's ledger, read only (nothing is created when there is none)."""
    return Ledger(find_stack().require_ledger(), create=False)


@incidents_app.command("list")
def list_incidents(
    status: str = typer.Option(None, "--status", help="Only incidents in this status (open, acknowledged, replayed)."),
    as_json: bool = JsonOption,
) -> None:
    """List incidents, newest first."""
    try:
        rows = [_summary(r) for r in _ledger().incidents(status=status)]
    except DeliveryError as exc:
        raise fail(exc, as_json=as_json, console=console) from None
        return
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "status", "flow", "task", "release", "error")
    for row in rows:
        table.add_row(str(row["id"]), row["status"], row["flow"], row["task"] or "", row["release_id"] or "",
                      row["error"][:80])
    console.print(table)


@incidents_app.command("show")
def show_incident(incident_id: int, as_json: bool = JsonOption) -> None:
    """Show one incident with its whole envelope."""
    try:
        row = _ledger().incident(incident_id)
    except DeliveryError as exc:
        raise fail(exc, as_json=as_json, console=console) from None
        return
    document = {**_summary(row), "envelope": row["envelope"]}
    if as_json:
        typer.echo(json.dumps(document))
    else:
        console.print_json(json.dumps(document))


@incidents_app.command("replay")
def replay(
    incident_id: int,
    actor: str | None = ActorOption,
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """Replay an incident: its release run continues from its stored stages (through the Prefect API)."""
    _operate(REPLAY_DEPLOYMENT, incident_id, actor, api_url, as_json, f"incident {incident_id} replayed")


@incidents_app.command("ack")
def acknowledge(
    incident_id: int,
    actor: str | None = ActorOption,
    comment: str = typer.Option("", "--comment", "-m", help="Why, or what is being done about it."),
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """Acknowledge an open incident: you own it; it stays unreplayed (it can still be replayed later)."""
    _operate(ACKNOWLEDGE_DEPLOYMENT, incident_id, actor, api_url, as_json, f"incident {incident_id} acknowledged",
             comment=comment)


def _operate(deployment: str, incident_id: int, actor: str | None, api_url: str | None, as_json: bool, done: str,
             **parameters: Any) -> None:
    try:
        operation = run_incident_operation(deployment, incident_id, actor, api_url, **parameters)
    except DeliveryError as exc:
        raise fail(exc, as_json=as_json, console=console) from None
        return
    if as_json:
        typer.echo(json.dumps({"incident_id": incident_id, **operation.model_dump(mode="json")}))
    else:
        console.print(f"{done} (run {operation.flow_run_name}: {operation.state})")
