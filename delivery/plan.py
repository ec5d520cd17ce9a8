"""The ReleasePlan and its state machine.

The transition table is data: :data:`TRANSITIONS` maps each (from, to) pair the machine allows
to the reason it exists. ``ReleasePlan.transition`` returns a new plan or raises
:class:`~delivery.errors.InvalidTransition`. A move that settles a promotion (Deployed, Rejected,
Failed) records its :class:`PromotionCause`, a fixed vocabulary, beside the reason a person reads.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from delivery.errors import HealthCheckFailed, InvalidTransition
from delivery.ids import plan_id
from delivery.models import Approval, BuildResult, Model, Strategy, utcnow


class PlanState(StrEnum):
    PLANNED = "Planned"
    PENDING_APPROVAL = "PendingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    PROMOTING = "Promoting"
    DEPLOYED = "Deployed"
    FAILED = "Failed"


class PromotionCause(StrEnum):
    """Why a promotion settled where it did: decided once, recorded on the transition that settles the plan.

    The promotion loop carries it from where it is decided to where it is recorded and raised
    (``flows/promotion.py``), and a later run reads it back from the transition, never from the words
    of a reason or from who moved the plan.
    """

    DEPLOYED = "deployed"  # the health gates passed
    POLICY = "policy"  # a policy gate said no
    SUPERSEDED = "superseded"  # a newer build already runs in the environment
    APPROVAL = "approval"  # someone allowed rejected the plan
    TIMEOUT = "timeout"  # the approval window closed
    CANCELLED = "cancelled"  # someone cancelled the release
    HEALTH_FAILED = "health-failed"  # a health gate did not pass
    DEPLOY_FAILED = "deploy-failed"  # any other failure of the deploy stages

    @classmethod
    def of_failure(cls, error: BaseException) -> PromotionCause:
        """The cause a failed deployment records for ``error``."""
        return cls.HEALTH_FAILED if isinstance(error, HealthCheckFailed) else cls.DEPLOY_FAILED


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
    cause: PromotionCause | None = Field(default=None, description="Why a promotion settled (None: any other move)")
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
        return plan_id(self.release_id, self.revision, self.environment)

    def transition(self, to: PlanState, *, actor: str, reason: str,
                   cause: PromotionCause | None = None) -> tuple[ReleasePlan, Transition]:
        """Move the plan to ``to``.

        Args:
            to: the target state.
            actor: who or what moves it (an identity such as ``user:alice``).
            reason: why, in words a person reads in the audit trail.
            cause: why a promotion settled, for a move to Deployed, Rejected or Failed.

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
            plan_id=self.plan_id, from_state=self.state, to_state=to, actor=actor, reason=reason, cause=cause, at=now
        )
        update: dict[str, object] = {"state": to, "updated_at": now}
        if (self.state, to) == (PlanState.FAILED, PlanState.PROMOTING):
            update["attempt"] = self.attempt + 1  # a retry deploys afresh, not from the failed attempt's results
        return self.model_copy(update=update), record

    def with_approval(self, approval: Approval) -> ReleasePlan:
        """Return the plan with one more approval recorded."""
        return self.model_copy(update={"approvals": [*self.approvals, approval]})
