"""The form of one approval wait (tasks/approval_form.py), without a server (issue 11, points 3 and 4).

The description the Resume dialog shows says what is approved (build, image digests, the command to
see the diff), who may not decide and why, how many approvals are still needed and the one command
that signs. The per-wait input schema lists who may still decide (not the planner, not those already
counted) and requires a ``signature`` only where the environment counts signed decisions. The schema
is checked here with Prefect's own ``schema_tools.validate``: the check the server's resume call runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.utilities.schema_tools import ValidationError, validate

from delivery.approvals import eligible_approvers
from delivery.config import ApprovalRules
from delivery.models import (
    Approval,
    BuildResult,
    BuildStatus,
    CanaryStrategy,
    Decision,
    PublishedImage,
    TestCounts,
)
from delivery.plan import PlanState, ReleasePlan
from delivery.signing import approval_statement, plan_digest, sign_command
from tasks.approval_form import NORMALISED_IDENTITY, WaitContext, decision_form, wait_description, wait_key

PLANNER = "agent:release-manager"
OPENED = datetime(2026, 12, 3, 2, 0, 0, tzinfo=UTC)
COMMIT = "0123456789abcdef" * 2 + "01234567"
DEPLOYED = "fedcba9876543210" * 2 + "fedcba98"
IMAGES = [PublishedImage(repository="127.0.0.1:5000/sample-app", tag="t1", digest="sha256:" + "a" * 64),
          PublishedImage(repository="127.0.0.1:5000/sample-worker", tag="t1", digest="sha256:" + "b" * 64)]
RULES = ApprovalRules(required=True, approvers=["user:alice", "user:bob", "user:carol"], min_approvers=2)
SIGNED = RULES.model_copy(update={"signed": True})


def plan(approvals: list[Approval] | None = None) -> ReleasePlan:
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit=COMMIT, run_id="run-42",
                        tests=TestCounts(total=12, passed=12), images=IMAGES)
    return ReleasePlan(release_id="rel-form-1", trace_id="t" * 32, app="sample-app", revision=2,
                       environment="prod", strategy=CanaryStrategy(steps=[50, 100]), planned_by=PLANNER,
                       build=build, state=PlanState.PENDING_APPROVAL, approvals=approvals or [])


def wait(rules: ApprovalRules = RULES, *, approvals: list[Approval] | None = None, listed: bool = True,
         deployed: str | None = DEPLOYED) -> WaitContext:
    """A wait as the flow builds it: who may still decide from the real rule, or None (patterns, no registry)."""
    current = plan(approvals)
    eligible = eligible_approvers(rules, planner=PLANNER, recorded=current.approvals) if listed else None
    return WaitContext(plan=current, rules=rules, key=wait_key(current, len(current.approvals)), eligible=eligible,
                       opened_at=OPENED, deployed_commit=deployed)


ALICE_APPROVED = [Approval(approver="user:alice", decision=Decision.APPROVE)]
PLANNER_REFUSED = [Approval(approver=PLANNER, decision=Decision.APPROVE, counted=False,
                            refused_reason="the planner may not approve its own release")]


# --------------------------------------------------------------------------- the description


def test_the_description_says_what_is_approved() -> None:
    text = wait_description(wait())
    assert "**Approve release `rel-form-1` (revision 2) of `sample-app` into `prod`** with the canary" in text
    assert f"Build: `run-42` of commit `{COMMIT}`; tests 12/12 passed" in text
    for image in IMAGES:
        assert f"  - `{image.repository}@{image.digest}`" in text
    assert f"Changes: `git diff {DEPLOYED[:12]}..{COMMIT[:12]}` in the `sample-app` repository" in text
    assert f"Plan digest: `{plan_digest(plan())}`" in text


def test_a_first_release_shows_its_commit_instead_of_a_diff() -> None:
    text = wait_description(wait(deployed=None))
    assert f"first release of `sample-app` here: `git show {COMMIT[:12]}`" in text
    assert "git diff" not in text


def test_the_description_says_who_may_not_decide_and_why() -> None:
    text = wait_description(wait())
    assert f"- May not: `{PLANNER}` (planned this release: segregation of duties)\n" in text
    assert "- May decide now: `user:alice`, `user:bob`, `user:carol`" in text

    text = wait_description(wait(approvals=ALICE_APPROVED))
    assert (f"- May not: `{PLANNER}` (planned this release: segregation of duties); `user:alice` "
            "(already approved: each person counts once)") in text
    assert "- May decide now: `user:bob`, `user:carol`" in text


def test_the_description_counts_the_approvals_still_needed() -> None:
    assert "- Approvals: 0 of 2 (none yet); 2 still needed" in wait_description(wait())
    assert "- Approvals: 1 of 2 (user:alice); 1 still needed" in wait_description(wait(approvals=ALICE_APPROVED))
    # A refused decision is not counted, and the description says why it was refused.
    text = wait_description(wait(approvals=PLANNER_REFUSED))
    assert "- Approvals: 0 of 2 (none yet); 2 still needed" in text
    assert f"- Last refused: `{PLANNER}`: the planner may not approve its own release" in text


def test_a_signed_environment_shows_the_one_command_that_signs() -> None:
    text = wait_description(wait(SIGNED))
    statement = approval_statement(plan(), signer="<you>", decision=Decision.APPROVE, opened_at=OPENED)
    command = sign_command(statement).replace("--as <you>", "--as <your identity>")
    assert f"\n    {command}" in text
    assert (f"approval --release rel-form-1 --revision 2 --environment prod --plan-digest {plan_digest(plan())} "
            "--decision approve --at 2026-12-03T02:00:00Z") in command
    assert "counts **signed** decisions only" in text
    unsigned = wait_description(wait())
    assert "delivery identity sign" not in unsigned and "signed" not in unsigned


def test_patterns_without_a_registry_say_who_may_decide_in_words() -> None:
    rules = RULES.model_copy(update={"approvers": ["user:*"]})
    assert "- May decide now: `user:*`, except those below" in wait_description(wait(rules, listed=False))


# --------------------------------------------------------------------------- the per-wait schema


def schema(context: WaitContext) -> dict[str, Any]:
    return decision_form(context).model_json_schema(by_alias=True)


def refused(context: WaitContext, run_input: dict[str, Any]) -> str:
    """The server's answer to a resume with ``run_input``: Prefect's validation against the wait's schema."""
    with pytest.raises(ValidationError) as caught:
        validate(run_input, schema(context), raise_on_error=True)
    return str(caught.value)


