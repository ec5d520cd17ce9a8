"""A release's status: its plans from the ledger beside its flow runs from Prefect (``delivery release status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.client_models import PlanStatus, RefusedDecision, ReleaseStatus, RunStatus
from cli.stack_info import find_stack
from delivery.approvals import counted_approvers
from delivery.ids import trace_of_tags, waiting_environment
from delivery.ledger import Ledger

if TYPE_CHECKING:
    from cli.client import DeliveryClient


def release_status(client: DeliveryClient, release_id: str, *, ledger_url: str | None = None) -> ReleaseStatus:
    """A release's plans (from the ledger, read without creating it) and flow runs (from Prefect).

    Args:
        client: the API the runs are read from.
        release_id: the release.
        ledger_url: the ledger's SQLAlchemy URL; default the one the stack :func:`find_stack` finds.
    """
    # only read: a ledger not written yet reads as empty, and nothing is created
    ledger = Ledger(ledger_url or find_stack(client.api_url).ledger_url or "sqlite://", create=False)
    plans = ledger.latest_plans(release_id)
    last = {p.plan_id: ledger.last_transition(p.plan_id) for p in plans}
    runs = client.release_runs(release_id)
    trace_id = plans[0].trace_id if plans else None
    for run in runs:
        trace_id = trace_id or trace_of_tags(run.get("tags"))
    return ReleaseStatus(
        release_id=release_id,
        trace_id=trace_id,
        plans=[
            PlanStatus(
                environment=p.environment, revision=p.revision, state=p.state, planned_by=p.planned_by,
                approvers=counted_approvers(p.approvals), updated_at=p.updated_at, attempt=p.attempt,
                reason=last[p.plan_id].reason if last[p.plan_id] else "",
                actor=last[p.plan_id].actor if last[p.plan_id] else None,
                refused=[RefusedDecision(approver=a.approver, decision=a.decision, reason=a.refused_reason or "",
                                         at=a.at) for a in ledger.approvals(p.plan_id) if not a.counted],
            )
            for p in plans
        ],
        runs=[
            RunStatus(
                flow_run_id=str(r["id"]), name=r.get("name") or "",
                state=((r.get("state") or {}).get("name") or (r.get("state_type") or "?")),
                environment=waiting_environment(
                    ((r.get("state") or {}).get("state_details") or {}).get("pause_key")),
            )
            for r in runs
        ],
        waiting_for_approval=sorted(
            {waiting_environment(((r.get("state") or {}).get("state_details") or {}).get("pause_key")) or "?"
             for r in runs if (r.get("state") or {}).get("type") == "PAUSED"}
        ),
        events_url=client.events_url(release_id),
    )


__all__ = ["release_status"]
