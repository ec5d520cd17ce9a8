"""Approval rules, pure: segregation of duties, allowed approvers, distinct counting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from delivery.approvals import (
    ApprovalInput,
    Outcome,
    counted_approvers,
    is_allowed,
    judge,
    outcome,
    timeout_reason,
)
from delivery.config import ApprovalRules
from delivery.models import Approval, Decision

RULES = ApprovalRules(required=True, approvers=["user:alice", "user:bob", "agent:qa-*"], min_approvers=2)
PLANNER = "agent:release-manager"


def _judge(approver: str, decision: Decision = Decision.APPROVE, recorded=(), planner: str = PLANNER) -> Approval:
    return judge(ApprovalInput(decision=decision, approver=approver), planner=planner, rules=RULES, recorded=recorded)


def test_default_input_is_a_rejection() -> None:
    assert ApprovalInput(approver="user:alice").decision is Decision.REJECT


@pytest.mark.parametrize("approver", [PLANNER, " Agent:Release-Manager ", "AGENT:RELEASE - MANAGER"])
def test_planner_is_refused_whatever_the_spelling(approver: str) -> None:
    approval = _judge(approver)
    assert not approval.counted
    assert "segregation of duties" in approval.refused_reason


def test_planner_refused_between_agents() -> None:
    approval = _judge("agent:qa-bot", planner="agent:QA-bot")
    assert not approval.counted and "segregation of duties" in approval.refused_reason
    assert _judge("agent:qa-bot").counted  # another agent, allowed by the pattern, counts


def test_outsider_is_refused() -> None:
    approval = _judge("user:mallory")
    assert not approval.counted and "not an allowed approver" in approval.refused_reason


def test_same_person_counts_once() -> None:
    first = _judge("user:alice")
    second = _judge("USER:Alice", recorded=[first])
    assert first.counted and not second.counted
    assert "counts once" in second.refused_reason
    assert counted_approvers([first, second]) == ["user:alice"]
    assert outcome([first, second], RULES) is Outcome.PENDING


def test_two_distinct_approvers_approve() -> None:
    first = _judge("user:alice")
    second = _judge("user:bob", recorded=[first])
    assert outcome([first, second], RULES) is Outcome.APPROVED


def test_a_counted_rejection_rejects_and_a_refused_one_does_not() -> None:
    refused = _judge("user:mallory", Decision.REJECT)
    assert outcome([refused], RULES) is Outcome.PENDING
    rejected = _judge("user:bob", Decision.REJECT)
    assert outcome([_judge("user:alice"), rejected], RULES) is Outcome.REJECTED


def test_patterns() -> None:
    assert is_allowed("agent:qa-nightly", RULES.approvers)
    assert not is_allowed("agent:release-manager", RULES.approvers)


def test_a_refused_approval_never_counts_toward_min_approvers() -> None:
    planners_own = _judge(PLANNER)  # refused: segregation of duties
    alice = _judge("user:alice", recorded=[planners_own])
    assert counted_approvers([planners_own, alice]) == ["user:alice"]
    assert outcome([planners_own, alice], RULES) is Outcome.PENDING


def test_a_blank_identity_is_refused() -> None:
    approval = _judge("   ")
    assert not approval.counted
    assert approval.refused_reason == "no approver identity given"


def test_the_decision_keeps_its_comment_and_arrival_time() -> None:
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    approval = judge(ApprovalInput(decision=Decision.APPROVE, approver="user:alice", comment="looks good"),
                     planner=PLANNER, rules=RULES, recorded=[], at=at)
    assert (approval.comment, approval.at) == ("looks good", at)


def test_the_timeout_reason_names_who_signed_out_of_how_many() -> None:
    alice, bob = _judge("user:alice"), _judge("user:bob", Decision.REJECT)
    assert timeout_reason([_judge(PLANNER), alice, bob], RULES) == (
        "approval timed out after 3600 s with 1 of 2 distinct approvers (user:alice)")
    three = ApprovalRules(approvers=["user:*"], min_approvers=3, timeout_seconds=60)
    assert timeout_reason([alice, _judge("user:bob")], three) == (
        "approval timed out after 60 s with 2 of 3 distinct approvers (user:alice, user:bob)")
    assert timeout_reason([], RULES).endswith("with 0 of 2 distinct approvers (none)")

