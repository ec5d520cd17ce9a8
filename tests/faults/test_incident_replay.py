"""Incidents close the loop, on the shared fault stack (a real ``delivery up``: server, process workers).

Two releases of the sample app to prod, each in a lane of its own (its own app, work queue,
worker and failpoints file), run at once. Each meets an incident at every stage of its share, one
after the other: ``<stage>:transient`` is armed once more than the stage's retries, the release
run fails with an incident, the incident is replayed through the ``replay-incident`` deployment
(by the CLI, by ``DeliveryClient.run_operation``, or by the bare REST calls an agent makes) and
the same run continues from its stored stages to the next incident, and at last to a finished
release: every environment Deployed, the run Completed, nothing written twice that the replays do
not explain. The lanes' runs retry a stage once (``DELIVERY_STAGE_RETRIES=1`` in the run's
environment; the default is 3): the mechanism is the same, each exhaustion costs less.

- the build lane: stages 1-7 (commit to build);
- the promotion lane: stages 8, 9 (which runs in flow code), 10 and 13 (``sync_environment``: its
  rollback runs, the environment fails) in dev; 12 (``promote``) in staging, armed while the run is
  suspended for staging's approval; 13 (``check_health``) and 14 (``roll_back``) together in prod:
  the health gate gives up, the rollback it starts gives up too; the rollback's incident is
  replayed, the health gate's acknowledged.

Stage 11 (``provision_infrastructure``) is not reached on this stack: no environment of
``examples/gitops/delivery.yaml`` names an infrastructure stack, and provisioning one from a
worker's flow-run process needs the Pulumi CLI, which this machine does not have (the recording
backend of ``infra/testing.py`` replaces it inside one process only). Its transient fault is
retried in tests/faults/test_provider_faults.py, on an in-process stack.

Alongside: ``IncidentRaised`` reaches a webhook (an HTTP server in this test) through the
automation ``setup_drift_alerts`` creates; an agent reads the incidents and the release's status
with REST calls alone (artifacts ``delivery-incidents`` and ``release-<id>``); replays and the
acknowledgement are in the ledger with their actors; what no longer applies is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fault_support import (
    SETTLED,
    FaultStack,
    Lane,
    Release,
    api,
    delivered,
    outcome,
    release_request,
    wait_until,
)
from typer.testing import CliRunner

from cli.main import app
from delivery import failpoints
from delivery.errors import InvalidInput
from delivery.signing import sign_request
from delivery.stages import stage_named

LANE_RETRIES = 1
EXHAUST = LANE_RETRIES + 1  # armed this many times, a transient fault outlasts the stage's retries
ONCALL = "user:oncall"
AGENT = "agent:incident-bot"
ACK_COMMENT = "health gate flake, tracked"


@dataclass(frozen=True)
class Step:
    """Incidents to cause: the stages armed together, where they fire, and how the replay is asked."""

    stages: tuple[str, ...]
    replay_by: str  # "cli", "client" (run_operation) or "rest" (the bare calls an agent makes)
    environment: str | None = None  # the plan that fails (None: no plan fails: stages 1-9)
    arm_at_wait: str | None = None  # armed while the run waits for this environment's approval
    acknowledge: str | None = None  # this stage's incident is acknowledged (by the CLI), not replayed

    @property
    def replayed(self) -> str:
        return next(stage for stage in reversed(self.stages) if stage != self.acknowledge)


LANES: dict[str, tuple[Step, ...]] = {
    "incidents-build": (
        Step(("create_commit",), "cli"),
        Step(("open_pull_request",), "rest"),
        Step(("check_pull_request",), "cli"),
        Step(("merge_pull_request",), "rest"),
        Step(("generate_pipeline",), "cli"),
        Step(("run_pipeline",), "rest"),
        Step(("ingest_build_result",), "cli"),
    ),
    "incidents-promotion": (
        Step(("plan_release",), "client"),
        Step(("request_approval",), "rest"),
        Step(("render_manifest",), "client", environment="dev"),
        Step(("sync_environment",), "rest", environment="dev"),
        Step(("promote",), "client", environment="staging", arm_at_wait="staging"),
        Step(("check_health", "roll_back"), "client", environment="prod", arm_at_wait="prod",
             acknowledge="check_health"),
    ),
}
# Environments whose failure rolled the GitOps folder back: their next attempt commits its phases again.
ROLLED_BACK = {"dev", "prod"}
_CLI = threading.Lock()  # CliRunner swaps sys.stdout: one invocation at a time


# --------------------------------------------------------------------------- the alert webhook


class Webhook:
    """An HTTP server on 127.0.0.1 keeping the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    received.append(json.loads(body))
                except ValueError:
                    received.append({"unparsed": body.decode(errors="replace")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def incidents(self) -> set[int]:
        return {body["incident_id"] for body in self.received if body.get("alert") == "delivery.IncidentRaised"}

    def approvals_requested(self) -> list[dict[str, Any]]:
        return [body for body in self.received if body.get("alert") == "delivery.ApprovalRequested"]


@pytest.fixture
def webhook(fault_stack: FaultStack) -> Iterator[Webhook]:
    """The alert webhook wired to the stack through ``setup_drift_alerts``; unwired afterwards."""
    from prefect.automations import Automation

    from cli.drift import ALERT_AUTOMATION, setup_drift_alerts

    hook = Webhook()
    hook.thread.start()
    with fault_stack.info.prefect_settings():
        setup_drift_alerts(hook.url)
        try:
            yield hook
        finally:
            for name in (ALERT_AUTOMATION, "delivery-incident-raised", "delivery-approval-requested"):
                # nothing keeps calling a closed port
                try:
                    Automation.read(name=name).delete()
                except ValueError:
                    pass
            hook.server.shutdown()
            hook.server.server_close()


# --------------------------------------------------------------------------- acting and reading as people and agents


def start(lane: Lane) -> Release:
    """Start a release of the lane's app as ``Lane.start`` does, its run retrying a stage ``LANE_RETRIES`` times."""
    request = sign_request(release_request(lane.app))
    body = {
        "parameters": {"request": request.model_dump(mode="json")},
        "idempotency_key": f"{request.release_id}:{request.revision}",
        "name": request.release_id,
        "tags": [f"release:{request.release_id}", f"trace:{request.trace_id}"],
        "work_queue_name": lane.name,
        "job_variables": {"env": {failpoints.SETTING: str(lane.failpoints),
                                  "DELIVERY_STAGE_RETRIES": str(LANE_RETRIES)}},
    }
    with lane.stack.client() as client:
        deployment = client.deployment_id()
    run = api(lane.stack.info, "POST", f"/deployments/{deployment}/create_flow_run", json=body)
    run.raise_for_status()
    lane.note(f"started {request.release_id} (run {run.json()['id']})")
    return Release(stack=lane.stack, request=request, flow_run_id=str(run.json()["id"]),
                   approvals={"staging": ("user:alice",), "prod": ("user:alice", "user:bob")})


def cli(*args: str, api_url: str) -> tuple[int, dict[str, Any]]:
    with _CLI:
        result = CliRunner().invoke(app, ["incidents", *args, "--json", "--api-url", api_url])
    return result.exit_code, json.loads(result.stdout)


def replay(stack: FaultStack, incident_id: int, how: str) -> str:
    """Replay an incident through the ``replay-incident`` deployment the way ``how`` names; return the actor."""
    if how == "cli":
        code, body = cli("replay", str(incident_id), "--as", ONCALL, api_url=stack.info.api_url)
        assert code == 0 and body["state"] == "Completed" and body["incident_id"] == incident_id, body
        return ONCALL
    with stack.client() as client:
        if how == "client":
            client.run_operation("replay-incident/replay-incident", {"incident_id": incident_id,
                                                                     "requested_by": AGENT})
            return AGENT
        # what an agent sends without our client: the deployment by name, then create_flow_run
        deployment = api(stack.info, "GET", "/deployments/name/replay-incident/replay-incident").json()
        created = api(stack.info, "POST", f"/deployments/{deployment['id']}/create_flow_run",
                      json={"parameters": {"incident_id": incident_id, "requested_by": AGENT}})
        created.raise_for_status()
        final = client.wait_for_run(created.json()["id"], timeout=120, interval=0.25)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    return AGENT


def artifact(stack: FaultStack, key: str) -> dict[str, Any]:
    """The latest artifact of a key, over REST."""
    response = api(stack.info, "GET", f"/artifacts/{key}/latest")
    response.raise_for_status()
    return response.json()


def listed(stack: FaultStack) -> dict[int, dict[str, Any]]:
    """The incidents as the ``delivery-incidents`` artifact lists them, by id."""
    return {row["id"]: row for row in json.loads(artifact(stack, "delivery-incidents")["data"])}


def open_incidents(stack: FaultStack, release: Release) -> dict[str, dict[str, Any]]:
    """The release's open incidents by stage (at most one each, or the test fails)."""
    rows = [row for row in stack.ledger.incidents(status="open") if row["release_id"] == release.release_id]
    by_stage = Counter(row["task"] for row in rows)
    assert all(n == 1 for n in by_stage.values()), f"more than one open incident for a stage: {by_stage}"
    return {row["task"]: row for row in rows}


def plan_states(stack: FaultStack, release: Release) -> dict[str, str]:
    return {p.environment: p.state.value for p in stack.ledger.plans(release_id=release.release_id)}


def settled_or_waiting_in(release: Release, environment: str | None) -> Callable[[tuple[str, str]], bool]:
    def until(state: tuple[str, str]) -> bool:
        if state[0] in SETTLED:
            return True
        return environment is not None and state[0] == "PAUSED" and environment in release.waiting_in()

    return until


# --------------------------------------------------------------------------- one lane's walk


@dataclass
class Walk:
    """What one lane did: its release, the incidents replayed (id -> actor) and acknowledged, failures per env."""

    release: Release
    incidents: dict[str, int] = field(default_factory=dict)  # stage -> incident id
    replayed: dict[int, str] = field(default_factory=dict)
    acknowledged: dict[int, str] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)


def walk(lane: Lane, steps: tuple[Step, ...]) -> Walk:
    """Take one release through an incident at each step, replaying each, to its end."""
    stack = lane.stack

    def arm(step: Step) -> None:
        for stage in step.stages:
            lane.arm(*[f"{stage}:transient"] * EXHAUST)

    arm(steps[0])
    done = Walk(start(lane))
    release = done.release
    for index, step in enumerate(steps):
        state = release.follow(timeout=300, until=settled_or_waiting_in(release, step.arm_at_wait))
        if step.arm_at_wait is not None:
            assert state[0] == "PAUSED", f"{step.stages}: expected a wait in {step.arm_at_wait}, the run is {state}"
            arm(step)
            state = release.follow(timeout=300)
        assert state[0] == "FAILED", f"{step.stages}: the run ended {state} before the incident"
        lane.note(f"the run failed at {'+'.join(step.stages)}")
        assert not lane.armed(), f"{step.stages}: failpoints left: {lane.armed()}"

        incidents = open_incidents(stack, release)
        assert set(incidents) == set(step.stages), f"{step.stages}: incidents open: {sorted(incidents)}"
        done.incidents.update({stage: incident["id"] for stage, incident in incidents.items()})
        for stage, incident in incidents.items():
            assert incident["envelope"]["attempts"] == EXHAUST, (stage, incident["envelope"]["attempts"])
            assert incident["envelope"]["flow_run_id"] == release.flow_run_id
            assert f"failpoint {stage}:transient" in incident["error"]
        if step.environment is not None:
            done.failed[step.environment] += 1
            assert plan_states(stack, release)[step.environment] == "Failed"
        # an agent sees them over REST: the stage named, no traceback
        rows = listed(stack)
        for stage, incident in incidents.items():
            row = rows[incident["id"]]
            assert row["status"] == "open" and row["release_id"] == release.release_id, row
            assert row["stage"] == stage_named(stage).label and "Traceback" not in row["error"], row

        if index + 1 < len(steps) and steps[index + 1].arm_at_wait is None:
            arm(steps[index + 1])  # before the replay: the resumed run reaches it next
        target = incidents[step.replayed]["id"]
        done.replayed[target] = replay(stack, target, step.replay_by)
        lane.note(f"replayed incident {target} ({step.replayed}) by {step.replay_by}")
        if step.acknowledge:  # while the replayed run goes on
            owned = incidents[step.acknowledge]["id"]
            code, body = cli("ack", str(owned), "--as", ONCALL, "-m", ACK_COMMENT, api_url=stack.info.api_url)
            assert code == 0 and body["state"] == "Completed", body
            done.acknowledged[owned] = ONCALL

    final = release.follow(timeout=300)
    lane.note(f"the release ended {final}")
    return done


# --------------------------------------------------------------------------- the test


def test_an_incident_at_every_stage_replays_to_a_finished_release(fault_stack: FaultStack, webhook: Webhook) -> None:
    stack = fault_stack
    lanes = stack.lanes(dict.fromkeys(LANES))
    began = time.time()
    try:
        with ThreadPoolExecutor(max_workers=len(LANES)) as pool:
            futures = {name: pool.submit(walk, lanes[name], steps) for name, steps in LANES.items()}
            walks = {name: future.result(timeout=900) for name, future in futures.items()}
    finally:
        for lane in lanes.values():
            print(f"\n{lane.name}:\n" + "\n".join(f"{at - began:6.1f}s {text}" for at, text in lane.notes))
    for lane in lanes.values():
        assert lane.armed() == [], f"lane {lane.name}: failpoints that never fired: {lane.armed()}"

    every: dict[int, str] = {}
    for name, done in walks.items():
        release = done.release
        assert outcome(stack, release) == delivered(stack, release), name

        # the ledger: one `replayed` action per replay with its actor, the acknowledgement with its own
        actions = stack.ledger.actions(release_id=release.release_id)
        assert {a["detail"]["incident_id"]: a["actor"] for a in actions if a["action"] == "replayed"} == done.replayed
        acks = [a for a in actions if a["action"] == "acknowledged"]
        assert {a["detail"]["incident_id"]: a["actor"] for a in acks} == done.acknowledged
        assert all(ACK_COMMENT in a["reason"] for a in acks)
        statuses = {row["id"]: row["status"] for row in stack.ledger.incidents()
                    if row["release_id"] == release.release_id}
        assert statuses == {**dict.fromkeys(done.replayed, "replayed"), **dict.fromkeys(done.acknowledged,
                                                                                        "acknowledged")}
        every.update(statuses)

        # what an agent reads with REST alone agrees: the incidents, and the release's status
        rows = listed(stack)
        assert {i: rows[i]["status"] for i in statuses} == statuses
        status = artifact(stack, f"release-{release.release_id}")["data"]
        for actor, count in Counter(done.replayed.values()).items():
            assert status.count(f"| replayed | {actor} |") == count, status
        assert status.count(f"| acknowledged | {ONCALL} |") == len(done.acknowledged), status
        for environment in stack.namespaces():
            assert f"| {environment} | Deployed |" in status, status

    # every incident reached the alert webhook through the automation
    wait_until(lambda: webhook.incidents() >= set(every), timeout=60,
               what=f"webhook calls for {sorted(every)} (got {sorted(webhook.incidents())})")
    build = walks["incidents-build"]
    [first] = [body for body in webhook.received if body.get("incident_id") == build.incidents["create_commit"]]
    assert first["release_id"] == build.release.release_id and first["task"] == "create_commit"
    assert "failpoint create_commit:transient" in first["error"] and first["alert"] == "delivery.IncidentRaised"

    # every wait for a decision reached it too: who may decide, and a link to the waiting run
    waits = {(done.release.release_id, environment) for done in walks.values() for environment in ("staging", "prod")}
    wait_until(lambda: {(b["release_id"], b["environment"]) for b in webhook.approvals_requested()} >= waits,
               timeout=60, what=f"ApprovalRequested webhook calls for {sorted(waits)}")
    for body in webhook.approvals_requested():
        assert body["approvers"] and "agent:release-manager" not in body["approvers"], body
        assert body["signed"] is True and body["still_needed"] >= 1 and "/runs/flow-run/" in body["link"], body

    # what no longer applies is refused, and changes nothing
    before = stack.ledger.actions()
    replayed = build.incidents["create_commit"]
    code, body = cli("replay", str(replayed), "--as", ONCALL, api_url=stack.info.api_url)
    assert code == 2 and body["type"] == "InvalidInput" and "already replayed" in body["error"], body
    with stack.client() as client, pytest.raises(InvalidInput, match="was already replayed"):
        client.run_operation("acknowledge-incident/acknowledge-incident", {"incident_id": replayed,
                                                                           "requested_by": AGENT})
    assert stack.ledger.actions() == before

    # nothing written twice but what the replays explain: each further failed attempt of an
    # environment is one more Promoting -> Failed -> Promoting; an environment rolled back commits
    # its phases again on its next attempt
    written = {name: done.release.footprint() for name, done in walks.items()}
    unexplained = {name: (footprint.duplicates(), explained(footprint, walks[name].failed))
                   for name, footprint in written.items()
                   if footprint.duplicates() != explained(footprint, walks[name].failed)}
    assert not unexplained, f"written more often than the replays explain (found, explained): {unexplained}"


def explained(written: Any, failed: Counter[str]) -> dict[str, int]:
    """The repeated writes the replays account for, as ``Footprint.duplicates`` names them."""
    extra: dict[str, int] = {}
    for key in written.transitions:
        environment = key.split(":", 1)[0].rsplit("/", 1)[-1]
        if key.endswith(("Promoting -> Failed", "Failed -> Promoting")) and failed[environment] > 1:
            extra[f"transition {key}"] = failed[environment]
    for key in written.gitops_commits:
        environment = key.split("/", 1)[0]
        if environment in ROLLED_BACK and written.gitops_commits[key] > 1:
            extra[f"GitOps commit {key}"] = 2  # the attempt rolled back, then the one that deployed
    return extra
