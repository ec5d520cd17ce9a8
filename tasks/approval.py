"""Stage 9: the policy gate and the approval of a plan by someone other than the planner.

Prefect waits in flows, not tasks, so :func:`request_approval` is called from inside the release
flow run; the gate evaluation is a task of its own. Flow:

1. a built-in policy first: a plan whose build is older, by merge order on the application's
   main branch, than the build the environment already runs is rejected ("superseded by ...");
2. the environment's CEL policy gates (each evaluation recorded once in the ledger); a failing
   gate rejects the plan at once, nobody is asked;
3. when no approval is required the plan is approved by the gate;
4. otherwise the release run waits for one decision at a time. A run created from a deployment
   **suspends** (``suspend_flow_run``): no process is held, the run shows Suspended, and a resume
   reschedules it; the flow runs again from the start, its stages come back from their persisted
   results, and the suspension with the same key hands back the decision. A run without a
   deployment (a script, a test) pauses in its process instead. Each wait has its own key and its
   own input schema whose description says what is approved. Each decision is judged (planner,
   outsider and repeated approver are refused and audited) until the minimum number of distinct
   approvers signed, someone allowed rejected, or the window (counted from the plan's submission)
   closed;
5. re-check the gates with the approvals (the clock moved), then Approved or Rejected, and
   ``ReleaseApproved`` / ``ReleaseRejected``.

Every step reads the plan from the ledger first, so a run that re-enters the stage after a crash
or a resume writes nothing twice.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from prefect import task
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run

from blocks.git_host import GitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.loading import load_configured_block
from delivery import failpoints
from delivery.approvals import (
    POLICY_ACTOR,
    TIMEOUT_ACTOR,
    ApprovalInput,
    ApprovalOutcome,
    counted_approvers,
    eligible_approvers,
    judge,
    outcome,
    timeout_reason,
)
from delivery.config import ApprovalRules, EnvironmentConfig
from delivery.errors import DeliveryError, InvalidInput, is_retryable
from delivery.events import EventName, emit
from delivery.identity import Registry
from delivery.ids import normalise_identity
from delivery.ledger import REQUEST_REFUSED, Ledger
from delivery.models import Approval, ReleaseRequest, utcnow
from delivery.plan import PlanState, PromotionCause, ReleasePlan
from delivery.policy import PolicyResult, evaluate_policies, policy_context
from delivery.signing import approval_statement, check_signature, verify_request
from tasks.approval_form import WaitContext, decision_form, wait_key
from tasks.approval_notices import announce_wait, flow_run_link, report_verdict
from tasks.stage import BACKOFF_FACTOR, DEFAULT_RETRIES, RESULTS_VERSION, raise_incident

POLL_INTERVAL_SECONDS = 2


def _gate_key(_context: Any, parameters: dict[str, Any]) -> str:
    plan_id = parameters["plan"].plan_id.replace("/", "-")
    return f"v{RESULTS_VERSION}-gates-{plan_id}-{parameters['phase'].replace(' ', '-')}"


@task(name="evaluate_policy_gates", task_run_name="09-policy-gates-{plan.environment}[{phase}]", cache_key_fn=_gate_key,
      persist_result=True)
def evaluate_policy_gates(
    plan: ReleasePlan, policies: dict[str, str], *, phase: str, now: datetime | None = None
) -> list[PolicyResult]:
    """Evaluate an environment's policy gates on a plan and record every evaluation in the ledger.

    Keyed on the plan and the phase: a run that re-enters the stage reuses the verdict instead of
    recording the evaluations twice.

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


def decide(plan: ReleasePlan, to: PlanState, *, actor: str, reason: str,
           cause: PromotionCause | None = None) -> ReleasePlan:
    """Approve or reject a plan: the transition in the ledger, then the event.

    Args:
        plan: the plan, PendingApproval (or Approved, when a newer build supersedes it).
        to: Approved or Rejected.
        actor: who decides.
        reason: why, in words.
        cause: why a rejection settled the promotion.

    Returns:
        The plan as the ledger now holds it.
    """
    moved, record = plan.transition(to, actor=actor, reason=reason, cause=cause)
    decided = Ledger().save_plan(moved, record)
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


