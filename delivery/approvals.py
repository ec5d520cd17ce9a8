"""Approval rules, pure: who may sign a plan, and when a plan has enough signatures.

Segregation of duties: the planner never approves their own plan, even when both are agents.
Identities are compared after folding case and whitespace (``Agent:Release-Manager `` is
``agent:release-manager``). A decision from the planner, from someone outside the environment's
approvers, or a second decision from someone who already counted, is kept in the audit trail with
``counted=False`` and the reason, and changes nothing.

Where the environment requires signatures (``approval.signed``), a decision counts only with a
signature verified against the identity registry (:class:`SignatureCheck`, made by
``delivery/signing.py``): unsigned, refused by the registry, made with a key registered to the
planner (or the key that signed the planner's request), or a signature already presented: refused.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from delivery.config import ApprovalRules
from delivery.ids import normalise_identity
from delivery.models import Approval, Decision, utcnow

POLICY_ACTOR = "system:policy-gate"
TIMEOUT_ACTOR = "system:timeout"
LATE_REASON = "too late: the approval window closed and the plan was rejected"


class ApprovalInput(BaseModel):
    """What an approver sends to resume a paused promotion (the form in the Prefect UI).

    The default decision is a rejection: an empty or careless resume never approves.
    """

    model_config = ConfigDict(extra="forbid")

    decision: Decision = Field(default=Decision.REJECT, description="approve or reject")
    approver: str = Field(min_length=1, description="Your identity, e.g. user:alice or agent:qa-bot")
    comment: str = Field(default="", max_length=2000)
    signature: str = Field(default="", max_length=8000,
                           description="Where the environment requires it: the output of `delivery identity sign`")


class SignatureCheck(BaseModel):
    """What the identity registry said about a decision's signature (``refused`` set when it does not verify)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str | None = None
    principals: tuple[str, ...] = ()
    digest: str | None = None
    refused: str | None = None


class ApprovalOutcome(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def is_allowed(identity: str, approvers: Sequence[str]) -> bool:
    """Tell whether ``identity`` matches one of the allowed approvers (exact or fnmatch pattern)."""
    key = normalise_identity(identity)
    return any(fnmatchcase(key, normalise_identity(allowed)) for allowed in approvers)


def eligible_approvers(
    rules: ApprovalRules, *, planner: str, recorded: Sequence[Approval], registered: Sequence[str] = ()
) -> list[str] | None:
    """The identities that may still decide on a plan, or None when they cannot be listed.

    Patterns (``user:*``) and an empty approver list ("anyone but the planner") are expanded
    against the registered identities; without a registry they cannot be listed.

    Args:
        rules: the environment's approval rules.
        planner: the identity that planned the release.
        recorded: the decisions already recorded.
        registered: the identities of the registry (normalised), when the environment signs.

    Returns:
        Normalised identities, sorted, without the planner and those who already counted.
    """
    excluded = {normalise_identity(planner)} | {normalise_identity(a.approver) for a in recorded if a.counted}
    patterns = rules.approvers or ["*"]
    if registered:
        candidates = {identity for identity in registered if is_allowed(identity, patterns)}
    elif any(set(pattern) & set("*?[") for pattern in patterns):
        return None
    else:
        candidates = {normalise_identity(pattern) for pattern in patterns}
    return sorted(candidates - excluded)


def judge(
    decision: ApprovalInput,
    *,
    planner: str,
    rules: ApprovalRules,
    recorded: Sequence[Approval],
    at: datetime | None = None,
    signature: SignatureCheck | None = None,
    planner_keys: Collection[str] = (),
) -> Approval:
    """Decide whether one decision counts.

    Args:
        decision: what the approver sent.
        planner: the identity that planned the release.
        rules: the environment's approval rules.
        recorded: the decisions already recorded for this plan (counted or not).
        at: when it arrived (default: now).
        signature: the registry's verdict on the decision's signature (signed environments).
        planner_keys: fingerprints of the keys the planner signed with or is registered with.

    Returns:
        The approval to record: ``counted`` and, when refused, ``refused_reason``.
    """
    approver = decision.approver.strip()
    key = normalise_identity(approver)
    reason: str | None = None
    if not key:
        reason = "no approver identity given"
    elif key == normalise_identity(planner):
        reason = f"segregation of duties: {approver} planned this release and cannot decide on it"
    elif not is_allowed(approver, rules.approvers):
        reason = f"{approver} is not an allowed approver for this environment"
    elif any(a.counted and normalise_identity(a.approver) == key for a in recorded):
        reason = f"{approver} already decided on this plan; a repeated decision counts once"
    elif rules.signed:
        reason = _signature_refusal(signature, planner=planner, planner_keys=planner_keys, recorded=recorded)
    return Approval(
        approver=approver,
        decision=decision.decision,
        comment=decision.comment,
        at=at or utcnow(),
        counted=reason is None,
        refused_reason=reason,
        key_fingerprint=signature.fingerprint if signature else None,
        signature_digest=signature.digest if signature else None,
    )


def _signature_refusal(signature: SignatureCheck | None, *, planner: str, planner_keys: Collection[str],
                       recorded: Sequence[Approval]) -> str | None:
    if signature is None:
        return "unsigned: this environment counts only decisions signed with a registered key"
    if signature.refused:
        return f"signature refused: {signature.refused}"
    if normalise_identity(planner) in signature.principals or signature.fingerprint in planner_keys:
        return (f"segregation of duties: the signing key {signature.fingerprint} belongs to the planner "
                f"{planner}")
    if any(a.signature_digest == signature.digest for a in recorded):
        return "replayed: this signature was already presented for this plan"
    return None


def counted_approvers(approvals: Sequence[Approval]) -> list[str]:
    """The distinct identities whose approval counted, in order."""
    seen: dict[str, str] = {}
    for approval in approvals:
        if approval.counted and approval.decision is Decision.APPROVE:
            seen.setdefault(normalise_identity(approval.approver), approval.approver)
    return list(seen.values())


def timeout_reason(approvals: Sequence[Approval], rules: ApprovalRules) -> str:
    """The reason written when the approval window closed before enough people signed."""
    signed = counted_approvers(approvals)
    return (f"approval timed out after {rules.timeout_seconds} s with {len(signed)} of {rules.min_approvers} "
            f"distinct approvers ({', '.join(signed) or 'none'})")


def outcome(approvals: Sequence[Approval], rules: ApprovalRules) -> ApprovalOutcome:
    """Where a plan stands: one counted rejection rejects; ``min_approvers`` distinct approvals approve."""
    if any(a.counted and a.decision is Decision.REJECT for a in approvals):
        return ApprovalOutcome.REJECTED
    if len(counted_approvers(approvals)) >= rules.min_approvers:
        return ApprovalOutcome.APPROVED
    return ApprovalOutcome.PENDING


__all__ = [
    "LATE_REASON",
    "POLICY_ACTOR",
    "TIMEOUT_ACTOR",
    "ApprovalInput",
    "ApprovalOutcome",
    "SignatureCheck",
    "eligible_approvers",
    "counted_approvers",
    "timeout_reason",
    "is_allowed",
    "judge",
    "outcome",
]
