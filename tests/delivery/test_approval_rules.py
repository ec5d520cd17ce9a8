"""Approval rules, pure: segregation of duties, allowed approvers, distinct counting."""

from __future__ import annotations

import pytest

from delivery.approvals import ApprovalInput, Outcome, counted_approvers, is_allowed, judge, outcome
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
