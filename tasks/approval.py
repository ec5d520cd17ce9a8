"""Stage 9: the policy gate and the approval of a plan by someone other than the planner.

Prefect pauses flows, not tasks, so :func:`request_approval` is called from inside a flow run (the
per-environment promotion subflow); the gate evaluation is a task of its own. Flow:

1. evaluate the environment's policy gates (each evaluation recorded in the ledger); a failing
   gate rejects the plan at once, nobody is asked;
2. when no approval is required the plan is approved by the gate;
3. otherwise pause with ``pause_flow_run(wait_for_input=ApprovalInput)`` and judge each decision
   (planner, outsider and repeated approver are refused and audited), pausing again until the
   minimum number of distinct approvers signed, someone allowed rejected, or the time ran out;
4. re-check the gates with the approvals (the clock moved), then Approved or Rejected, and
   ``ReleaseApproved`` / ``ReleaseRejected``.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from delivery.approvals import (
    POLICY_ACTOR,
    TIMEOUT_ACTOR,
    ApprovalInput,
    Outcome,
    counted_approvers,
    judge,
    outcome,
)
from delivery.config import EnvironmentConfig
from delivery.events import EventName, emit
from delivery.ledger import Ledger
from delivery.models import Approval
from delivery.plan import PlanState, ReleasePlan
from delivery.policy import PolicyResult, evaluate_policies, policy_context

POLL_INTERVAL_SECONDS = 2


@task(name="evaluate_policy_gates", cache_policy=NO_CACHE)
def evaluate_policy_gates(
    plan: ReleasePlan, policies: dict[str, str], *, phase: str, now: datetime | None = None
) -> list[PolicyResult]:
    """Evaluate an environment's policy gates on a plan and record every evaluation in the ledger.

    Args:
        plan: the plan (its build and counted approvals are visible to the expressions).
        policies: name -> CEL expression.
        phase: ``before approval`` or ``after approval``, recorded with each evaluation.
        now: the clock (default: now).

    Returns:
        One result per policy, in name order.
    """
    context = policy_context(plan=plan.model_dump(mode="json"), build=plan.build, approvals=plan.approvals, now=now)
    results = evaluate_policies(policies, context)
    ledger = Ledger()
    for result in results:
        ledger.record_policy_evaluation(
            plan.plan_id,
            policy=result.name,
            expression=result.expression,
            passed=result.passed,
            detail=f"{phase}: {result.detail}",
        )
    return results


def _move(ledger: Ledger, plan: ReleasePlan, to: PlanState, *, actor: str, reason: str) -> ReleasePlan:
    moved, record = plan.transition(to, actor=actor, reason=reason)
    return ledger.save_plan(moved, record)


def _decide(plan: ReleasePlan, to: PlanState, *, actor: str, reason: str) -> ReleasePlan:
    decided = _move(Ledger(), plan, to, actor=actor, reason=reason)
    name = EventName.RELEASE_APPROVED if to is PlanState.APPROVED else EventName.RELEASE_REJECTED
    emit(
        name,
        release_id=plan.release_id,
        trace_id=plan.trace_id,
        payload={
            "plan_id": plan.plan_id,
            "environment": plan.environment,
            "revision": plan.revision,
            "actor": actor,
            "reason": reason,
            "approvers": counted_approvers(decided.approvals),
        },
        resource={"delivery.environment": plan.environment},
    )
    return decided


def _gate(plan: ReleasePlan, policies: dict[str, str], *, phase: str) -> ReleasePlan | None:
    """Run the gates; return the rejected plan when one failed, else None."""
    if not policies:
        return None
    failed = [r for r in evaluate_policy_gates(plan, policies, phase=phase) if not r.passed]
    if not failed:
        return None
    detail = "; ".join(f"policy {r.name!r} ({r.expression}) {r.detail}" for r in failed)
    return _decide(plan, PlanState.REJECTED, actor=POLICY_ACTOR, reason=f"{phase}: {detail}")


def _resume_running() -> None:
    """After a pause timed out, put the flow run back to Running so it can finish its work."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _wait_for_decision(plan: ReleasePlan, *, attempt: int, remaining: float) -> ApprovalInput:
    return pause_flow_run(
        wait_for_input=ApprovalInput,
        timeout=max(1, math.ceil(remaining)),
        poll_interval=POLL_INTERVAL_SECONDS,
        key=f"approval-{plan.environment}-r{plan.revision}-{attempt}",
    )


def request_approval(plan: ReleasePlan, settings: EnvironmentConfig) -> ReleasePlan:
    """Gate and approve (or reject) a PendingApproval plan. Call it inside a flow run.

    Args:
        plan: the plan, as ``plan_release`` returned it.
        settings: the environment's configuration (policies and approval rules).

    Returns:
        The plan as the ledger now holds it: Approved or Rejected (or further along when an
        earlier run of this release already decided).
    """
    ledger = Ledger()
    # a plan restored from the stage's persisted result may predate this ledger: keep it on record
    plan = ledger.find_plan(plan.plan_id) or ledger.save_plan(plan)
    if plan.state is not PlanState.PENDING_APPROVAL:
        return plan  # decided by an earlier run of this release
    rejected = _gate(plan, settings.policies, phase="before approval")
    if rejected is not None:
        return rejected
    rules = settings.approval
    if not rules.required:
        return _decide(plan, PlanState.APPROVED, actor=POLICY_ACTOR, reason="no approval required; policies passed")

    deadline = time.monotonic() + rules.timeout_seconds
    attempt = len(plan.approvals)
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise FlowPauseTimeout("approval time is up")
            decision = _wait_for_decision(plan, attempt=attempt, remaining=remaining)
        except FlowPauseTimeout:
            _resume_running()
            signed = counted_approvers(plan.approvals)
            return _decide(
                plan,
                PlanState.REJECTED,
                actor=TIMEOUT_ACTOR,
                reason=(
                    f"approval timed out after {rules.timeout_seconds} s with {len(signed)} of "
                    f"{rules.min_approvers} distinct approvers ({', '.join(signed) or 'none'})"
                ),
            )
        attempt += 1
        approval = judge(decision, planner=plan.planned_by, rules=rules, recorded=plan.approvals)
        plan = _record(ledger, plan, approval)
        state = outcome(plan.approvals, rules)
        if state is Outcome.PENDING:
            continue
        if state is Outcome.REJECTED:
            return _decide(
                plan, PlanState.REJECTED, actor=approval.approver,
                reason=f"rejected by {approval.approver}: {approval.comment or 'no comment'}",
            )
        rejected = _gate(plan, settings.policies, phase="after approval")
        if rejected is not None:
            return rejected
        signed = counted_approvers(plan.approvals)
        return _decide(
            plan, PlanState.APPROVED, actor=approval.approver,
            reason=f"approved by {', '.join(signed)} ({len(signed)} of {rules.min_approvers} distinct approvers)",
        )


def _record(ledger: Ledger, plan: ReleasePlan, approval: Approval) -> ReleasePlan:
    ledger.record_approval(plan.plan_id, approval)
    return ledger.save_plan(plan.with_approval(approval))


__all__ = ["POLICY_ACTOR", "TIMEOUT_ACTOR", "ApprovalInput", "evaluate_policy_gates", "request_approval"]
