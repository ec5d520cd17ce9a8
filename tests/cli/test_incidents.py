"""Incidents: exhausted retries keep the full envelope; replay starts the same work again."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prefect import flow
from typer.testing import CliRunner

from delivery.cli.main import app
from delivery.errors import PolicyViolation, TransientError
from delivery.models import Artifact, ReleaseRequest
from tasks.stage import DEFAULT_RETRIES, stage

runner = CliRunner()


@stage("push_somewhere")
def push_somewhere(request: ReleaseRequest, *, fail_with: str) -> str:
    if fail_with == "transient":
        raise TransientError("the remote answered 503")
    raise PolicyViolation("the policy says no")


@flow(name="incident-probe")
def incident_probe(request: ReleaseRequest, fail_with: str = "transient") -> str:
    return push_somewhere(request, fail_with=fail_with)


def _request(release_id: str) -> ReleaseRequest:
    return ReleaseRequest(
        release_id=release_id, app="sample-app", requested_by="agent:release-manager",
        artifacts=[Artifact.from_text("a-1", "notes.txt", "hello\n")],
    )


def _cli(*args: str) -> tuple[int, object]:
    result = runner.invoke(app, list(args))
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def _trace_events(api_url: str, trace_id: str, name: str, *, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    body = {"filter": {"related": {"id": [f"delivery.trace.{trace_id}"]}, "event": {"name": [name]},
                       "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
    while True:
        response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
        events = response.json().get("events", []) if response.status_code == 200 else []
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_exhausted_retries_record_an_incident_that_replays(prefect_server, ledger) -> None:
    request = _request("rel-incident-1")
    with pytest.raises(TransientError):
        incident_probe(request)

    [incident] = ledger.incidents()
    envelope = incident["envelope"]
    assert incident["flow"] == "incident-probe" and incident["task"] == "push_somewhere"
    assert incident["release_id"] == request.release_id and incident["trace_id"] == request.trace_id
    assert envelope["attempts"] == DEFAULT_RETRIES + 1
    assert envelope["parameters"]["request"]["release_id"] == request.release_id
    assert envelope["parameters"]["fail_with"] == "transient"
    assert "TransientError: the remote answered 503" in envelope["traceback"]
    raised = _trace_events(prefect_server, request.trace_id, "delivery.IncidentRaised")
    assert raised and raised[0]["payload"]["incident_id"] == incident["id"]

    code, listed = _cli("incidents", "list", "--json")
    assert code == 0 and [row["id"] for row in listed] == [incident["id"]]

    deployment_id = str(incident_probe.to_deployment(name="probe").apply())
    code, replayed = _cli("incidents", "replay", str(incident["id"]), "--json", "--api-url", prefect_server)
    assert code == 0, replayed
    assert replayed["deployment_id"] == deployment_id and replayed["created"] is True
    run = httpx.get(f"{prefect_server}/flow_runs/{replayed['flow_run_id']}", timeout=10).json()
    assert run["parameters"] == envelope["parameters"]
    assert f"replay:incident-{incident['id']}" in run["tags"] and f"trace:{request.trace_id}" in run["tags"]
    assert ledger.incident(incident["id"])["status"] == "replayed"

    code, again = _cli("incidents", "replay", str(incident["id"]), "--json", "--api-url", prefect_server)
    assert code == 0 and again["flow_run_id"] == replayed["flow_run_id"] and again["created"] is False


def test_a_permanent_failure_is_an_outcome_not_an_incident(prefect_server, ledger) -> None:
    with pytest.raises(PolicyViolation):
        incident_probe(_request("rel-incident-2"), fail_with="permanent")
    assert ledger.incidents() == []


def test_unknown_incident_is_a_clear_error(ledger) -> None:
    code, body = _cli("incidents", "show", "999", "--json")
    assert code == 1 and body == {"error": "no incident 999 in the ledger", "type": "NotFound"}