def accepted(context: WaitContext, run_input: dict[str, Any]) -> None:
    validate(run_input, schema(context), raise_on_error=True)


def test_the_approver_enum_leaves_out_the_planner_and_those_already_counted() -> None:
    assert schema(wait())["properties"]["approver"]["enum"] == ["user:alice", "user:bob", "user:carol"]
    context = wait(approvals=ALICE_APPROVED + PLANNER_REFUSED)
    assert schema(context)["properties"]["approver"]["enum"] == ["user:bob", "user:carol"]
    accepted(context, {"decision": "approve", "approver": "user:bob"})
    for who in (PLANNER, "user:alice", "user:mallory"):
        message = refused(context, {"decision": "approve", "approver": who})
        assert "field 'approver'" in message and who in message, message


def test_without_a_list_the_schema_excludes_the_planner_and_the_counted_in_any_spelling() -> None:
    rules = RULES.model_copy(update={"approvers": ["user:*"]})
    context = wait(rules, approvals=ALICE_APPROVED, listed=False)
    approver = schema(context)["properties"]["approver"]
    assert approver["pattern"] == NORMALISED_IDENTITY
    assert approver["not"] == {"enum": sorted([PLANNER, "user:alice"])}
    accepted(context, {"approver": "user:dan"})
    for who in (PLANNER, "user:alice", "User:Alice", " user:alice"):
        assert "field 'approver'" in refused(context, {"approver": who})


def test_a_signed_environment_requires_the_signature() -> None:
    form = schema(wait(SIGNED))
    assert "signature" in form["required"] and form["properties"]["signature"]["minLength"] == 1
    assert "signature" in refused(wait(SIGNED), {"decision": "approve", "approver": "user:bob"})
    assert "signature" in refused(wait(SIGNED), {"decision": "approve", "approver": "user:bob", "signature": ""})
    accepted(wait(SIGNED), {"decision": "approve", "approver": "user:bob", "signature": "pasted"})


def test_an_unsigned_environment_has_no_signature_field() -> None:
    form = schema(wait())
    assert "signature" not in form["properties"] and "signature" not in form.get("required", [])
    accepted(wait(), {"decision": "approve", "approver": "user:bob"})


def test_the_form_carries_the_description_and_defaults_to_reject() -> None:
    context = wait(SIGNED, approvals=ALICE_APPROVED)
    form = decision_form(context)
    assert form._description == wait_description(context)  # what Prefect saves as the wait's description
    assert form.model_json_schema()["properties"]["decision"]["default"] == "reject"
    assert form.model_fields["decision"].default is Decision.REJECT
    assert "decision" not in schema(context).get("required", [])
    assert wait_key(context.plan, 1) == "approval-prod-r2-1" == context.key
