"""Decisions refused before they reach the flow, kept in the ledger as refused approvals.

The resume call itself refuses what the wait's input schema excludes (the planner, an outsider, a
repeat), and a decision sent after the approval window closed finds no wait at all. Neither reaches
the flow, so the sender records it here, with the reason, on the plan it was meant for.
"""

from __future__ import annotations

from collections.abc import Iterable

from delivery.approvals import LATE_REASON, TIMEOUT_ACTOR
from delivery.errors import ApprovalRefused
from delivery.ledger import Ledger
from delivery.models import Approval, Decision
from delivery.plan import PlanState


def record_refused_resumes(release_id: str, refusals: Iterable[tuple[str | None, str]], *, decision: Decision,
                           approver: str, comment: str, ledger: Ledger | None = None) -> None:
    """Record each decision the resume call refused on the plan waiting in its environment.

    Args:
        release_id: the release decided on.
        refusals: ``(environment, the server's reason)`` per refused resume.
        decision: what was sent.
        approver: who sent it.
        comment: its comment.
        ledger: the ledger; default the configured one, read without creating it (a ledger this machine
            does not hold has no plan waiting, and nothing is written).
    """
    refusals = list(refusals)
    if not refusals:
        return
    ledger = ledger or Ledger(create=False)
    for environment, reason in refusals:
        waiting = [plan for plan in ledger.plans(release_id=release_id, environment=environment)
                   if plan.state is PlanState.PENDING_APPROVAL]
        for plan in waiting[-1:]:
            ledger.record_approval(plan.plan_id, Approval(
                approver=approver, decision=decision, comment=comment, counted=False,
                refused_reason=f"refused by the resume call: {reason}"))


def refuse_after_timeout(release_id: str, *, environment: str | None, decision: Decision, approver: str,
                         comment: str, ledger: Ledger | None = None) -> None:
    """Refuse a decision on a plan whose approval window closed, after recording it as refused.

    Returns quietly when no plan of the release (in ``environment``) was rejected by the timeout.

    Raises:
        ApprovalRefused: the window closed; the message gives the timeout's reason.
    """
    ledger = ledger or Ledger(create=False)
    for plan in ledger.plans(release_id=release_id, environment=environment):
        last = ledger.last_transition(plan.plan_id)
        if plan.state is PlanState.REJECTED and last and last.actor == TIMEOUT_ACTOR:
            ledger.record_approval(plan.plan_id, Approval(
                approver=approver, decision=decision, comment=comment, counted=False, refused_reason=LATE_REASON))
            raise ApprovalRefused(f"{plan.environment}: {LATE_REASON} ({last.reason})")


__all__ = ["record_refused_resumes", "refuse_after_timeout"]
