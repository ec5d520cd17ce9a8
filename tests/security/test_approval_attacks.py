"""Self-approval and signature attacks through the raw REST resume the UI sends (issue 11, points 2, 3, 7).

A release waits for approval in an environment that counts signed decisions only. An attacker who
can reach the API sends ``POST /flow_runs/{id}/resume`` as the UI does: as the planner under case
and whitespace variants, unsigned, as the planner under a second identity registered to the same
key, with a forged key, with a signature made for another release, environment, revision or plan,
with a revoked key, and replaying a signature that counted. What the input schema can refuse is
answered ``REJECT`` by the resume call itself, naming the field and the value; what only the flow can
check is recorded as refused with its reason (ledger, ``<wait>-verdict``, a warning in the run's logs
and an ``ApprovalRefused`` event). Nothing of it counts: two honest signed approvals are still
needed; a key revoked after its approval counted does not undo that approval, and a key revoked
while the wait is open (``delivery identity revoke``'s library function) signs nothing more.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect import flow, tags
from support.governance import PLANNER, new_request, succeeded_build
from support.runtime import wait_until

from blocks.gitops_repo import GitOpsRepo
from cli.client import DeliveryClient
from cli.client_models import PausedRun
from delivery.config import EnvironmentConfig
from delivery.errors import ApprovalRefused
from delivery.identity import ALLOWED_SIGNERS, REVOKED_KEYS, Statement, generate_key, sign
from delivery.ledger import IDENTITY_REVOKED, Ledger
from delivery.models import BuildResult, Decision, ReleaseRequest
from delivery.plan import PlanState, ReleasePlan
from delivery.revocation import revoke_key
from delivery.settings import block_setting
from tasks.approval import request_approval
from tasks.plan import plan_release

APPROVERS = ["user:alice", "user:bob", "user:dave", "agent:qa-bot"]
PROD = EnvironmentConfig.model_validate({
    "namespace": "app-prod", "runtime": "kubernetes-runtime/local",
    "approval": {"required": True, "signed": True, "approvers": APPROVERS, "min_approvers": 2},
})


@flow(name="signed-approval-under-attack")
def plan_and_approve(request: ReleaseRequest, build: BuildResult, settings: EnvironmentConfig) -> ReleasePlan:
    return request_approval(plan_release(request, build, "prod", settings.strategy), settings)


@dataclass
class Identities:
    """Keys on disk and the GitOps repository that registers them."""

    keys: dict[str, Path]
    repo: GitOpsRepo
    ledger: Ledger

    def revoke(self, identity: str) -> None:
        """Revoke the one key of ``identity`` not revoked yet, as ``delivery identity revoke`` does."""
        done = revoke_key(self.repo, identity, actor="user:security-officer", reason=f"{identity}'s key leaked",
                          ledger=self.ledger)
        assert done.revoked, done


@pytest.fixture
def identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Identities:
    """The planner (whose key is also registered as user:dave), alice, bob (old key revoked), qa-bot, a stranger."""
    keys = {name: tmp_path / "keys" / name for name in
            ("planner", "alice", "bob-old", "bob", "qa-bot", "stranger")}
    (tmp_path / "keys").mkdir()
    lines = [generate_key(keys["planner"], identity=PLANNER),
             generate_key(keys["alice"], identity="user:alice"),
             generate_key(keys["bob-old"], identity="user:bob"),
             generate_key(keys["bob"], identity="user:bob"),
             generate_key(keys["qa-bot"], identity="agent:qa-bot")]
    generate_key(keys["stranger"], identity="user:alice")  # never registered
    lines.append(lines[0].replace(PLANNER, "user:dave"))  # the planner's own key, under a second identity
    repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    repo.ensure_exists(initial_files={
        "delivery.yaml": yaml.safe_dump({"path": ["prod"], "environments": {"prod": PROD.model_dump(mode="json")}})
        .encode(),
        ALLOWED_SIGNERS: ("\n".join(lines) + "\n").encode(),
        REVOKED_KEYS: keys["bob-old"].with_suffix(".pub").read_bytes(),
    })
    name = f"attacks-{uuid.uuid4().hex[:8]}"
    repo.save(name, overwrite=True)
    monkeypatch.setenv(block_setting("gitops_repo"), f"gitops-repo/{name}")
    return Identities(keys=keys, repo=repo, ledger=ledger)


class Attacker:
    """Raw REST, as the UI's Resume dialog sends it."""

    def __init__(self, api_url: str, release_id: str) -> None:
        self.http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30)
        self.client = DeliveryClient(api_url)
        self.release_id = release_id

    def call(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One REST call; a 5xx is sent again, as a person would click again.

        The test server's SQLite answers 500 ("database is locked") under load; the resume is one
        database transaction, so nothing of a call answered 5xx was stored.
        """
        for attempt in range(6):
            response = self.http.request(method, path, **options)
            if response.status_code < 500:
                return response
            time.sleep(0.2 * 2 ** attempt)
        response.raise_for_status()
        return response

    def waiting(self, after: PausedRun | None = None) -> PausedRun:
        return self.client.wait_for_pause(self.release_id, environment="prod", after=after, timeout=90)

    def input(self, run: PausedRun, suffix: str, *, state: str = "") -> Any:
        """A flow-run input of the wait; Prefect keys what it stores itself by state name (``paused-<key>-...``)."""
        response = self.call("GET", f"flow_runs/{run.flow_run_id}/input/{state}{run.pause_key}-{suffix}")
        response.raise_for_status()
        value = response.json()  # what was stored: our JSON text, or Prefect's plain description
        return json.loads(value) if isinstance(value, str) and value.startswith("{") else value

    def asked(self, run: PausedRun) -> dict[str, Any]:
        """The wait's ``-request`` input: the statement to sign."""
        return self.input(run, "request")

    def statement(self, run: PausedRun, signer: str, **changed: Any) -> Statement:
        asked = self.asked(run)
        fields = {"kind": "approval", "signer": signer, "release_id": asked["release_id"],
                  "revision": asked["revision"], "environment": asked["environment"],
                  "plan_digest": asked["plan_digest"], "decision": Decision.APPROVE,
                  "at": datetime.fromisoformat(asked["at"].replace("Z", "+00:00")), **changed}
        return Statement(**fields)

    def resume(self, run: PausedRun, approver: str, signature: str | None) -> tuple[str, str]:
        run_input = {"decision": "approve", "approver": approver, "comment": "",
                     **({"signature": signature} if signature is not None else {})}
        return self.resume_input(run, run_input)

    def resume_input(self, run: PausedRun, run_input: dict[str, Any]) -> tuple[str, str]:
        body = self.call("POST", f"flow_runs/{run.flow_run_id}/resume", json={"run_input": run_input}).json()
        return body["status"], (body.get("details") or {}).get("reason") or ""

    def verdict(self, run: PausedRun) -> dict[str, Any]:
        """The flow's verdict on the decision sent to ``run``'s wait (it pauses again with a new key after)."""
        self.waiting(after=run)
        return self.input(run, "verdict")

    def run_logs(self, run: PausedRun) -> list[dict[str, Any]]:
        """The waiting run's log lines, oldest first."""
        body = {"logs": {"flow_run_id": {"any_": [run.flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        return self.call("POST", "logs/filter", json=body).json()

    def run_events(self, run: PausedRun, name: str) -> list[dict[str, Any]]:
        """The waiting run's ``delivery.<name>`` events (related to the flow run), oldest first."""
        body = {"filter": {"event": {"name": [f"delivery.{name}"]},
                           "related": {"id": [f"prefect.flow-run.{run.flow_run_id}"]},
                           "occurred": {"since": "2000-01-01T00:00:00Z"}, "order": "ASC"}, "limit": 50}
        return self.call("POST", "events/filter", json=body).json()["events"]


def _signed(statement: Statement, key: Path) -> str:
    return sign(statement, key_path=key).render()


def test_attacks_through_raw_rest_never_count(prefect_server, ledger, identities: Identities) -> None:
    request = new_request()
    keys = identities.keys
    outcome: dict[str, ReleasePlan] = {}

    def release() -> None:
        with tags(f"release:{request.release_id}", "environment:prod"):
            outcome["plan"] = plan_and_approve(request, succeeded_build(), PROD)

    thread = threading.Thread(target=release, daemon=True)  # a failing test does not wait on a paused flow
    thread.start()
    attacker = Attacker(prefect_server, request.release_id)
    run = attacker.waiting()

    # refused by the resume call itself: the planner in any spelling, an outsider, an unsigned decision
    planner_signature = _signed(attacker.statement(run, PLANNER), keys["planner"])
    for spelling in (PLANNER, "Agent:Release-Manager", " agent:release-manager", "AGENT:RELEASE-MANAGER\t"):
        status, reason = attacker.resume(run, spelling, planner_signature)
        assert status == "REJECT", (spelling, reason)
        assert "Validation failed for field 'approver'" in reason and f"{spelling!r} is not one of" in reason
    status, reason = attacker.resume(run, "user:mallory", planner_signature)
    assert status == "REJECT" and "'user:mallory' is not one of" in reason
    status, reason = attacker.resume(run, "user:alice", None)
    assert status == "REJECT" and "signature" in reason

    # accepted by the resume call, refused by the flow with the reason
    attacks = [
        ("user:dave", _signed(attacker.statement(run, "user:dave"), keys["planner"]),
         "segregation of duties: the signing key"),
        ("user:alice", _signed(attacker.statement(run, "user:alice"), keys["stranger"]),
         "is not registered in identities/allowed_signers"),
        ("user:alice", _signed(attacker.statement(run, "user:alice", release_id="rel-earlier-one"), keys["alice"]),
         f"release_id rel-earlier-one (expected {request.release_id})"),
        ("user:alice", _signed(attacker.statement(run, "user:alice", plan_digest="sha256:" + "0" * 64),
                               keys["alice"]), "plan_digest sha256:000"),
        ("user:alice", _signed(attacker.statement(run, "user:alice", environment="staging"), keys["alice"]),
         "signed a different statement: environment staging (expected prod)"),
        ("user:alice", _signed(attacker.statement(run, "user:alice", revision=2), keys["alice"]),
         "signed a different statement: revision 2 (expected 1)"),
        ("user:alice", _signed(attacker.statement(run, "user:bob"), keys["bob"]),
         "signer user:bob (expected user:alice)"),
        ("user:bob", _signed(attacker.statement(run, "user:bob"), keys["bob-old"]), "was revoked"),
    ]
    for approver, signature, why in attacks:
        status, reason = attacker.resume(run, approver, signature)
        assert status == "ACCEPT", (approver, why, reason)
        verdict = attacker.verdict(run)
        assert verdict["counted"] is False and why in verdict["reason"], (why, verdict)
        assert verdict["still_needed"] == 2
        run = attacker.waiting(after=run)
        assert ledger.get_plan(f"{request.release_id}/r1/prod").state is PlanState.PENDING_APPROVAL

    # the wait asks again, saying in its form why the last decision was refused
    assert attacker.asked(run)["still_needed"] == 2
    form = attacker.input(run, "description", state="paused-")
    assert "Last refused: `user:bob`: signature refused: key SHA256:" in form, form

    # a bad signature is reported where the person looks: a warning in the waiting run's logs and an
    # ApprovalRefused event on it, with the reason
    bad_key = "signature refused: key SHA256:"
    logged = wait_until(lambda: [line["message"] for line in attacker.run_logs(run)
                                 if "user:alice's approve was refused: " + bad_key in line["message"]],
                        timeout=60, interval=0.5, what="the refusal's log line")
    assert "is not registered in identities/allowed_signers" in logged[0]
    refused_events = wait_until(lambda: [event["payload"] for event in attacker.run_events(run, "ApprovalRefused")
                                         if "was revoked" in (event["payload"].get("reason") or "")],
                                timeout=60, interval=0.5, what="the ApprovalRefused event")
    assert refused_events[0]["approver"] == "user:bob" and refused_events[0]["counted"] is False
    assert refused_events[0]["reason"].startswith(bad_key) and refused_events[0]["still_needed"] == 2

    # alice counts; her signed approval sent again (a replay) is refused at once: she already decided
    alice_signed = _signed(attacker.statement(run, "user:alice"), keys["alice"])
    status, _ = attacker.resume(run, "user:alice", alice_signed)
    assert status == "ACCEPT" and attacker.verdict(run)["counted"] is True
    run = attacker.waiting(after=run)
    status, reason = attacker.resume(run, "user:alice", alice_signed)
    assert status == "REJECT" and "Validation failed for field 'approver'" in reason
    assert "'user:alice' is not one of" in reason, reason

    # her key is revoked afterwards: what counted stays counted
    identities.revoke("user:alice")
    with DeliveryClient(prefect_server) as client, pytest.raises(ApprovalRefused, match="was revoked"):
        client.approve(request.release_id, approver="user:bob", environment="prod", key=keys["bob-old"])

    # bob's key, registered when this wait opened (he is offered in its form), is revoked while it is open:
    # his signed approval is refused by the flow, and the next wait no longer offers him
    run = attacker.waiting(after=run)
    assert "user:bob" in attacker.asked(run)["eligible"]
    identities.revoke("user:bob")
    with DeliveryClient(prefect_server) as client, pytest.raises(ApprovalRefused, match="was revoked"):
        client.approve(request.release_id, approver="user:bob", environment="prod", key=keys["bob"])
    run = attacker.waiting(after=run)
    status, reason = attacker.resume(run, "user:bob", _signed(attacker.statement(run, "user:bob"), keys["bob"]))
    assert status == "REJECT" and "'user:bob' is not one of" in reason, reason

    # another approver still counts
    with DeliveryClient(prefect_server) as client:
        results = client.approve(request.release_id, approver="agent:qa-bot", environment="prod", key=keys["qa-bot"])
    assert [r.counted for r in results] == [True]
    attacker.http.close()
    thread.join(60)

    plan = outcome["plan"]
    assert plan.state is PlanState.APPROVED
    audit = [(a.approver, a.counted, a.refused_reason) for a in ledger.approvals(plan.plan_id)]
    assert [(who, counted) for who, counted, _ in audit] == [
        ("user:dave", False), ("user:alice", False), ("user:alice", False), ("user:alice", False),
        ("user:alice", False), ("user:alice", False), ("user:alice", False), ("user:bob", False),
        ("user:alice", True), ("user:bob", False), ("user:bob", False), ("agent:qa-bot", True),
    ]
    during_wait = audit[-2][2] or ""
    assert during_wait.startswith("signature refused: key ") and "of user:bob was revoked" in during_wait, during_wait
    assert [row["detail"]["principals"] for row in ledger.actions(action=IDENTITY_REVOKED)] == [
        ["user:alice"], ["user:bob"]]
    assert all(reason for _, counted, reason in audit if not counted)
    counted = [a for a in ledger.approvals(plan.plan_id) if a.counted]
    assert all(a.key_fingerprint and a.signature_digest for a in counted)
    assert "approved by user:alice, agent:qa-bot" in ledger.last_transition(plan.plan_id).reason
