"""Stage 9 on a real Prefect server: policy gates, pauses, approvals given through the REST resume."""

from __future__ import annotations

import threading

import httpx
import pytest
from prefect import flow, tags
from support.governance import PLANNER, Approver, Step, new_request, succeeded_build

from cli.client import DeliveryClient
from delivery.config import EnvironmentConfig
from delivery.errors import ApprovalRefused
from delivery.models import BuildResult, Decision, ReleaseRequest
from delivery.plan import PlanState, ReleasePlan
from tasks.approval import POLICY_ACTOR, TIMEOUT_ACTOR, request_approval
from tasks.plan import plan_release

pytestmark = pytest.mark.usefixtures("prefect_server")

PROD = EnvironmentConfig.model_validate(
    {
        "namespace": "app-prod",
        "runtime": "kubernetes-runtime/local",
        "policies": {"tests-passed": "build.tests.failed == 0"},
        "approval": {"required": True, "approvers": ["user:alice", "user:bob", "agent:qa-bot"], "min_approvers": 2},
    }
)


@flow(name="plan-and-approve")
def plan_and_approve(
    request: ReleaseRequest, build: BuildResult, environment: str, settings: EnvironmentConfig
) -> ReleasePlan:
    plan = plan_release(request, build, environment, settings.strategy)
    return request_approval(plan, settings)


def _run(request: ReleaseRequest, settings: EnvironmentConfig, *, build: BuildResult | None = None) -> ReleasePlan:
    with tags(f"release:{request.release_id}", "environment:prod"):
        return plan_and_approve(request, build or succeeded_build(), "prod", settings)


def _states_of_runs(api_url: str, release_id: str) -> set[str]:
    with httpx.Client(base_url=api_url + "/") as http:
        runs = http.post("flow_runs/filter", json={"flow_runs": {"tags": {"all_": [f"release:{release_id}"]}}}).json()
        states: set[str] = set()
        for run in runs:
            history = http.get("flow_run_states/", params={"flow_run_id": run["id"]}).json()
            states |= {s["type"] for s in history}
        return states


def test_planner_outsider_and_repeat_are_refused_by_the_resume_call_until_two_distinct_approvers(
    prefect_server, ledger
) -> None:
    request = new_request()
    plan_id = f"{request.release_id}/r1/prod"
    approver = Approver(prefect_server, request.release_id, [
        Step(" Agent:Release-Manager", refused="Validation failed for field 'approver'"),
        Step("agent:release-manager", refused="'agent:release-manager' is not one of"),
        Step("user:mallory", refused="'user:mallory' is not one of ['agent:qa-bot', 'user:alice', 'user:bob']"),
        Step("user:alice", comment="looks good"),
        Step("user:alice", refused="'user:alice' is not one of ['agent:qa-bot', 'user:bob']"),
        Step("agent:qa-bot"),
    ]).start()
    plan = _run(request, PROD)
    approver.join()

    assert plan.state is PlanState.APPROVED
    # a resume the server refused never reached the flow: only the two decisions that counted are recorded
    audit = [(a.approver, a.counted) for a in ledger.approvals(plan_id)]
    assert audit == [("user:alice", True), ("agent:qa-bot", True)]
    history = [(t.from_state, t.to_state, t.actor) for t in ledger.transitions(plan_id)]
    assert history == [
        (PlanState.PLANNED, PlanState.PENDING_APPROVAL, PLANNER),
        (PlanState.PENDING_APPROVAL, PlanState.APPROVED, "agent:qa-bot"),
    ]
    assert "user:alice, agent:qa-bot" in ledger.transitions(plan_id)[-1].reason
    # the gates ran before asking and again once signed, each evaluation recorded
    evaluations = ledger.policy_evaluations(plan_id)
    assert [(e["policy"], e["passed"]) for e in evaluations] == [("tests-passed", True)] * 2
    assert evaluations[0]["detail"].startswith("before approval") and evaluations[1]["detail"].startswith("after")


