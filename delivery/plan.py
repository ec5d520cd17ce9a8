"""The ReleasePlan and its state machine.

The transition table is data: :data:`TRANSITIONS` maps each (from, to) pair the machine allows
to the reason it exists. ``ReleasePlan.transition`` returns a new plan or raises
:class:`~delivery.errors.InvalidTransition`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from delivery.errors import InvalidTransition
from delivery.models import Approval, BuildResult, Model, Strategy, utcnow


class PlanState(StrEnum):
    PLANNED = "Planned"
    PENDING_APPROVAL = "PendingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    PROMOTING = "Promoting"
    DEPLOYED = "Deployed"
    FAILED = "Failed"


TRANSITIONS: dict[tuple[PlanState, PlanState], str] = {
    (PlanState.PLANNED, PlanState.PENDING_APPROVAL): "submit for approval",
    (PlanState.PENDING_APPROVAL, PlanState.APPROVED): "policy passed and approver signed",
    (PlanState.PENDING_APPROVAL, PlanState.REJECTED): "policy failed or rejected",
    (PlanState.APPROVED, PlanState.PROMOTING): "begin promotion",
    (PlanState.APPROVED, PlanState.REJECTED): "superseded by a newer build, or cancelled, before promotion",
    (PlanState.PROMOTING, PlanState.DEPLOYED): "health gates passed",
    (PlanState.PROMOTING, PlanState.FAILED): "deploy or health gate failed",
    (PlanState.FAILED, PlanState.PROMOTING): "retry after fix",
    (PlanState.REJECTED, PlanState.PLANNED): "revise and replan",
}


class Transition(Model):
    """One recorded move of a plan."""

    plan_id: str
    from_state: PlanState
    to_state: PlanState
    actor: str
    reason: str
    at: datetime = Field(default_factory=utcnow)


class ReleasePlan(Model):
    """A release planned for one environment with one strategy, at one revision."""

    release_id: str
    trace_id: str
    app: str
    revision: int = Field(ge=1)
    environment: str
    strategy: Strategy
    planned_by: str
    build: BuildResult
    state: PlanState = PlanState.PLANNED
    approvals: list[Approval] = Field(default_factory=list)
    attempt: int = Field(default=1, ge=1, description="promotion attempt: raised by each retry after a failure")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def plan_id(self) -> str:
        """The plan's key: release, revision and environment."""
        return f"{self.release_id}/r{self.revision}/{self.environment}"

    def transition(self, to: PlanState, *, actor: str, reason: str) -> tuple[ReleasePlan, Transition]:
        """Move the plan to ``to``.

        Args:
            to: the target state.
            actor: who or what moves it (an identity such as ``user:alice``).
            reason: why, in words a person reads in the audit trail.

        Returns:
            The new plan and the transition record for the ledger.

        Raises:
            InvalidTransition: when the table has no such move, or actor/reason are empty.
        """
        to = PlanState(to)
        if (self.state, to) not in TRANSITIONS:
            allowed = sorted(t.value for (f, t) in TRANSITIONS if f is self.state) or ["nothing"]
            raise InvalidTransition(
                f"plan {self.plan_id} cannot go from {self.state.value} to {to.value}; "
                f"from {self.state.value} it may go to {', '.join(allowed)}"
            )
        if not actor.strip() or not reason.strip():
            raise InvalidTransition(f"plan {self.plan_id}: a transition needs an actor and a reason")
        now = utcnow()
        record = Transition(
            plan_id=self.plan_id, from_state=self.state, to_state=to, actor=actor, reason=reason, at=now
        )
        update: dict[str, object] = {"state": to, "updated_at": now}
        if (self.state, to) == (PlanState.FAILED, PlanState.PROMOTING):
            update["attempt"] = self.attempt + 1  # a retry deploys afresh, not from the failed attempt's results
        return self.model_copy(update=update), record

    def with_approval(self, approval: Approval) -> ReleasePlan:
        """Return the plan with one more approval recorded."""
        return self.model_copy(update={"approvals": [*self.approvals, approval]})
