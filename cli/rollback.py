"""``delivery rollback ENV APP``: return an environment to its last healthy revision, through the Prefect API.

It starts the ``roll_back`` flow's deployment (``flows/rollback.py:roll_back_environment``) with a
``RollbackRequest`` and, unless ``--no-wait``, waits for the run to finish. ``--json`` prints one
JSON document for agents; errors exit 2 for bad input, 1 otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

import typer
from rich.console import Console

from cli.client import DeliveryClient
from cli.errors_out import fail
from delivery.errors import DeliveryError, InvalidInput
from delivery.ids import new_release_id, new_trace_id, release_tags

DEFAULT_ROLLBACK_DEPLOYMENT = "roll_back/roll-back"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
console = Console()


def start_rollback(
    client: DeliveryClient,
    *,
    environment: str,
    app: str,
    requested_by: str,
    reason: str = "on-demand rollback",
    deployment: str = DEFAULT_ROLLBACK_DEPLOYMENT,
    wait: bool = True,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Start the rollback flow run (and wait for it).

    Args:
        client: the Prefect API client.
        environment: the environment to roll back.
        app: the application.
        requested_by: who asks, e.g. ``user:alice``.
        reason: why, recorded in the GitOps commit and the event.
        deployment: the rollback deployment, ``<flow>/<deployment>``.
        wait: wait for the run's final state.
        timeout: how long to wait, in seconds.

    Returns:
        ``flow_run_id``, ``release_id``, ``trace_id``, ``state`` and, when waited, ``message``.

    Raises:
        InvalidInput: a bad environment, app or identity.
        NotFound: the deployment does not exist.
    """
    for field, value in (("environment", environment), ("app", app)):
        if not _NAME.match(value or ""):
            raise InvalidInput(f"{field} {value!r} is not a valid name (lowercase letters, digits, '-')")
    if not requested_by.strip():
        raise InvalidInput("requested_by must name an identity, e.g. user:alice")
    release_id = new_release_id().replace("rel-", "rollback-", 1)
    trace_id = new_trace_id()
    request = {"environment": environment, "app": app, "requested_by": requested_by.strip(), "reason": reason,
               "release_id": release_id, "trace_id": trace_id}
    deployment_id = client.deployment_id(deployment)
    run = client.request("POST", f"/deployments/{deployment_id}/create_flow_run", json={
        "parameters": {"request": request}, "name": release_id,
        "tags": [*release_tags(release_id, trace_id), "rollback", f"environment:{environment}"],
    }).json()
    out = {"flow_run_id": str(run["id"]), "release_id": release_id, "trace_id": trace_id,
           "state": (run.get("state") or {}).get("type", "SCHEDULED")}
    if wait:
        final = client.wait_for_run(out["flow_run_id"], timeout=timeout)
        state = final.get("state") or {}
        out.update(state=state.get("type"), message=state.get("message") or "")
    return out


def rollback_command(
    environment: str = typer.Argument(..., help="The environment, e.g. staging"),
    app: str = typer.Argument(..., help="The application, e.g. sample-app"),
    requested_by: str = typer.Option(..., "--by", help="Who asks, e.g. user:alice"),
    reason: str = typer.Option("on-demand rollback", "--reason", help="Why; recorded in Git and the event"),
    deployment: str = typer.Option(DEFAULT_ROLLBACK_DEPLOYMENT, "--deployment", help="<flow>/<deployment>"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the rollback to finish"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for agents)."),
    api_url: str | None = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="The Prefect API (…/api)."),
) -> None:
    """Roll an environment back to its last healthy revision (tag healthy/<env>/<app>)."""
    try:
        with DeliveryClient(api_url) as client:
            result = start_rollback(client, environment=environment, app=app, requested_by=requested_by,
                                    reason=reason, deployment=deployment, wait=wait, timeout=timeout)
    except DeliveryError as exc:
        raise fail(exc, as_json=as_json, console=console) from None
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(f"rollback {result['release_id']} of {app} in {environment}: {result['state']} "
                      f"(flow run {result['flow_run_id']}) {result.get('message', '')}", highlight=False)
    if result["state"] not in ("COMPLETED", "SCHEDULED", "PENDING", "RUNNING"):
        raise typer.Exit(1)
