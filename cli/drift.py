"""``delivery drift check|status|alerts``, and the alert set-up the local stack calls.

``check`` runs the ``drift-check`` deployment through the Prefect API (like every flow the CLI
starts: a worker runs it, never this process), waits for it, then prints what the flow recorded
in the ledger. ``status`` only reads the ledger. :func:`setup_drift_alerts` saves a Webhook block
and creates (or updates) the automation that calls it on ``delivery.SyncDegraded``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from cli.automations import setup_approval_alerts, setup_incident_alerts, upsert_automation
from delivery.api_auth import prefect_client_settings
from delivery.errors import DeliveryError, InvalidInput
from delivery.events import EventName, event_type
from delivery.sync_state_store import SyncStateStore

DEPLOYMENT = "drift-check/drift-check"
ALERT_BLOCK = "delivery-drift-alerts"
ALERT_AUTOMATION = "delivery-sync-degraded"
ALERT_WEBHOOK_ENV = "DELIVERY_ALERT_WEBHOOK_URL"
# The webhook's body; the templating context is the triggering event.
ALERT_PAYLOAD = """{
  "alert": "{{ event.event }}",
  "environment": {{ event.resource.get('delivery.environment', '') | tojson }},
  "state": {{ event.payload.state | tojson }},
  "reason": {{ event.payload.reason | tojson }},
  "message": {{ event.payload.message | tojson }},
  "revision": {{ event.payload.revision | tojson }},
  "release_id": {{ event.resource.get('prefect.resource.name', '') | tojson }},
  "event_id": "{{ event.id }}",
  "occurred": "{{ event.occurred }}"
}"""

drift_app = typer.Typer(name="drift", help="Drift between Git and what runs.", no_args_is_help=True)


def setup_drift_alerts(
    webhook_url: str,
    *,
    headers: dict[str, str] | None = None,
    block_name: str = ALERT_BLOCK,
    automation_name: str = ALERT_AUTOMATION,
) -> UUID:
    """Make ``delivery.SyncDegraded`` (and ``IncidentRaised``, ``ApprovalRequested``) call a webhook, via automations.

    Idempotent: the Webhook block is overwritten and automations of the same names are updated.

    Args:
        webhook_url: where to POST the alert (kept as a secret in the block).
        headers: extra request headers (for example an authorization token), kept secret too.
        block_name: the Webhook block's name.
        automation_name: the automation's name.

    Returns:
        The drift automation's id.

    Raises:
        InvalidInput: the URL is not http(s).
    """
    from prefect.blocks.webhook import Webhook
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    if not webhook_url.startswith(("http://", "https://")):
        raise InvalidInput("webhook_url must be an http:// or https:// URL")
    block_id = Webhook(url=webhook_url, headers=headers or {}).save(block_name, overwrite=True)
    trigger = EventTrigger(
        expect={event_type(EventName.SYNC_DEGRADED)},
        match={"prefect.resource.id": "delivery.release.*"},
        posture=Posture.Reactive,
        threshold=1,
    )
    actions = [CallWebhook(block_document_id=block_id, payload=ALERT_PAYLOAD)]
    setup_incident_alerts(block_id)
    setup_approval_alerts(block_id)
    return upsert_automation(automation_name, trigger=trigger, actions=actions,
                             description="Calls the configured webhook when an environment's drift makes it Degraded.")


def setup_drift_alerts_from_env() -> UUID | None:
    """Set up the alert when ``DELIVERY_ALERT_WEBHOOK_URL`` is set (what ``delivery up`` calls).

    Returns:
        The automation's id, or None when no webhook is configured.
    """
    url = os.environ.get(ALERT_WEBHOOK_ENV, "").strip()
    return setup_drift_alerts(url) if url else None


def _store() -> SyncStateStore:
    """The found stack's sync states, read only (nothing is created when there is no ledger)."""
    from cli.stack_info import find_stack
    from delivery.ledger import Ledger

    return SyncStateStore(Ledger(find_stack().require_ledger(), create=False).engine)


def _client_settings() -> Any:
    """Prefect's client settings for the found stack's API and credential (StackNotFound when none)."""
    from cli.stack_info import find_stack

    target = find_stack()
    api_url = target.require_api()
    return prefect_client_settings(api_url, auth_string=target.auth_string(api_url))


def _print_reports(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("environment", "state", "reason", "drift", "message")
    for row in rows:
        status = row["report"].get("status") or {}
        drift = "\n".join(_describe(d) for d in row["report"].get("drift", [])) or "-"
        table.add_row(row["environment"], status.get("state", row["state"]), status.get("reason", ""), drift,
                      status.get("message", ""))
    console.print(table)


def _describe(item: dict[str, Any]) -> str:
    obj = item["object"]
    where = f"{obj['namespace']}/" if obj.get("namespace") else ""
    fields = f": {', '.join(item['fields'])}" if item.get("fields") else ""
    return f"{item['change']} {obj['kind']} {where}{obj['name']}{fields}"


@drift_app.command("check")
def check(
    env: str | None = typer.Option(None, "--env", help="Only this environment (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
    timeout: float = typer.Option(600, help="Seconds to wait for the run."),
    deployment: str = typer.Option(DEPLOYMENT, help="The drift-check deployment (flow/deployment)."),
) -> None:
    """Run a drift check now (through the Prefect API) and print what it found."""
    from prefect.deployments import run_deployment

    parameters = {"environment": env} if env else {}
    try:
        with _client_settings():  # the found stack's API and credential
            flow_run = run_deployment(deployment, parameters=parameters, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - the Prefect client raises many kinds; say what failed
        raise _fail(f"could not run {deployment}: {exc}", as_json) from None
    state = flow_run.state
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        raise _fail(f"drift check run {flow_run.name} ({flow_run.id}) ended {name}: "
                    f"{state.message if state else ''}", as_json)
    started: datetime | None = flow_run.start_time
    rows = _store().checks_since(started, environment=env) if started else []
    if as_json:
        typer.echo(json.dumps({"flow_run_id": str(flow_run.id), "reports": [r["report"] for r in rows]},
                              default=str))
        return
    _print_reports(Console(), rows)


@drift_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show each environment's sync state from the ledger (no check is run)."""
    try:
        states = _store().all()
    except DeliveryError as exc:
        raise _fail(str(exc), as_json) from None
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in states]))
        return
    table = Table("environment", "state", "reason", "since", "checked", "message")
    for s in states:
        table.add_row(s.environment, s.state.value, s.reason, f"{s.since:%Y-%m-%d %H:%M:%S}",
                      f"{s.checked_at:%Y-%m-%d %H:%M:%S}", s.message)
    Console().print(table)


@drift_app.command("alerts")
def alerts(
    webhook: str = typer.Option(..., "--webhook", help="URL to POST SyncDegraded alerts to."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create or update the automation that calls a webhook when an environment becomes Degraded."""
    try:
        with _client_settings():
            automation_id = setup_drift_alerts(webhook)
    except DeliveryError as exc:
        raise _fail(str(exc), as_json) from None
    typer.echo(json.dumps({"automation_id": str(automation_id)}) if as_json else f"automation {automation_id}")


def _fail(message: str, as_json: bool) -> typer.Exit:
    typer.echo(json.dumps({"error": message}) if as_json else f"error: {message}", err=True)
    return typer.Exit(code=1)


__all__ = ["drift_app", "setup_drift_alerts", "setup_drift_alerts_from_env"]
