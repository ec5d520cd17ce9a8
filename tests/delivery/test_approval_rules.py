"""Approval rules, pure: segregation of duties, allowed approvers, distinct counting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from delivery.approvals import (
    ApprovalInput,
    ApprovalOutcome,
    SignatureCheck,
    counted_approvers,
    eligible_approvers,
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
    assert outcome([first, second], RULES) is ApprovalOutcome.PENDING


def test_two_distinct_approvers_approve() -> None:
    first = _judge("user:alice")
    second = _judge("user:bob", recorded=[first])
    assert outcome([first, second], RULES) is ApprovalOutcome.APPROVED


def test_a_counted_rejection_rejects_and_a_refused_one_does_not() -> None:
    refused = _judge("user:mallory", Decision.REJECT)
    assert outcome([refused], RULES) is ApprovalOutcome.PENDING
    rejected = _judge("user:bob", Decision.REJECT)
    assert outcome([_judge("user:alice"), rejected], RULES) is ApprovalOutcome.REJECTED


def test_patterns() -> None:
    assert is_allowed("agent:qa-nightly", RULES.approvers)
    assert not is_allowed("agent:release-manager", RULES.approvers)


def test_a_refused_approval_never_counts_toward_min_approvers() -> None:
    planners_own = _judge(PLANNER)  # refused: segregation of duties
    alice = _judge("user:alice", recorded=[planners_own])
    assert counted_approvers([planners_own, alice]) == ["user:alice"]
    assert outcome([planners_own, alice], RULES) is ApprovalOutcome.PENDING


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


SIGNED = RULES.model_copy(update={"signed": True})
ALICE_KEY = SignatureCheck(fingerprint="SHA256:alice", principals=("user:alice",), digest="d-alice")


def _signed(approver: str, signature: SignatureCheck | None, recorded=(), planner_keys=()) -> Approval:
    return judge(ApprovalInput(decision=Decision.APPROVE, approver=approver), planner=PLANNER, rules=SIGNED,
                 recorded=recorded, signature=signature, planner_keys=planner_keys)


def test_a_verified_signature_counts_and_is_recorded() -> None:
    approval = _signed("user:alice", ALICE_KEY)
    assert approval.counted and approval.refused_reason is None
    assert (approval.key_fingerprint, approval.signature_digest) == ("SHA256:alice", "d-alice")
    bob = SignatureCheck(fingerprint="SHA256:bob", principals=("user:bob",), digest="d-bob")
    assert _signed("user:bob", bob, recorded=[approval]).counted  # another signature, another approver


def test_an_unsigned_decision_does_not_count_where_signatures_are_required() -> None:
    approval = _signed("user:alice", None)
    assert not approval.counted
    assert approval.refused_reason == "unsigned: this environment counts only decisions signed with a registered key"
    assert (approval.key_fingerprint, approval.signature_digest) == (None, None)


def test_a_signature_the_registry_refused_does_not_count() -> None:
    refused = SignatureCheck(fingerprint="SHA256:x", digest="d-x", refused="no principal matches")
    approval = _signed("user:alice", refused)
    assert not approval.counted and approval.refused_reason == "signature refused: no principal matches"


def test_a_key_of_the_planner_never_counts() -> None:
    registered_to_planner = SignatureCheck(fingerprint="SHA256:rm", principals=("agent:release-manager",),
                                           digest="d-1")
    signed_the_request = SignatureCheck(fingerprint="SHA256:rm-req", principals=("user:alice",), digest="d-2")
    for signature in (registered_to_planner, signed_the_request):
        approval = _signed("user:alice", signature, planner_keys={"SHA256:rm-req"})
        assert not approval.counted
        assert approval.refused_reason.startswith(
            f"segregation of duties: the signing key {signature.fingerprint} belongs to the planner {PLANNER}")


def test_a_replayed_signature_does_not_count() -> None:
    refused_first = _signed("user:bob", ALICE_KEY)  # recorded, even though it did not count
    approval = _signed("user:alice", ALICE_KEY, recorded=[refused_first])
    assert not approval.counted
    assert approval.refused_reason == "replayed: this signature was already presented for this plan"


def test_eligible_approvers_without_a_registry_are_the_listed_identities_left() -> None:
    rules = ApprovalRules(approvers=["user:alice", "user:Xavier", "agent:release-manager"])
    assert eligible_approvers(rules, planner=PLANNER, recorded=[_judge("user:alice")]) == ["user:xavier"]
    assert eligible_approvers(rules, planner=PLANNER, recorded=[]) == ["user:alice", "user:xavier"]


def test_eligible_approvers_cannot_be_listed_from_patterns_without_a_registry() -> None:
    assert eligible_approvers(RULES, planner=PLANNER, recorded=[]) is None
    assert eligible_approvers(ApprovalRules(), planner=PLANNER, recorded=[]) is None  # anyone but the planner


def test_eligible_approvers_expand_patterns_against_the_registry() -> None:
    registered = ["user:alice", "user:bob", "agent:qa-bot", "agent:release-manager", "user:mallory"]
    rules = ApprovalRules(approvers=["user:alice", "user:bob", "agent:qa-*"])
    assert eligible_approvers(rules, planner=PLANNER, recorded=[_judge("user:bob")], registered=registered) == [
        "agent:qa-bot", "user:alice"]
    assert eligible_approvers(ApprovalRules(), planner=PLANNER, recorded=[], registered=registered) == [
        "agent:qa-bot", "user:alice", "user:bob", "user:mallory"]
