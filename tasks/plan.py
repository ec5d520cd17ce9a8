"""Stage 8: plan a release for one environment and one strategy.

A plan is made only from a succeeded build. It is stored in the ledger and submitted for approval
(Planned -> PendingApproval), and ``ReleasePlanned`` is emitted. Planning is idempotent: the plan
of a (release, revision, environment) that the ledger already holds is returned unchanged. A new
revision of a release whose previous revision was rejected revises that plan (Rejected -> Planned)
before planning anew.
"""

from __future__ import annotations

from delivery.errors import BuildFailed, InvalidInput
from delivery.events import EventName, emit
from delivery.ids import plan_id
from delivery.ledger import Ledger
from delivery.models import BuildResult, ReleaseRequest, Strategy
from delivery.plan import PlanState, ReleasePlan
from tasks.stage import stage


def _revise_rejected(ledger: Ledger, request: ReleaseRequest, environment: str) -> None:
    for previous in ledger.plans(release_id=request.release_id, environment=environment):
        if previous.revision < request.revision and previous.state is PlanState.REJECTED:
            revised, record = previous.transition(
                PlanState.PLANNED,
                actor=request.requested_by,
                reason=f"revise and replan: superseded by revision {request.revision}",
            )
            ledger.save_plan(revised, record)


@stage("plan_release")
def plan_release(
    request: ReleaseRequest, build: BuildResult, environment: str, strategy: Strategy
) -> ReleasePlan:
    """Plan ``request`` for ``environment`` and submit the plan for approval.

    Args:
        request: the release (its ``requested_by`` is the planner).
        build: the build to deploy; must have succeeded.
        environment: the environment's name.
        strategy: the strategy to deploy with (the request's, else the environment's default).

    Returns:
        The plan, PendingApproval (or further along, when the ledger already held it).

    Raises:
        BuildFailed: the build did not succeed: nothing can be planned from it.
        InvalidInput: the build has no image to deploy.
    """
    if not build.succeeded:
        raise BuildFailed(
            f"release {request.release_id}: build {build.run_id} {build.status.value}; "
            f"no plan can be made from it ({build.reason or 'no reason given'})"
        )
    if not build.images:
        raise InvalidInput(f"release {request.release_id}: build {build.run_id} published no image to deploy")
    ledger = Ledger()
    existing = ledger.find_plan(plan_id(request.release_id, request.revision, environment))
    if existing is not None and existing.state is not PlanState.PLANNED:
        return existing
    _revise_rejected(ledger, request, environment)
    plan = existing or ReleasePlan(
        release_id=request.release_id,
        trace_id=request.trace_id,
        app=request.app,
        revision=request.revision,
        environment=environment,
        strategy=strategy,
        planned_by=request.requested_by,
        build=build,
    )
    if existing is None:
        ledger.save_plan(plan)
    submitted, record = plan.transition(
        PlanState.PENDING_APPROVAL, actor=request.requested_by, reason="submit for approval"
    )
    ledger.save_plan(submitted, record)
    emit(
        EventName.RELEASE_PLANNED,
        release_id=request.release_id,
        trace_id=request.trace_id,
        payload={"plan": submitted},
        resource={"delivery.environment": environment},
    )
    return submitted


__all__ = ["plan_release"]
