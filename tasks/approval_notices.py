"""What an approval wait tells people: that it waits, and what became of each decision.

- When a wait opens: ``ApprovalRequested`` (release, environment, who may decide, a link to the
  run), once per wait even when the run re-enters it after a resume or a crash. ``delivery up``
  wires it to the alert webhook. What the wait asks for is stored as the flow-run input
  ``<wait key>-request``: the statement to sign (release, revision, environment, plan digest,
  time), whether it must be signed, and who may decide; the CLI signs from it.
- After each decision: a log line and an ``ApprovalCounted`` / ``ApprovalRefused`` event on the
  waiting run, and the verdict as the flow-run input ``<wait key>-verdict``, which
  ``delivery release approve`` reads over REST to exit with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import httpx
from prefect import get_run_logger
from prefect.context import FlowRunContext

from delivery.approvals import counted_approvers
from delivery.events import EventName, emit
from delivery.plan import ReleasePlan
from delivery.signing import plan_digest
from tasks.approval_form import WaitContext

REQUEST_SUFFIX = "-request"
VERDICT_SUFFIX = "-verdict"


def _run_id() -> Any:
    context = FlowRunContext.get()
    return context.flow_run.id if context and context.flow_run else None


def flow_run_link() -> str | None:
    """The Prefect UI page of the current flow run, when the UI address is known."""
    from delivery.events import run_link, ui_base_url

    return run_link(_run_id(), ui_base_url())


def _put_once(key: str, value: dict[str, Any]) -> bool:
    """Store a flow-run input under ``key`` unless it exists; tell whether this call stored it."""
    from prefect.client.orchestration import get_client

    run_id = _run_id()
    if run_id is None:
        return True
    with get_client(sync_client=True) as client:
        try:
            client.create_flow_run_input(run_id, key=key, value=json.dumps(value))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 409:  # 409: an earlier run of this release stored it
                raise
            return False
    return True


def announce_wait(wait: WaitContext) -> None:
    """Emit ``ApprovalRequested`` for a wait, once."""
    plan = wait.plan
    signed = counted_approvers(plan.approvals)
    asked = {"release_id": plan.release_id, "revision": plan.revision, "environment": plan.environment,
             "plan_digest": plan_digest(plan), "at": f"{wait.opened_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
             "signed": wait.rules.signed, "eligible": wait.eligible,
             "still_needed": max(0, wait.rules.min_approvers - len(signed))}
    if not _put_once(wait.key + REQUEST_SUFFIX, asked):
        return
    emit(
        EventName.APPROVAL_REQUESTED,
        release_id=plan.release_id,
        trace_id=plan.trace_id,
        payload={
            "plan_id": plan.plan_id, "environment": plan.environment, "revision": plan.revision,
            "app": plan.app, "planned_by": plan.planned_by, "wait_key": wait.key,
            "approvers": wait.eligible if wait.eligible is not None else wait.rules.approvers,
            "approvals": signed, "still_needed": max(0, wait.rules.min_approvers - len(signed)),
            "signed": wait.rules.signed, "link": wait.link,
        },
        resource={"delivery.environment": plan.environment},
    )
    get_run_logger().info("%s: waiting for a decision (%s); %s", plan.environment, wait.key, wait.link or "")


def report_verdict(plan: ReleasePlan, *, key: str, min_approvers: int) -> None:
    """Say what became of the plan's latest decision (the answer to wait ``key``), once.

    A log line, an ``ApprovalCounted``/``ApprovalRefused`` event and the ``<key>-verdict`` input.
    """
    approval = plan.approvals[-1]
    signed = counted_approvers(plan.approvals)
    verdict = {
        "wait_key": key, "environment": plan.environment, "approver": approval.approver,
        "decision": approval.decision.value, "counted": approval.counted, "reason": approval.refused_reason,
        "approvals": signed, "still_needed": max(0, min_approvers - len(signed)),
    }
    if not _put_once(key + VERDICT_SUFFIX, verdict):
        return
    logger = get_run_logger()
    if approval.counted:
        logger.info("%s: %s's %s counted (%s of %s)", plan.environment, approval.approver,
                    approval.decision.value, len(signed), min_approvers)
    else:
        logger.warning("%s: %s's %s was refused: %s", plan.environment, approval.approver,
                       approval.decision.value, approval.refused_reason)
    emit(
        EventName.APPROVAL_COUNTED if approval.counted else EventName.APPROVAL_REFUSED,
        release_id=plan.release_id,
        trace_id=plan.trace_id,
        payload={"plan_id": plan.plan_id, **verdict},
        resource={"delivery.environment": plan.environment},
    )


__all__ = ["REQUEST_SUFFIX", "VERDICT_SUFFIX", "announce_wait", "flow_run_link", "report_verdict"]
