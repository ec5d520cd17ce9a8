"""``delivery incidents list|show|replay``: what exhausted its retries, and running it again.

An incident is recorded by the stage failure hook (tasks/stage.py) with the whole envelope:
flow, task, parameters, trace, attempts, error and traceback. Replay starts a new run of the
same flow's deployment with the same parameters through the Prefect API; the idempotency key
``incident-<id>`` makes a repeated replay return the same run.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from delivery.cli.client import DeliveryClient
from delivery.errors import DeliveryError, InvalidInput
from delivery.ledger import Ledger
from delivery.models import Model

incidents_app = typer.Typer(help="List, show and replay incidents.", no_args_is_help=True)
console = Console()

JsonOption = typer.Option(False, "--json", help="Print one JSON document (for agents).")
ApiOption = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="The Prefect API (…/api).")


class ReplayedIncident(Model):
    incident_id: int
    flow: str
    deployment_id: str
    flow_run_id: str
    created: bool


def replay_incident(client: DeliveryClient, ledger: Ledger, incident_id: int) -> ReplayedIncident:
    """Start a new run of what an incident preserved.

    Args:
        client: the Prefect API client.
        ledger: where the incident is kept.
        incident_id: the incident to replay.

    Returns:
        The run started (or found, for a repeated replay).

    Raises:
        NotFound: no such incident, or its flow has no deployment.
        InvalidInput: the envelope holds no parameters to replay.
    """
    incident = ledger.incident(incident_id)
    envelope: dict[str, Any] = incident["envelope"]
    parameters = envelope.get("parameters")
    if not isinstance(parameters, dict):
        raise InvalidInput(f"incident {incident_id}: its envelope holds no flow parameters to replay")
    deployment_id = envelope.get("deployment_id") or client.flow_deployment_id(incident["flow"])
    tags = [f"replay:incident-{incident_id}"]
    if incident.get("release_id"):
        tags.append(f"release:{incident['release_id']}")
    if incident.get("trace_id"):
        tags.append(f"trace:{incident['trace_id']}")
    run = client.create_flow_run(
        deployment_id, parameters=parameters, idempotency_key=f"incident-{incident_id}", tags=tags
    )
    created = incident["status"] != "replayed"
    ledger.set_incident_status(incident_id, "replayed")
    return ReplayedIncident(
        incident_id=incident_id, flow=incident["flow"], deployment_id=str(deployment_id),
        flow_run_id=str(run["id"]), created=created,
    )


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "status": row["status"], "flow": row["flow"], "task": row["task"],
        "release_id": row["release_id"], "trace_id": row["trace_id"], "error": row["error"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
    }


def _fail(exc: Exception, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    else:
        console.print(f"[red]{type(exc).__name__}[/red]: {exc}", highlight=False)
    raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1)


@incidents_app.command("list")
def list_incidents(
    status: str = typer.Option(None, "--status", help="Only incidents in this status (open, replayed)."),
    as_json: bool = JsonOption,
) -> None:
    """List incidents, newest first."""
    rows = [_summary(r) for r in Ledger().incidents(status=status)]
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
        row = Ledger().incident(incident_id)
    except DeliveryError as exc:
        _fail(exc, as_json)
        return
    document = {**_summary(row), "envelope": row["envelope"]}
    if as_json:
        typer.echo(json.dumps(document))
    else:
        console.print_json(json.dumps(document))


@incidents_app.command("replay")
def replay(incident_id: int, api_url: str = ApiOption, as_json: bool = JsonOption) -> None:
    """Run again, through the Prefect API, what an incident preserved."""
    try:
        with DeliveryClient(api_url) as client:
            result = replay_incident(client, Ledger(), incident_id)
    except DeliveryError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(result.model_dump_json())
    else:
        console.print(f"incident {incident_id} replayed as flow run {result.flow_run_id} ({result.flow})")
