"""Every pair of ReleasePlan states: the allowed moves land in the ledger, the others are refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from delivery.errors import ConflictError, HealthCheckFailed, InvalidTransition, TransientError
from delivery.models import Approval, BuildResult, BuildStatus, Decision, RollingStrategy
from delivery.plan import TRANSITIONS, PlanState, PromotionCause, ReleasePlan

ALLOWED = {
    (PlanState.PLANNED, PlanState.PENDING_APPROVAL),
    (PlanState.PENDING_APPROVAL, PlanState.APPROVED),
    (PlanState.PENDING_APPROVAL, PlanState.REJECTED),
    (PlanState.APPROVED, PlanState.PROMOTING),
    (PlanState.APPROVED, PlanState.REJECTED),
    (PlanState.PROMOTING, PlanState.DEPLOYED),
    (PlanState.PROMOTING, PlanState.FAILED),
    (PlanState.FAILED, PlanState.PROMOTING),
    (PlanState.REJECTED, PlanState.PLANNED),
}
ALL_PAIRS = list(itertools.product(PlanState, PlanState))
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


def plan(state: PlanState = PlanState.PLANNED, environment: str = "dev", release_id: str = "rel-1") -> ReleasePlan:
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit="a" * 40, run_id="run-1")
    return ReleasePlan(release_id=release_id, trace_id="t" * 32, app="shop", revision=1, environment=environment,
                       strategy=RollingStrategy(), planned_by="agent:rm", build=build, state=state)


def test_the_table_is_the_designed_machine():
    # DESIGN.md §3 draws eight arrows; a ninth rejects an approved plan that a newer build
    # superseded, or that was cancelled, before its promotion began.
    assert set(TRANSITIONS) == ALLOWED
    assert len(ALL_PAIRS) == 49


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED), ids=lambda s: s.value)
def test_allowed_transition_succeeds_and_is_in_the_ledger_with_actor_and_reason(ledger, source, target):
    start = plan(source, environment=f"{source.value}-{target.value}".lower())
    ledger.save_plan(start)
    moved, record = start.transition(target, actor="user:alice", reason=f"because {target.value}")
    ledger.save_plan(moved, record)

    assert moved.state is target
    assert ledger.get_plan(start.plan_id).state is target
    [stored] = ledger.transitions(start.plan_id)
    assert (stored.from_state, stored.to_state) == (source, target)
    assert stored.actor == "user:alice"
    assert stored.reason == f"because {target.value}"
    assert stored.at is not None


def test_a_settling_move_keeps_its_cause_in_the_ledger_and_other_moves_none(ledger):
    start = plan(PlanState.PROMOTING)
    ledger.save_plan(start)
    failed, record = start.transition(PlanState.FAILED, actor="system:promotion", reason="HealthCheckFailed: not ready",
                                      cause=PromotionCause.HEALTH_FAILED)
    ledger.save_plan(failed, record)
    retried, record = failed.transition(PlanState.PROMOTING, actor="user:ops", reason="retry after fix")
    ledger.save_plan(retried, record)

    assert [t.cause for t in ledger.transitions(start.plan_id)] == [PromotionCause.HEALTH_FAILED, None]
    assert ledger.last_transition(start.plan_id).cause is None


def test_a_failure_s_cause_is_health_only_for_a_failed_health_gate():
    assert PromotionCause.of_failure(HealthCheckFailed("not ready")) is PromotionCause.HEALTH_FAILED
    assert PromotionCause.of_failure(TransientError("503")) is PromotionCause.DEPLOY_FAILED


@pytest.mark.parametrize(("source", "target"), [p for p in ALL_PAIRS if p not in ALLOWED],
                         ids=lambda s: s.value)
def test_every_other_pair_raises_invalid_transition(ledger, source, target):
    start = plan(source)
    ledger.save_plan(start)
    with pytest.raises(InvalidTransition) as info:
        start.transition(target, actor="user:alice", reason="try")
    assert f"cannot go from {source.value} to {target.value}" in str(info.value)
    assert ledger.transitions(start.plan_id) == []
    assert ledger.get_plan(start.plan_id).state is source


def test_a_transition_needs_an_actor_and_a_reason():
    with pytest.raises(InvalidTransition, match="actor and a reason"):
        plan().transition(PlanState.PENDING_APPROVAL, actor=" ", reason="x")
    with pytest.raises(InvalidTransition, match="actor and a reason"):
        plan().transition(PlanState.PENDING_APPROVAL, actor="user:a", reason="")


def test_the_walk_to_deployed_is_recorded_in_order(ledger):
    current = ledger.save_plan(plan())
    for target in (PlanState.PENDING_APPROVAL, PlanState.APPROVED, PlanState.PROMOTING, PlanState.FAILED,
                   PlanState.PROMOTING, PlanState.DEPLOYED):
        current, record = current.transition(target, actor="agent:deployer", reason=f"to {target.value}")
        ledger.save_plan(current, record)
    history = ledger.transitions(release_id="rel-1")
    assert [t.to_state.value for t in history] == [
        "PendingApproval", "Approved", "Promoting", "Failed", "Promoting", "Deployed"]
    with pytest.raises(InvalidTransition, match="may go to nothing"):
        current.transition(PlanState.PROMOTING, actor="x", reason="y")


def test_ledger_compare_and_set_refuses_a_stale_writer(ledger):
    start = ledger.save_plan(plan())
    first, first_record = start.transition(PlanState.PENDING_APPROVAL, actor="agent:a", reason="submit")
    ledger.save_plan(first, first_record)
    # A second writer still holding the Planned plan loses: the stored plan is no longer Planned.
    stale, stale_record = start.transition(PlanState.PENDING_APPROVAL, actor="agent:b", reason="submit too")
    with pytest.raises(ConflictError, match="no longer Planned"):
        ledger.save_plan(stale, stale_record)
    assert [t.actor for t in ledger.transitions(start.plan_id)] == ["agent:a"]
    assert ConflictError("x").retryable


def test_transitions_by_release_do_not_mix_up_similar_ids(ledger):
    for release_id in ("rel_1", "relx1"):
        start = ledger.save_plan(plan(release_id=release_id))
        moved, record = start.transition(PlanState.PENDING_APPROVAL, actor="agent:a", reason="submit")
        ledger.save_plan(moved, record)
    assert [t.plan_id for t in ledger.transitions(release_id="rel_1")] == ["rel_1/r1/dev"]


def test_a_retry_after_failure_is_a_new_promotion_attempt():
    failed = plan(PlanState.FAILED)
    retried, record = failed.transition(PlanState.PROMOTING, actor="user:ops", reason="retry after fix")
    assert (retried.attempt, record.to_state) == (2, PlanState.PROMOTING)
    again, _ = plan(PlanState.APPROVED).transition(PlanState.PROMOTING, actor="system:promotion", reason="begin")
    assert again.attempt == 1


def test_an_incident_status_moves_only_from_the_status_expected(ledger):
    incident = ledger.record_incident(flow="release", error="TransientError: 503", envelope={}, release_id="rel-1",
                                      trace_id="t-1")
    ledger.set_incident_status(incident, "acknowledged", expected=("open",))
    # a second acknowledgement, or a replay that read "open" before it, loses
    with pytest.raises(ConflictError, match=f"incident {incident} is no longer open"):
        ledger.set_incident_status(incident, "replayed", expected=("open",))
    assert ledger.incident(incident)["status"] == "acknowledged"
    ledger.set_incident_status(incident, "replayed", expected=("open", "acknowledged"))
    assert ledger.incident(incident)["status"] == "replayed"


def test_a_transition_refreshes_updated_at_to_the_time_of_its_record():
    start = plan().model_copy(update={"created_at": EARLIER, "updated_at": EARLIER})
    moved, record = start.transition(PlanState.PENDING_APPROVAL, actor="agent:a", reason="submit")
    assert moved.updated_at == record.at > EARLIER
    assert moved.created_at == EARLIER


def test_a_refused_transition_names_the_states_it_may_go_to():
    with pytest.raises(InvalidTransition) as info:
        plan(PlanState.PENDING_APPROVAL).transition(PlanState.DEPLOYED, actor="user:alice", reason="try")
    assert str(info.value) == ("plan rel-1/r1/dev cannot go from PendingApproval to Deployed; "
                               "from PendingApproval it may go to Approved, Rejected")


def test_with_approval_appends_and_leaves_the_original_plan_alone():
    first, second = (Approval(approver=who, decision=Decision.APPROVE) for who in ("user:alice", "user:bob"))
    start = plan(PlanState.PENDING_APPROVAL)
    one = start.with_approval(first)
    two = one.with_approval(second)
    assert (start.approvals, one.approvals, two.approvals) == ([], [first], [first, second])