def superseded_by(plan: ReleasePlan, ledger: Ledger) -> ReleasePlan | None:
    """The deployed plan of another release whose build is newer than this plan's, if any.

    Newer means: this plan's build commit is an ancestor of the other's on the application's
    repository (merge order on its main branch). Only an explicit rollback moves an environment
    back, never a late release.
    """
    deployed = [other for other in ledger.plans(environment=plan.environment)
                if other.app == plan.app and other.state is PlanState.DEPLOYED and other.release_id != plan.release_id
                and other.build.commit != plan.build.commit]
    if not deployed:
        return None
    host = load_configured_block("git_host", GitHost)
    newer = [other for other in deployed if host.is_ancestor(plan.app, plan.build.commit, other.build.commit)]
    return max(newer, key=lambda other: other.updated_at) if newer else None


def supersede_reason(newer: ReleasePlan) -> str:
    """The reason a superseded plan is rejected with."""
    return (f"superseded by {newer.release_id}: {newer.environment} already runs its build "
            f"{newer.build.commit[:12]}, merged after this one")


def _gate(plan: ReleasePlan, policies: dict[str, str], *, phase: str) -> ReleasePlan | None:
    """Run the gates; return the rejected plan when one failed, else None."""
    if not policies:
        return None
    failed = [r for r in evaluate_policy_gates(plan, policies, phase=phase) if not r.passed]
    if not failed:
        return None
    detail = "; ".join(f"policy {r.name!r} ({r.expression}) {r.detail}" for r in failed)
    return decide(plan, PlanState.REJECTED, actor=POLICY_ACTOR, reason=f"{phase}: {detail}",
                  cause=PromotionCause.POLICY)


def _request_key(_context: Any, parameters: dict[str, Any]) -> str:
    request = parameters["request"]
    return f"v{RESULTS_VERSION}-planner-signature-{request.release_id}-r{request.revision}"


@task(name="verify_planner_signature", task_run_name="09-planner-signature", cache_key_fn=_request_key,
      persist_result=True)
def verify_planner_signature(request: ReleaseRequest) -> str:
    """Verify the planner's signature over a release request, before anything is written.

    Keyed on the release and revision: a run that resumes after the planner's key was revoked
    keeps the verdict given when it started (a revocation stops new signatures, it does not undo).

    Returns:
        The fingerprint of the planner's key.

    Raises:
        InvalidInput: ``signature: ...`` unsigned, or refused by the registry, with the reason; the
            refusal is recorded first as the release's ``request-refused`` action (see :func:`refuse_request`).
    """
    if not request.signature.strip():
        refuse_request(request, f"signature: the release passes environments whose approvals are signed: "
                                f"{request.requested_by} must sign the request (`delivery identity sign request`)")
    check = verify_request(request, request.signature, registry=load_registry())
    if check.refused:
        reason = check.refused.removeprefix("signature: ")
        refuse_request(request, f"signature: the planner's signature over the request was refused: {reason}")
    return check.fingerprint or ""


def refuse_request(request: ReleaseRequest, reason: str) -> NoReturn:
    """Audit a release request refused for its signature, then raise the refusal.

    The only ledger row a refused request writes: an action ``request-refused`` by the planner the
    request claims, with the reason and the signature's digest (never the signature itself). Keyed on
    the revision and that digest, so the same request started again is recorded once.

    Raises:
        InvalidInput: ``reason``.
    """
    signature = request.signature.strip()
    signature_digest = "sha256:" + hashlib.sha256(signature.encode()).hexdigest() if signature else None
    Ledger().record_action(
        request.release_id, action=REQUEST_REFUSED, actor=normalise_identity(request.requested_by), reason=reason,
        detail={"revision": request.revision, "field": "signature", "signature_digest": signature_digest},
        key=f"r{request.revision}:{signature_digest or 'unsigned'}",
    )
    raise InvalidInput(reason)