def test_failing_policy_rejects_without_a_pause(prefect_server, ledger) -> None:
    request = new_request()
    plan = _run(request, PROD, build=succeeded_build(failed_tests=1))
    assert plan.state is PlanState.REJECTED
    plan_id = plan.plan_id
    last = ledger.transitions(plan_id)[-1]
    assert last.actor == POLICY_ACTOR and "tests-passed" in last.reason
    assert [(e["policy"], e["passed"]) for e in ledger.policy_evaluations(plan_id)] == [("tests-passed", False)]
    assert ledger.approvals(plan_id) == []
    states = _states_of_runs(prefect_server, request.release_id)
    assert "COMPLETED" in states and "PAUSED" not in states


def test_approval_timeout_rejects_and_the_run_completes(prefect_server, ledger) -> None:
    settings = PROD.model_copy(update={"approval": PROD.approval.model_copy(update={"timeout_seconds": 3})})
    request = new_request()
    plan = _run(request, settings)
    assert plan.state is PlanState.REJECTED
    last = ledger.transitions(plan.plan_id)[-1]
    assert last.actor == TIMEOUT_ACTOR and "timed out after 3 s with 0 of 2" in last.reason
    states = _states_of_runs(prefect_server, request.release_id)
    assert "PAUSED" in states and "FAILED" not in states
    # a decision arriving after the window closed is refused, and audited
    with DeliveryClient(prefect_server) as client, pytest.raises(ApprovalRefused, match="too late"):
        client.approve(request.release_id, approver="user:alice", environment="prod")
    (late,) = ledger.approvals(plan.plan_id)
    assert (late.approver, late.counted) == ("user:alice", False) and late.refused_reason.startswith("too late")
    assert ledger.get_plan(plan.plan_id).state is PlanState.REJECTED


def test_rejection_then_resubmission_plans_a_new_revision(prefect_server, ledger) -> None:
    first = new_request()
    rejecter = Approver(prefect_server, first.release_id, [Step("user:bob", Decision.REJECT, comment="not today")])
    rejecter.start()
    rejected = _run(first, PROD)
    rejecter.join()
    assert rejected.state is PlanState.REJECTED
    assert ledger.transitions(rejected.plan_id)[-1].reason == "rejected by user:bob: not today"

    second = first.model_copy(update={"revision": 2})
    approver = Approver(prefect_server, first.release_id, [Step("user:alice"), Step("user:bob")]).start()
    approved = _run(second, PROD)
    approver.join()
    assert approved.state is PlanState.APPROVED and approved.revision == 2
    assert approved.plan_id == f"{first.release_id}/r2/prod"
    revised = ledger.get_plan(rejected.plan_id)
    assert revised.state is PlanState.PLANNED
    assert ledger.transitions(rejected.plan_id)[-1].reason == "revise and replan: superseded by revision 2"
    assert [p.revision for p in ledger.plans(release_id=first.release_id)] == [1, 2]


def test_no_approval_required_is_approved_by_the_gate(prefect_server, ledger) -> None:
    settings = PROD.model_copy(update={"approval": PROD.approval.model_copy(update={"required": False})})
    plan = _run(new_request(), settings)
    assert plan.state is PlanState.APPROVED
    assert ledger.transitions(plan.plan_id)[-1].actor == POLICY_ACTOR


def test_a_decision_sent_between_two_waits_gets_a_clear_answer_and_is_not_lost(prefect_server, ledger) -> None:
    request = new_request()
    outcome: dict[str, ReleasePlan] = {}
    thread = threading.Thread(target=lambda: outcome.update(plan=_run(request, PROD)), daemon=True)
    thread.start()
    with DeliveryClient(prefect_server) as client:
        paused = client.wait_for_pause(request.release_id, environment="prod", timeout=60)
        decision = {"decision": "approve", "comment": ""}
        assert client.resume(paused.flow_run_id, {**decision, "approver": "user:alice"}).accepted
        # the run is Running until the flow has judged alice's decision and waits again
        between = client.resume(paused.flow_run_id, {**decision, "approver": "user:bob"})
        assert between.status == "ABORT" and "not paused" in between.reason, between
        # what the CLI does with it: wait for the next wait and send it there
        (result,) = client.approve(request.release_id, approver="user:bob", environment="prod", wait=60)
        assert result.counted is True
    thread.join(60)
    assert outcome["plan"].state is PlanState.APPROVED
    assert [(a.approver, a.counted) for a in ledger.approvals(outcome["plan"].plan_id)] == [
        ("user:alice", True), ("user:bob", True)]
