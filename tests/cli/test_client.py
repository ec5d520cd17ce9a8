"""The REST client and `delivery release ...` against the real Prefect server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime

import httpx
import pytest
from prefect import flow, tags
from support.governance import PLANNER, new_request, succeeded_build
from typer.testing import CliRunner

from cli.client import DeliveryClient
from cli.main import app
from delivery.config import EnvironmentConfig
from delivery.errors import InvalidInput
from delivery.events import release_events_link
from delivery.models import BuildResult, ReleaseRequest, release_run_name
from delivery.plan import PlanState, ReleasePlan
from tasks.approval import request_approval
from tasks.plan import plan_release

runner = CliRunner()

PROD = EnvironmentConfig.model_validate({
    "namespace": "app-prod", "runtime": "kubernetes-runtime/local",
    "approval": {"required": True, "approvers": ["user:alice", "user:bob"], "min_approvers": 1},
})


@flow(name="cli-approval-under-test")
def _plan_and_approve(request: ReleaseRequest, build: BuildResult, settings: EnvironmentConfig) -> ReleasePlan:
    return request_approval(plan_release(request, build, "prod", settings.strategy), settings)


@pytest.fixture(scope="module")
def release_deployment(prefect_server) -> str:
    """The real release flow registered as a deployment (nobody runs it: runs stay Scheduled)."""
    from flows.release import release

    name = f"release-cli-{uuid.uuid4().hex[:6]}"
    release.to_deployment(name=name, enforce_parameter_schema=True).apply()
    return f"release/{name}"


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_start_is_idempotent_on_release_id_and_revision(prefect_server, release_deployment) -> None:
    request = new_request()
    with DeliveryClient(prefect_server) as client:
        first = client.start_release(request, deployment=release_deployment)
        again = client.start_release(request.model_dump(mode="json"), deployment=release_deployment)
        revised = client.start_release(request.model_copy(update={"revision": 2}), deployment=release_deployment)
        run = client.flow_run(first.flow_run_id)
        revised_run = client.flow_run(revised.flow_run_id)
        ui = client.ui_url()
    assert first.created and not again.created
    assert again.flow_run_id == first.flow_run_id and revised.flow_run_id != first.flow_run_id
    assert (first.release_id, first.trace_id) == (request.release_id, request.trace_id)
    assert {f"release:{request.release_id}", f"trace:{request.trace_id}"} <= set(run["tags"])
    assert run["parameters"]["request"]["requested_by"] == PLANNER
    # Named at creation (the run is Scheduled: no flow code ran to rename it), the revision in the name.
    assert run["state"]["type"] == "SCHEDULED" and run["name"] == release_run_name(request.release_id)
    assert revised_run["name"] == release_run_name(request.release_id, 2) == f"{request.release_id}-r2"
    assert first.flow_run_name == run["name"]
    # The Event feed filtered to the release, and the run's page, both in the Prefect UI the client talks to.
    assert ui and first.events_url == release_events_link(request.release_id, ui)
    assert first.events_url.startswith(ui) and request.release_id in first.events_url
    assert first.run_url == f"{ui}/v2/runs/flow-run/{first.flow_run_id}"


def test_cli_start_prints_the_trace_id_and_the_events_link(prefect_server, release_deployment, tmp_path) -> None:
    source = tmp_path / "config.txt"
    source.write_text("greeting=hello\n")
    release_id = f"rel-cli-{uuid.uuid4().hex[:8]}"
    result = _cli("release", "start", "--app", "sample-app", "--artifact", f"{source}:app/config.txt",
                  "--as", PLANNER, "--release-id", release_id, "--deployment", release_deployment,
                  "--api-url", prefect_server)
    assert result.exit_code == 0, result.output
    with DeliveryClient(prefect_server) as client:
        [run] = client.release_runs(release_id)
        events_url = client.events_url(release_id)
    [trace_tag] = [tag for tag in run["tags"] if tag.startswith("trace:")]
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert f"release {release_id} (revision 1) started" in lines
    assert f"trace id: {trace_tag.removeprefix('trace:')}" in lines
    assert f"events: {events_url}" in lines and events_url


def test_cli_start_prints_the_ids_as_json(prefect_server, release_deployment, tmp_path) -> None:
    source = tmp_path / "config.txt"
    source.write_text("greeting=hi\n")
    result = _cli("release", "start", "--app", "sample-app", "--artifact", f"{source}:app/config.txt",
                  "--as", PLANNER, "--target", "staging", "--strategy", "canary", "--deployment", release_deployment,
                  "--api-url", prefect_server, "--json")
    assert result.exit_code == 0, result.output
    started = json.loads(result.output)
    assert started["created"] is True and started["release_id"].startswith("rel-")
    with DeliveryClient(prefect_server) as client:
        sent = client.flow_run(started["flow_run_id"])["parameters"]["request"]
    assert sent["target_environment"] == "staging" and sent["strategy"]["name"] == "canary"
    assert sent["artifacts"][0]["path"] == "app/config.txt"


@pytest.mark.parametrize(
    ("change", "field", "schema_refuses"),
    [
        ({"strategy": {"name": "big_bang"}}, "strategy", True),
        # "exactly one of artifacts or source.ref" is beyond the schema: the server creates the run and
        # the flow refuses it with that sentence as its state message (tests/flows/test_release_form.py)
        ({"artifacts": []}, "artifacts, source.ref: give exactly one of artifacts or source.ref", False),
        ({"app": "Not An App"}, "app", True),
    ],
)
def test_bad_parameters_are_refused_by_client_and_server(prefect_server, release_deployment, change, field,
                                                         schema_refuses) -> None:
    body = {**new_request().model_dump(mode="json"), **change}
    with DeliveryClient(prefect_server) as client:
        with pytest.raises(InvalidInput, match=f"invalid release request: {field}"):
            client.start_release(body, deployment=release_deployment)
        deployment_id = client.deployment_id(release_deployment)
    if not schema_refuses:
        return
    # an API caller skipping the client is refused by the server's parameter schema: no run is created
    with httpx.Client(base_url=prefect_server + "/") as http:
        response = http.post(f"deployments/{deployment_id}/create_flow_run", json={"parameters": {"request": body}})
        assert response.status_code in (409, 422), response.text
        runs = http.post("flow_runs/filter", json={"flow_runs": {"tags": {"all_": [f"release:{body['release_id']}"]}}})
        assert runs.json() == []


def test_cli_bad_request_exits_2_with_the_field(prefect_server, release_deployment) -> None:
    result = _cli("release", "start", "--app", "sample-app", "--as", PLANNER, "--deployment", release_deployment,
                  "--api-url", prefect_server, "--json")
    assert result.exit_code == 2
    assert "artifacts, source.ref: give exactly one of artifacts or source.ref (neither was given)" in json.loads(
        result.output)["error"]


def test_cli_approve_refused_planner_then_allowed_approver_and_status(prefect_server, ledger) -> None:
    request = new_request()
    outcome: dict[str, ReleasePlan] = {}

    def run() -> None:
        with tags(f"release:{request.release_id}", "environment:prod"):
            outcome["plan"] = _plan_and_approve(request, succeeded_build(), PROD)

    thread = threading.Thread(target=run)
    thread.start()
    rid = request.release_id
    refused = _cli("release", "approve", rid, "--as", PLANNER, "--wait", "60", "--api-url", prefect_server, "--json")
    assert refused.exit_code == 1, refused.output  # refused by the resume call itself, the field and value named
    error = json.loads(refused.output)
    assert error["type"] == "ApprovalRefused"
    assert "prod: REJECT: Reason: Validation failed for field 'approver'" in error["error"]
    assert f"'{PLANNER}' is not one of ['user:alice', 'user:bob']" in error["error"]

    with DeliveryClient(prefect_server) as client:
        first = client.wait_for_pause(rid, environment="prod", timeout=60)
        # input failing the form's schema is REJECTed with a 200: the client reads the status
        rejected = client.resume(first.flow_run_id, {"decision": "approve"})
        assert rejected.status == "REJECT" and "approver" in rejected.reason
        # nothing reached the flow; the client audits the planner's refused decision, the raw resume is the server's
        [refused_planner] = ledger.approvals(f"{rid}/r1/prod")
        assert (refused_planner.approver, refused_planner.counted) == (PLANNER, False)
        assert refused_planner.refused_reason.startswith("refused by the resume call: ")
        assert f"'{PLANNER}' is not one of" in refused_planner.refused_reason
        status = json.loads(_cli("release", "status", rid, "--api-url", prefect_server, "--json").output)
        assert status["waiting_for_approval"] == ["prod"]
        assert status["plans"][0]["state"] == "PendingApproval"
        # status lists the refused decision with its reason, in JSON and in the text a person reads
        [shown] = status["plans"][0]["refused"]
        assert (shown["approver"], shown["decision"]) == (PLANNER, "approve")
        assert shown["reason"] == refused_planner.refused_reason
        text = _cli("release", "status", rid, "--api-url", prefect_server)
        assert text.exit_code == 0, text.output
        said = " ".join(text.output.split())  # the console wraps long lines at spaces
        assert f"prod: approve by {PLANNER} refused: {' '.join(refused_planner.refused_reason.split())}" in said, said

    approved = _cli("release", "approve", rid, "--as", "user:alice", "-e", "prod", "--api-url", prefect_server)
    assert approved.exit_code == 0, approved.output
    assert "approve by user:alice in prod: counted" in approved.output
    thread.join(60)
    assert outcome["plan"].state is PlanState.APPROVED

    status = json.loads(_cli("release", "status", rid, "--api-url", prefect_server, "--json").output)
    assert status["plans"] == [{**status["plans"][0], "environment": "prod", "state": "Approved",
                                "approvers": ["user:alice"], "planned_by": PLANNER, "attempt": 1}]
    assert status["plans"][0]["actor"] == "user:alice" and status["plans"][0]["reason"]
    assert [(r["approver"], r["reason"]) for r in status["plans"][0]["refused"]] == [
        (PLANNER, refused_planner.refused_reason)]
    assert status["waiting_for_approval"] == []
    nothing = _cli("release", "reject", rid, "--as", "user:bob", "--api-url", prefect_server, "--json")
    assert nothing.exit_code == 1 and json.loads(nothing.output)["type"] == "NotFound"

    # the trace: events reach the API a moment after they are emitted, so poll with a deadline
    deadline = time.monotonic() + 30
    while True:
        traced = _cli("release", "trace", rid, "--api-url", prefect_server, "--json")
        assert traced.exit_code == 0, traced.output
        timeline = json.loads(traced.output)["entries"]
        names = [(e["summary"], e["environment"]) for e in timeline if e["source"] == "events"]
        if ("delivery.ReleaseApproved", "prod") in names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert names == [("delivery.ReleasePlanned", "prod"), ("delivery.ApprovalRequested", "prod"),
                     ("delivery.ApprovalCounted", "prod"), ("delivery.ReleaseApproved", "prod")]
    # the ledger's decisions on the same timeline, with their actors and reasons
    decided = [(e["kind"], e["actor"]) for e in timeline if e["source"] == "ledger"]
    assert ("approval", "user:alice") in decided
    assert ("transition", "user:alice") in decided
    moments = [datetime.fromisoformat(e["at"]) for e in timeline]
    assert moments == sorted(moments)


def test_client_retries_503_and_429() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, json={"detail": "database is locked"})
        if len(calls) == 2:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"detail": "slow down"})
        return httpx.Response(200, json={"id": "dep-1"})

    with DeliveryClient("http://prefect.test/api", transport=httpx.MockTransport(handler), backoff=0.01) as client:
        assert client.deployment_id("release/release") == "dep-1"
    assert calls == ["/api/deployments/name/release/release"] * 3


def test_client_gives_up_after_its_retries() -> None:
    from delivery.errors import TransientError

    transport = httpx.MockTransport(lambda request: httpx.Response(503, json={"detail": "database is locked"}))
    with DeliveryClient("http://prefect.test/api", transport=transport, backoff=0.01, retries=2) as client:
        with pytest.raises(TransientError, match="HTTP 503: database is locked"):
            client.deployment_id()