def load_registry() -> Registry:
    """The identity registry as the GitOps repository's main branch holds it now (revocations apply at once)."""
    allowed, revoked = load_configured_block("gitops_repo", GitOpsRepo).read_identities()
    return Registry.parse(allowed, revoked)


def pending_since(ledger: Ledger, plan: ReleasePlan) -> datetime:
    """When the plan was submitted for approval (its window opens then)."""
    since = next((record.at for record in reversed(ledger.transitions(plan.plan_id))
                  if record.to_state is PlanState.PENDING_APPROVAL), plan.updated_at)
    return since if since.tzinfo else since.replace(tzinfo=UTC)  # SQLite gives back naive UTC


def _suspendable() -> bool:
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return bool(run and run.deployment_id and not run.parent_task_run_id)


def _wait_for_decision(wait: WaitContext, *, remaining: float) -> ApprovalInput:
    """One decision: suspend a deployment's run (the process exits), or pause an ad-hoc one in place."""
    form = decision_form(wait)
    timeout = max(1, math.ceil(remaining))
    if _suspendable():
        received = suspend_flow_run(wait_for_input=form, timeout=timeout, key=wait.key)
    else:
        received = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=POLL_INTERVAL_SECONDS,
                                  key=wait.key)
    return ApprovalInput.model_validate(received.model_dump(include=set(ApprovalInput.model_fields)))


