"""The form of one approval wait: its key, its input schema and the description the Resume dialog shows.

The schema is built per wait so that Prefect's resume call itself refuses what cannot count: the
``approver`` field lists who may still decide (the planner and those who already counted are not
among them), and a signed environment requires the ``signature`` field. The server answers such a
resume ``REJECT`` with a message naming the field and the refused value, and the run stays
waiting. What only the flow can check (a signature's validity) is reported after the fact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.input.run_input import RunInput
from pydantic import BaseModel, ConfigDict, Field, create_model

from delivery.approvals import counted_approvers
from delivery.config import ApprovalRules
from delivery.ids import approval_wait_key, normalise_identity
from delivery.models import Decision
from delivery.plan import ReleasePlan
from delivery.signing import approval_statement, plan_digest, sign_command

# Where the approvers cannot be listed (patterns without a registry): a normalised identity, that is
# without whitespace or capitals, so that a case or whitespace variant of the planner cannot slip by.
NORMALISED_IDENTITY = r"^[^\sA-Z]+$"


class WaitContext(BaseModel):
    """Everything one wait's form says."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    plan: ReleasePlan
    rules: ApprovalRules
    key: str
    eligible: list[str] | None = Field(description="Who may still decide; None when they cannot be listed")
    opened_at: datetime = Field(description="When the plan was submitted for approval (signed into the statement)")
    deployed_commit: str | None = None
    link: str | None = None


def wait_key(plan: ReleasePlan, attempt: int) -> str:
    """The key of one wait for a decision (:func:`delivery.ids.approval_wait_key`)."""
    return approval_wait_key(plan.environment, plan.revision, attempt)


def _identities(values: list[str]) -> str:
    return ", ".join(f"`{value}`" for value in values)


def wait_description(wait: WaitContext) -> str:
    """What the Resume dialog shows: what is approved, who may (not) approve, what is still needed, how to sign."""
    plan, rules = wait.plan, wait.rules
    signed = counted_approvers(plan.approvals)
    images = "\n".join(f"  - `{image.repository}@{image.digest}`" for image in plan.build.images) or "  - (none)"
    diff = (f"`git diff {wait.deployed_commit[:12]}..{plan.build.commit[:12]}` in the `{plan.app}` repository"
            if wait.deployed_commit else f"first release of `{plan.app}` here: `git show {plan.build.commit[:12]}`")
    if wait.eligible is None:
        may = f"{_identities(rules.approvers) or 'anyone'}, except those below"
    else:
        may = _identities(wait.eligible) or "nobody is left who may approve: reject, or change the approvers"
    lines = [
        f"**Approve release `{plan.release_id}` (revision {plan.revision}) of `{plan.app}` "
        f"into `{plan.environment}`** with the {plan.strategy.name} strategy.",
        "",
        f"- Build: `{plan.build.run_id}` of commit `{plan.build.commit}`; tests "
        f"{plan.build.tests.passed}/{plan.build.tests.total} passed",
        f"- Images:\n{images}",
        f"- Changes: {diff}",
        f"- Plan digest: `{plan_digest(plan)}`",
        f"- May decide now: {may}",
        f"- May not: `{plan.planned_by}` (planned this release: segregation of duties)"
        + (f"; {_identities(signed)} (already approved: each person counts once)" if signed else ""),
        f"- Approvals: {len(signed)} of {rules.min_approvers} ({', '.join(signed) or 'none yet'}); "
        f"{max(0, rules.min_approvers - len(signed))} still needed",
    ]
    refused = [a for a in plan.approvals if not a.counted]
    if refused:
        lines.append(f"- Last refused: `{refused[-1].approver}`: {refused[-1].refused_reason}")
    lines += ["", "Set `decision` to `approve` or `reject` and `approver` to your identity. "
              "The decision defaults to reject: an empty resume never approves."]
    if rules.signed:
        statement = approval_statement(plan, signer="<you>", decision=Decision.APPROVE, opened_at=wait.opened_at)
        lines += ["", "This environment counts **signed** decisions only. Sign this statement and paste the "
                  "output into `signature` (use `--decision reject` to sign a rejection):", "",
                  f"    {sign_command(statement).replace('--as <you>', '--as <your identity>')}"]
    return "\n".join(lines)


def _approver_schema(wait: WaitContext) -> dict[str, Any]:
    if wait.eligible is not None:
        return {"enum": wait.eligible}
    excluded = {normalise_identity(wait.plan.planned_by)} | {
        normalise_identity(a.approver) for a in wait.plan.approvals if a.counted}
    return {"pattern": NORMALISED_IDENTITY, "not": {"enum": sorted(excluded)}}


def decision_form(wait: WaitContext) -> type[RunInput]:
    """The input schema of this wait, with its description as the form's initial text."""
    approver_help = "Your identity (the planner and those who already approved are not accepted)"
    fields: dict[str, Any] = {
        "decision": (Decision, Field(default=Decision.REJECT, description="approve or reject")),
        "approver": (str, Field(description=approver_help, json_schema_extra=_approver_schema(wait))),
        "comment": (str, Field(default="", max_length=2000)),
    }
    if wait.rules.signed:
        fields["signature"] = (str, Field(min_length=1, max_length=8000,
                                          description="The output of `delivery identity sign` (see above)"))
    form = create_model("ApprovalDecision", __base__=RunInput, **fields)
    return form.with_initial_data(description=wait_description(wait))


__all__ = ["NORMALISED_IDENTITY", "WaitContext", "decision_form", "wait_description", "wait_key"]
