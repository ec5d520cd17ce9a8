"""Incidents: exhausted retries keep the full envelope, published for agents; acknowledgements are audited.

Replay of every stage to a finished release is proven on a real stack in tests/faults/test_incident_replay.py.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prefect import flow
from typer.testing import CliRunner

from cli.main import app
from delivery.errors import InvalidInput, NotFound, PolicyViolation, TransientError
from delivery.models import Artifact, ReleaseRequest
from tasks.stage import DEFAULT_RETRIES, stage

runner = CliRunner()


@stage("create_commit")  # a registered stage: the probe stands in for stage 1
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


def _incidents_artifact(api_url: str, *, timeout: float = 30) -> list[dict]:
    """The rows of the ``delivery-incidents`` artifact, read as an agent reads them (REST only)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{api_url}/artifacts/delivery-incidents/latest", timeout=10)
        if response.status_code == 200:
            return json.loads(response.json()["data"])
        if time.monotonic() > deadline:
            raise AssertionError(f"no delivery-incidents artifact: {response.status_code} {response.text[:200]}")
        time.sleep(0.25)


def test_exhausted_retries_record_an_incident_an_agent_reads_over_rest(prefect_server, ledger) -> None:
    request = _request("rel-incident-1")
    with pytest.raises(TransientError):
        incident_probe(request)

    [incident] = ledger.incidents()
    envelope = incident["envelope"]
    assert incident["flow"] == "incident-probe" and incident["task"] == "create_commit"
    assert incident["release_id"] == request.release_id and incident["trace_id"] == request.trace_id
    assert envelope["attempts"] == DEFAULT_RETRIES + 1
    assert envelope["parameters"]["request"]["release_id"] == request.release_id
    assert envelope["parameters"]["fail_with"] == "transient"
    assert "TransientError: the remote answered 503" in envelope["traceback"]
    raised = _trace_events(prefect_server, request.trace_id, "delivery.IncidentRaised")
    assert raised and raised[0]["payload"]["incident_id"] == incident["id"]

    code, listed = _cli("incidents", "list", "--json")
    assert code == 0 and [row["id"] for row in listed] == [incident["id"]]

    [row] = [r for r in _incidents_artifact(prefect_server) if r["id"] == incident["id"]]
    assert row["status"] == "open" and row["release_id"] == request.release_id
    assert row["stage"] == "01-create_commit" and row["error"] == "TransientError: the remote answered 503"
    assert row["attempts"] == DEFAULT_RETRIES + 1 and row["raised_at"]
    assert "Traceback" not in json.dumps(row)


def test_acknowledge_is_audited_and_refused_twice(prefect_server, ledger) -> None:
    from flows.operations import acknowledge_incident, replay_incident

    request = _request("rel-incident-3")
    with pytest.raises(TransientError):
        incident_probe(request)
    [incident] = ledger.incidents()

    acknowledge_incident(incident["id"], "user:oncall", comment="the remote is being fixed")
    assert ledger.incident(incident["id"])["status"] == "acknowledged"
    [action] = ledger.actions(release_id=request.release_id, action="acknowledged")
    assert action["actor"] == "user:oncall" and action["detail"]["incident_id"] == incident["id"]
    assert "the remote is being fixed" in action["reason"]
    [row] = [r for r in _incidents_artifact(prefect_server) if r["id"] == incident["id"]]
    assert row["status"] == "acknowledged"

    with pytest.raises(InvalidInput, match=f"incident {incident['id']} was already acknowledged"):
        acknowledge_incident(incident["id"], "user:other")
    with pytest.raises(NotFound, match="no incident 999"):
        acknowledge_incident(999, "user:oncall")
    with pytest.raises(NotFound, match="no release run found"):  # the probe has no release run to resubmit
        replay_incident(incident["id"], "user:oncall")
    assert len(ledger.actions(release_id=request.release_id)) == 1


def test_replay_and_ack_need_an_identity_and_a_server_with_the_operations(prefect_server, ledger) -> None:
    for command in ("replay", "ack"):
        result = runner.invoke(app, ["incidents", command, "1", "--json", "--api-url", prefect_server],
                               env={"DELIVERY_IDENTITY": ""})
        assert result.exit_code == 2 and "--as" in json.loads(result.stdout)["error"]
    # the session's test server has no deployments: the operation is named in the refusal
    code, body = _cli("incidents", "replay", "1", "--as", "user:oncall", "--json", "--api-url", prefect_server)
    assert code == 1 and body["type"] == "NotFound", body


def test_a_permanent_failure_is_an_outcome_not_an_incident(prefect_server, ledger) -> None:
    with pytest.raises(PolicyViolation):
        incident_probe(_request("rel-incident-2"), fail_with="permanent")
    assert ledger.incidents() == []


def test_unknown_incident_is_a_clear_error(ledger) -> None:
    code, body = _cli("incidents", "show", "999", "--json")
    assert code == 1 and body == {"error": "no incident 999 in the ledger", "type": "NotFound"}


def test_stage_9_retries_a_transient_fault_in_flow_code_then_raises_an_incident(prefect_server, ledger,
                                                                               monkeypatch) -> None:
    import tasks.approval as approval
    from delivery.config import EnvironmentConfig
    from delivery.models import BuildResult, BuildStatus, RollingStrategy
    from delivery.plan import ReleasePlan

    request = _request("rel-incident-9")
    plan = ReleasePlan(release_id=request.release_id, trace_id=request.trace_id, app="sample-app", revision=1,
                       environment="dev", strategy=RollingStrategy(), planned_by=request.requested_by,
                       build=BuildResult(status=BuildStatus.SUCCEEDED, commit="a" * 40, run_id="run-1"))
    calls: list[int] = []

    def flaky(*_args: object) -> ReleasePlan:
        calls.append(1)
        if len(calls) <= DEFAULT_RETRIES:  # fails as many times as there are retries: the last attempt passes
            raise TransientError("the git host answered 503")
        return plan

    monkeypatch.setattr(approval, "_approve", flaky)
    monkeypatch.setattr(approval, "BACKOFF_FACTOR", 0.01)

    @flow(name="stage-9-probe")
    def probe(request: ReleaseRequest) -> ReleasePlan:
        return approval.request_approval(plan, EnvironmentConfig(namespace="sample-dev", runtime="x/y"))

    assert probe(request) == plan and len(calls) == DEFAULT_RETRIES + 1
    assert ledger.incidents() == []

    def down(*_args: object) -> ReleasePlan:
        calls.append(1)
        raise TransientError("the git host answered 503")

    calls.clear()
    monkeypatch.setattr(approval, "_approve", down)
    with pytest.raises(TransientError):
        probe(request)
    [incident] = ledger.incidents()
    assert len(calls) == DEFAULT_RETRIES + 1 and incident["task"] == "request_approval"
    assert incident["release_id"] == request.release_id and incident["envelope"]["attempts"] == DEFAULT_RETRIES + 1
    assert incident["error"] == "TransientError: the git host answered 503"
    [row] = [r for r in _incidents_artifact(prefect_server) if r["id"] == incident["id"]]
    assert row["stage"] == "09-request_approval" and row["status"] == "open"
