"""Ledger histories for the environments overview: plans walked through the real state machine."""

from __future__ import annotations

from delivery.drift import DriftMode, DriftReport
from delivery.ledger import ROLLBACK_FINISHED, ROLLBACK_STARTED, Ledger
from delivery.models import Approval, BuildResult, BuildStatus, Decision, RollingStrategy
from delivery.plan import PlanState, ReleasePlan
from delivery.sync_state import next_status
from delivery.sync_state_store import SyncStateStore

PATH = ["dev", "staging", "prod"]
ACTOR = "system:promotion"


def new_plan(ledger: Ledger, release_id: str, environment: str, *, app: str = "shop",
             approvers: tuple[str, ...] = ()) -> ReleasePlan:
    """Plan a release in an environment and take it to Approved, with counted approvals."""
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit="a" * 40, run_id=f"run-{release_id}")
    plan = ReleasePlan(release_id=release_id, trace_id=f"trace-{release_id}".ljust(32, "0"), app=app, revision=1,
                       environment=environment, strategy=RollingStrategy(), planned_by="agent:planner", build=build)
    ledger.save_plan(plan)
    plan = move(ledger, plan, PlanState.PENDING_APPROVAL, "submit for approval")
    for approver in approvers:
        approval = Approval(approver=approver, decision=Decision.APPROVE)
        ledger.record_approval(plan.plan_id, approval)
        plan = plan.with_approval(approval)
    # a refused decision is in the ledger too, and never shows as an approver
    refused = Approval(approver="agent:planner", decision=Decision.APPROVE, counted=False, refused_reason="planner")
    ledger.record_approval(plan.plan_id, refused)
    plan = plan.with_approval(refused)
    return move(ledger, plan, PlanState.APPROVED, "approved")


def move(ledger: Ledger, plan: ReleasePlan, to: PlanState, reason: str) -> ReleasePlan:
    """One transition, saved with its record."""
    moved, record = plan.transition(to, actor=ACTOR, reason=reason)
    return ledger.save_plan(moved, record)


def deploy(ledger: Ledger, release_id: str, environment: str, **options) -> ReleasePlan:
    """A release planned, approved, promoted and Deployed in an environment."""
    plan = move(ledger, new_plan(ledger, release_id, environment, **options), PlanState.PROMOTING, "begin promotion")
    return move(ledger, plan, PlanState.DEPLOYED, "health gates passed")


def fail(ledger: Ledger, release_id: str, environment: str, *, rolled_back: bool = True,
         finished: bool = True, **options) -> ReleasePlan:
    """A release that failed its health gates, with its rollback started (and finished) as the promotion writes it."""
    plan = move(ledger, new_plan(ledger, release_id, environment, **options), PlanState.PROMOTING, "begin promotion")
    plan = move(ledger, plan, PlanState.FAILED, "HealthCheckFailed: shop not ready; rolling back")
    detail = {"plan_id": plan.plan_id, "environment": environment, "attempt": plan.attempt}
    if rolled_back:
        ledger.record_action(release_id, action=ROLLBACK_STARTED, actor=ACTOR, reason="rolling back",
                             detail={**detail, "failed_revision": "f" * 40, "error": "not ready"})
    if rolled_back and finished:
        ledger.record_action(release_id, action=ROLLBACK_FINISHED, actor=ACTOR, reason="rolled back",
                             detail={**detail, "git_revision": "b" * 40})
    return plan


def drift_check(ledger: Ledger, environment: str, *, found: int, degraded_after: int = 3) -> None:
    """Record a drift check's outcome the way the drift flow does (next_status, then the store)."""
    store = SyncStateStore(ledger.engine)
    status, _ = next_status(store.get(environment), environment=environment, revision="c" * 40, found=found,
                            remaining=found, degraded_after=degraded_after)
    report = DriftReport(environment=environment, revision="c" * 40, mode=DriftMode.DETECT, desired_objects=2,
                         live_objects=2, status=status)
    store.record(report, status)