def _resume_running() -> None:
    """After an in-process pause timed out, put the flow run back to Running so it can finish its work."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def request_approval(plan: ReleasePlan, settings: EnvironmentConfig) -> ReleasePlan:
    """Gate and approve (or reject) a PendingApproval plan. Call it inside a flow run.

    Args:
        plan: the plan, as ``plan_release`` returned it.
        settings: the environment's configuration (policies and approval rules).

    Returns:
        The plan as the ledger now holds it: Approved or Rejected (or further along when an
        earlier run of this release already decided).
    """
    # Stage 9 runs in flow code (only a flow can wait), so it gets the stage tasks' policy here: a
    # TransientError is retried with the same backoff (re-entry is idempotent: the plan is read from
    # the ledger first); one still failing after the retries, or an unexpected error, raises an incident.
    attempts = 0
    while True:
        attempts += 1
        try:
            decided = _approve(plan, settings)
            failpoints.hit("request_approval")
            return decided
        except Exception as error:
            if is_retryable(error) and attempts <= DEFAULT_RETRIES:
                time.sleep(BACKOFF_FACTOR * 2 ** (attempts - 1))
                continue
            if is_retryable(error) or not isinstance(error, DeliveryError):
                raise_incident("request_approval", error, attempts=attempts,
                               parameters={"plan": plan, "environment": plan.environment})
            raise


def _approve(plan: ReleasePlan, settings: EnvironmentConfig) -> ReleasePlan:
    ledger = Ledger()
    # a plan restored from the stage's persisted result may predate this ledger: keep it on record
    plan = ledger.find_plan(plan.plan_id) or ledger.save_plan(plan)
    if plan.state is not PlanState.PENDING_APPROVAL:
        return plan  # decided by an earlier run of this release
    newer = superseded_by(plan, ledger)
    if newer is not None:
        return decide(plan, PlanState.REJECTED, actor=POLICY_ACTOR, reason=supersede_reason(newer),
                      cause=PromotionCause.SUPERSEDED)
    rejected = _gate(plan, settings.policies, phase="before approval")
    if rejected is not None:
        return rejected
    rules = settings.approval
    if not rules.required:
        return decide(plan, PlanState.APPROVED, actor=POLICY_ACTOR, reason="no approval required; policies passed")

    opened_at = pending_since(ledger, plan)
    deadline = opened_at + timedelta(seconds=rules.timeout_seconds)
    while True:
        remaining = (deadline - utcnow()).total_seconds()
        registry = load_registry() if rules.signed else None
        wait = _wait_context(ledger, plan, rules, registry=registry, opened_at=opened_at)
        if plan.approvals:  # answered before a crash cut the report short: said once, here
            report_verdict(plan, key=wait_key(plan, len(plan.approvals) - 1), min_approvers=rules.min_approvers)
        try:
            if remaining <= 0:
                raise FlowPauseTimeout("approval time is up")
            announce_wait(wait)
            decision = _wait_for_decision(wait, remaining=remaining)
        except FlowPauseTimeout:
            if not _suspendable():
                _resume_running()
            return decide(plan, PlanState.REJECTED, actor=TIMEOUT_ACTOR,
                          reason=timeout_reason(plan.approvals, rules), cause=PromotionCause.TIMEOUT)
        # the registry as it is when the decision arrives: a key revoked during the wait signs nothing more
        approval = _judge(decision, plan, rules, registry=load_registry() if rules.signed else None,
                          opened_at=opened_at)
        plan = _record(ledger, plan, approval)
        report_verdict(plan, key=wait.key, min_approvers=rules.min_approvers)
        state = outcome(plan.approvals, rules)
        if state is ApprovalOutcome.PENDING:
            continue
        if state is ApprovalOutcome.REJECTED:
            return decide(
                plan, PlanState.REJECTED, actor=approval.approver,
                reason=f"rejected by {approval.approver}: {approval.comment or 'no comment'}",
                cause=PromotionCause.APPROVAL,
            )
        rejected = _gate(plan, settings.policies, phase="after approval")
        if rejected is not None:
            return rejected
        signed = counted_approvers(plan.approvals)
        return decide(
            plan, PlanState.APPROVED, actor=approval.approver,
            reason=f"approved by {', '.join(signed)} ({len(signed)} of {rules.min_approvers} distinct approvers)",
        )


def _wait_context(ledger: Ledger, plan: ReleasePlan, rules: ApprovalRules, *, registry: Registry | None,
                  opened_at: datetime) -> WaitContext:
    deployed = [other for other in ledger.plans(environment=plan.environment)
                if other.app == plan.app and other.state is PlanState.DEPLOYED]
    newest = max(deployed, key=lambda other: other.updated_at) if deployed else None
    eligible = eligible_approvers(rules, planner=plan.planned_by, recorded=plan.approvals,
                                  registered=registry.identities() if registry else ())
    return WaitContext(plan=plan, rules=rules, key=wait_key(plan, len(plan.approvals)), eligible=eligible,
                       opened_at=opened_at, deployed_commit=newest.build.commit if newest else None,
                       link=flow_run_link())


def _judge(decision: ApprovalInput, plan: ReleasePlan, rules: ApprovalRules, *, registry: Registry | None,
           opened_at: datetime) -> Approval:
    """Judge one decision; in a signed environment, verify its signature against the registry first."""
    signature = planner_keys = None
    if registry is not None and decision.signature.strip():
        expected = approval_statement(plan, signer=decision.approver, decision=decision.decision,
                                      opened_at=opened_at)
        signature = check_signature(decision.signature, expected=expected, registry=registry)
        planner = normalise_identity(plan.planned_by)
        planner_keys = {key.fingerprint for key in registry.keys if planner in key.principals}
    return judge(decision, planner=plan.planned_by, rules=rules, recorded=plan.approvals, signature=signature,
                 planner_keys=planner_keys or ())


def _record(ledger: Ledger, plan: ReleasePlan, approval: Approval) -> ReleasePlan:
    ledger.record_approval(plan.plan_id, approval)
    return ledger.save_plan(plan.with_approval(approval))


__all__ = [
    "POLICY_ACTOR",
    "TIMEOUT_ACTOR",
    "ApprovalInput",
    "decide",
    "evaluate_policy_gates",
    "pending_since",
    "refuse_request",
    "request_approval",
    "supersede_reason",
    "superseded_by",
    "load_registry",
    "verify_planner_signature",
    "wait_key",
]
