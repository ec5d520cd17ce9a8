"""Self-approval and signature attacks through the raw REST resume the UI sends (issue 11, points 2, 3, 7).

A release waits for approval in an environment that counts signed decisions only. An attacker who
can reach the API sends ``POST /flow_runs/{id}/resume`` as the UI does: as the planner under case
and whitespace variants, unsigned, as the planner under a second identity registered to the same
key, with a forged key, with a signature made for another release (a replay) or for another plan,
and with a revoked key. What the input schema can refuse is answered ``REJECT`` by the resume call
itself, naming the field and the value; what only the flow can check is recorded as refused with
its reason (ledger, ``<wait>-verdict``). Nothing of it counts: two honest signed approvals are still
needed, and a key revoked after its approval counted does not undo that approval.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from governance_support import PLANNER, new_request, succeeded_build
from prefect import flow, tags

from blocks.gitops_repo import GitOpsRepo
from cli.client import DeliveryClient
from cli.client_models import PausedRun
from delivery.config import EnvironmentConfig
from delivery.errors import ApprovalRefused
from delivery.identity import ALLOWED_SIGNERS, REVOKED_KEYS, Statement, generate_key, sign
from delivery.models import BuildResult, Decision, ReleaseRequest
from delivery.plan import PlanState, ReleasePlan
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

    def revoke(self, name: str) -> None:
        _, revoked = self.repo.read_identities()
        line = self.keys[name].with_suffix(".pub").read_text()
        self.repo.write_files({REVOKED_KEYS: (revoked + line).encode()}, message=f"Revoke {name}'s key", trailers=())


@pytest.fixture
def identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Identities:
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
    return Identities(keys=keys, repo=repo)


class Attacker:
    """Raw REST, as the UI's Resume dialog sends it."""

    def __init__(self, api_url: str, release_id: str) -> None:
        self.http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30)
        self.client = DeliveryClient(api_url)
        self.release_id = release_id

    def waiting(self, after: PausedRun | None = None) -> PausedRun:
        return self.client.wait_for_pause(self.release_id, environment="prod", after=after, timeout=90)

    def input(self, run: PausedRun, suffix: str, *, state: str = "") -> Any:
        """A flow-run input of the wait; Prefect keys what it stores itself by state name (``paused-<key>-...``)."""
        response = self.http.get(f"flow_runs/{run.flow_run_id}/input/{state}{run.pause_key}-{suffix}")
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
        body = self.http.post(f"flow_runs/{run.flow_run_id}/resume", json={"run_input": run_input}).json()
        return body["status"], (body.get("details") or {}).get("reason") or ""

    def verdict(self, run: PausedRun) -> dict[str, Any]:
        """The flow's verdict on the decision sent to ``run``'s wait (it pauses again with a new key after)."""
        self.waiting(after=run)
        return self.input(run, "verdict")


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

    # alice counts; her key is revoked afterwards: what counted stays counted, her key signs nothing more
    status, _ = attacker.resume(run, "user:alice", _signed(attacker.statement(run, "user:alice"), keys["alice"]))
    assert status == "ACCEPT" and attacker.verdict(run)["counted"] is True
    run = attacker.waiting(after=run)
    identities.revoke("alice")
    with DeliveryClient(prefect_server) as client, pytest.raises(ApprovalRefused, match="was revoked"):
        client.approve(request.release_id, approver="user:bob", environment="prod", key=keys["bob-old"])
    run = attacker.waiting(after=run)
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
        ("user:alice", False), ("user:bob", False), ("user:alice", True), ("user:bob", False), ("agent:qa-bot", True),
    ]
    assert all(reason for _, counted, reason in audit if not counted)
    counted = [a for a in ledger.approvals(plan.plan_id) if a.counted]
    assert all(a.key_fingerprint and a.signature_digest for a in counted)
    assert "approved by user:alice, agent:qa-bot" in ledger.last_transition(plan.plan_id).reason
