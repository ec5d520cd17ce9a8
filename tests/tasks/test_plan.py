"""Stage 8: plan_release — only from a succeeded build, stored, submitted, idempotent."""

from __future__ import annotations

import pytest
from prefect import flow
from support.governance import PLANNER, new_request, succeeded_build

from delivery.errors import BuildFailed, InvalidInput
from delivery.models import BuildResult, BuildStatus, ReleaseRequest, RollingStrategy
from delivery.plan import PlanState
from tasks.plan import plan_release as plan_release_task

pytestmark = pytest.mark.usefixtures("prefect_server")


@flow(name="plan-under-test")
def plan_release(request: ReleaseRequest, build: BuildResult, environment: str, strategy: RollingStrategy):
    """The stage inside a flow run, as the promotion runs it."""
    return plan_release_task(request, build, environment, strategy)


def test_plans_and_submits_for_approval(ledger) -> None:
    request = new_request()
    plan = plan_release(request, succeeded_build(), "dev", RollingStrategy())
    assert plan.state is PlanState.PENDING_APPROVAL
    assert plan.plan_id == f"{request.release_id}/r1/dev" and plan.planned_by == PLANNER
    stored = ledger.get_plan(plan.plan_id)
    assert stored.state is PlanState.PENDING_APPROVAL and stored.build.images[0].digest.startswith("sha256:")
    assert [(t.from_state, t.to_state, t.actor) for t in ledger.transitions(plan.plan_id)] == [
        (PlanState.PLANNED, PlanState.PENDING_APPROVAL, PLANNER)
    ]


def test_second_run_is_a_no_op(ledger) -> None:
    request = new_request()
    first = plan_release(request, succeeded_build(), "dev", RollingStrategy())
    second = plan_release(request, succeeded_build(), "dev", RollingStrategy())
    assert second.plan_id == first.plan_id and second.state is PlanState.PENDING_APPROVAL
    assert len(ledger.transitions(first.plan_id)) == 1
    assert len(ledger.plans(release_id=request.release_id)) == 1


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (BuildResult(status=BuildStatus.FAILED, commit="c" * 40, run_id="run-9", reason="3 tests failed"),
         BuildFailed, "build run-9 Failed; no plan can be made from it (3 tests failed)"),
        (succeeded_build().model_copy(update={"images": []}), InvalidInput, "published no image to deploy"),
    ],
)
def test_refuses_builds_it_cannot_plan_from(ledger, build, error, message) -> None:
    request = new_request()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_release(request, build, "dev", RollingStrategy())
    assert ledger.plans(release_id=request.release_id) == []
