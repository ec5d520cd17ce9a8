"""Operations on a release from outside its run, asked by a person or an agent: retry, cancel, replay, acknowledge.

Each acts on the release's run through Prefect (:mod:`flows.release_runs`) and on its plans through
the state machine, and writes what it did to the ledger with the actor who asked:

- :func:`retry_release`: a Failed environment goes back to Promoting (a new attempt) and the
  release run is resubmitted; it continues from its stored stage results.
- :func:`cancel_release`: a waiting or stuck release ends: its run is cancelled, its open plans
  rejected (or failed, when promoting), and the environment lock its dead process held freed.
- :func:`replay_incident`: the run an incident belongs to is resubmitted (after moving a Failed
  environment back to Promoting), whatever stage it failed in.
- :func:`acknowledge_incident`: someone owns an open incident; it is not replayed as it is.

Each resubmission continues the same flow run, so the release keeps one run, one idempotency key
and one trace; its persisted stages come back Cached.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling

from delivery.errors import ConflictError, InvalidInput, NotFound
from delivery.ledger import Ledger
from delivery.plan import PlanState, PromotionCause
from flows.release_runs import (
    GONE_AFTER_SECONDS,
    describe_plans,
    last_sign_of_life,
    latest_release_run,
    release_runs,
    resubmit,
)
from tasks.approval import supersede_reason, superseded_by
from tasks.incidents import refresh_incident_views
from tasks.locks import free_dead_leases
from tasks.summary import publish_status

FINISHED = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
ENDED = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED}  # what cancel leaves alone


@flow(name="retry-release", log_prints=True)
def retry_release(release_id: str, requested_by: str, environment: str | None = None, reason: str = "") -> str:
    """Retry a release whose environment failed: Failed -> Promoting, then the release run again.

    Args:
        release_id: the release.
        requested_by: who asks (audited as the transition's actor).
        environment: only this environment (default: the one that failed).
        reason: why, e.g. what was fixed.

    Returns:
        What was done.

    Raises:
        InvalidInput: nothing Failed to retry, the release run has not finished, or the environment
            already runs a newer build (a retry would move it backwards: only a rollback does).
        NotFound: no such release.
    """
    ledger = Ledger()
    plans = ledger.latest_plans(release_id)
    if not plans and not release_runs(release_id):
        raise NotFound(f"release {release_id}: no such release")
    failed = [p for p in plans if p.state is PlanState.FAILED and environment in (None, p.environment)]
    if not failed:
        where = f" in {environment}" if environment else ""
        raise InvalidInput(f"release {release_id}: no Failed environment{where} to retry ({describe_plans(plans)})")
    run = latest_release_run(release_id)
    if run.state is None or run.state.type not in FINISHED:
        raise InvalidInput(f"release {release_id}: its run {run.name} is still {run.state_name}; "
                           "wait for it to end or cancel it first")
    for plan in failed:
        newer = superseded_by(plan, ledger)
        if newer is not None:
            raise InvalidInput(f"release {release_id}: {plan.environment} is not retried: {supersede_reason(newer)}; "
                               "a retry would move it backwards (only an explicit rollback does)")
    why = f"retry after fix, asked by {requested_by}" + (f": {reason}" if reason else "")
    for plan in failed:
        moved, record = plan.transition(PlanState.PROMOTING, actor=requested_by, reason=why)
        ledger.save_plan(moved, record)
    resubmit(run, action="retried", actor=requested_by, ledger=ledger, reason=why,
             detail={"environments": [p.environment for p in failed]})
    publish_status(release_id, ledger)
    return f"retrying {', '.join(p.environment for p in failed)}"


@flow(name="cancel-release", log_prints=True)
def cancel_release(release_id: str, requested_by: str, reason: str = "") -> str:
    """End a waiting or stuck release: cancel its run, close its open plans.

    A suspended, scheduled or crashed run is Cancelled at once. A running one goes to Cancelling
    for its worker to stop its process; when that process is gone (it died with its worker), which
    its silence tells (no heartbeat for ``GONE_AFTER_SECONDS``), the run is Cancelled here,
    since nobody else ever would. The operation returns once the run has ended.

    Args:
        release_id: the release.
        requested_by: who asks (audited).
        reason: why.

    Returns:
        What was done.

    Raises:
        InvalidInput: the release has already ended.
        NotFound: no such release.
    """
    ledger = Ledger()
    runs = release_runs(release_id)
    plans = ledger.latest_plans(release_id)
    if not runs and not plans:
        raise NotFound(f"release {release_id}: no such release")
    # a Crashed run is not over: recovery would resubmit it
    live = [run for run in runs if run.state is not None and run.state.type not in ENDED]
    open_plans = [p for p in plans if p.state in (PlanState.PENDING_APPROVAL, PlanState.APPROVED,
                                                  PlanState.PROMOTING)]
    if not live and not open_plans:
        raise InvalidInput(f"release {release_id}: nothing to cancel: its run ended and its plans are settled "
                           f"({describe_plans(plans)})")
    why = f"cancelled by {requested_by}" + (f": {reason}" if reason else "")
    stopping = []
    with get_client(sync_client=True) as client:
        for run in live:
            # a run with a process is stopped by its worker; one without (suspended, scheduled, crashed) at once
            if run.state.type in (StateType.RUNNING, StateType.PENDING):
                client.set_flow_run_state(run.id, Cancelling(message=why), force=True)
            elif run.state.type is not StateType.CANCELLING:
                client.set_flow_run_state(run.id, Cancelled(message=why), force=True)
                continue
            stopping.append(run)
    for plan in open_plans:
        target = PlanState.FAILED if plan.state is PlanState.PROMOTING else PlanState.REJECTED
        moved, record = plan.transition(target, actor=requested_by, reason=why, cause=PromotionCause.CANCELLED)
        ledger.save_plan(moved, record)
    ledger.record_action(release_id, action="cancelled", actor=requested_by, reason=why,
                         detail={"flow_run_ids": [str(run.id) for run in live],
                                 "plans": [p.plan_id for p in open_plans]})
    publish_status(release_id, ledger)
    ended = [_stop(run, why) for run in stopping]
    still = [name for name in ended if name != "Cancelled"]
    # no process of the release is left: the locks it held are free now, not when their leases lapse
    freed = [] if still else free_dead_leases(ledger, release_id)
    return f"cancelled: {len(live)} run(s), {len(open_plans)} plan(s) closed" + (
        f"; freed the lock of {', '.join(freed)}" if freed else "") + (
        f"; still stopping: {', '.join(still)}" if still else "")


def _stop(run: FlowRun, why: str) -> str:
    """Wait for a Cancelling run to end; Cancel it here once its process is silent; return its state's name.

    A live process is stopped by its worker within seconds and beats every ``HEARTBEAT_SECONDS``
    until then. A process that died with its worker never answers: without this, its run would
    stay Cancelling forever (Prefect's workers only cancel runs they started and that never ran).
    """
    deadline = time.monotonic() + float(os.environ.get("DELIVERY_CANCEL_WAIT_SECONDS", "120"))
    with get_client(sync_client=True) as client:
        while True:
            current = client.read_flow_run(run.id)
            if current.state is None or current.state.type is not StateType.CANCELLING:
                return current.state_name or "?"
            silent = (datetime.now(UTC) - last_sign_of_life(client, current)).total_seconds()
            if silent >= GONE_AFTER_SECONDS:
                client.set_flow_run_state(run.id, Cancelled(
                    message=f"{why}; its process gave no sign of life for {silent:.0f} s: it is gone"), force=True)
                get_run_logger().warning("run %s: no sign of life for %.0f s: Cancelled here", run.name, silent)
                return "Cancelled"
            if time.monotonic() > deadline:
                get_run_logger().warning("run %s still Cancelling: its process is alive and will stop it", run.name)
                return current.state_name or "Cancelling"
            time.sleep(2)


@flow(name="replay-incident", log_prints=True)
def replay_incident(incident_id: int, requested_by: str) -> str:
    """Replay an incident: the release run it belongs to runs again from its stored stages.

    A Failed environment goes back to Promoting first. Works for an incident of any stage, and for
    incidents recorded before releases became a single run (the run is found by the release id).

    Args:
        incident_id: the incident.
        requested_by: who asks (audited).

    Returns:
        What was done.

    Raises:
        NotFound: no such incident, or its release has no run.
        InvalidInput: the incident was already replayed, or its release run has not ended.
    """
    ledger = Ledger()
    incident = ledger.incident(incident_id)
    if incident["status"] == "replayed":
        raise InvalidInput(f"incident {incident_id} was already replayed")
    release_id = incident["release_id"]
    if not release_id:
        raise InvalidInput(f"incident {incident_id} names no release to replay")
    run = latest_release_run(release_id)
    if run.state is None or run.state.type not in FINISHED:
        raise InvalidInput(f"incident {incident_id}: release run {run.name} is {run.state_name}; "
                           "it is already running or waiting")
    if run.state.type is StateType.COMPLETED:
        raise InvalidInput(f"incident {incident_id}: release {release_id} has completed since; nothing to replay")
    why = f"replay of incident {incident_id} ({incident['task'] or incident['flow']}: {incident['error'][:200]})"
    try:  # claimed first: of two replays asked at once, one goes on
        ledger.set_incident_status(incident_id, "replayed", expected=(incident["status"],))
    except ConflictError:
        raise InvalidInput(f"incident {incident_id} was replayed or acknowledged meanwhile") from None
    try:
        for plan in ledger.latest_plans(release_id):
            if plan.state is PlanState.FAILED:
                moved, record = plan.transition(PlanState.PROMOTING, actor=requested_by, reason=why)
                ledger.save_plan(moved, record)
        resubmit(run, action="replayed", actor=requested_by, ledger=ledger, reason=why,
                 detail={"incident_id": incident_id})
    except BaseException:
        ledger.set_incident_status(incident_id, incident["status"], expected=("replayed",))
        raise
    refresh_incident_views(release_id, ledger)
    return f"replaying incident {incident_id} in run {run.name}"


ACKNOWLEDGEABLE = "open"


@flow(name="acknowledge-incident", log_prints=True)
def acknowledge_incident(incident_id: int, requested_by: str, comment: str = "") -> str:
    """Acknowledge an incident: someone owns it and it will not be replayed as it is.

    The incident becomes ``acknowledged`` and the ledger keeps an ``acknowledged`` action on its
    release with the actor and the comment; the incidents artifact and the release's status are
    refreshed. An acknowledged incident can still be replayed later.

    Args:
        incident_id: the incident.
        requested_by: who acknowledges (audited).
        comment: why, or what is being done about it.

    Returns:
        What was done.

    Raises:
        NotFound: no such incident.
        InvalidInput: no identity given, or the incident is not open (already acknowledged or replayed).
    """
    if not requested_by.strip():
        raise InvalidInput("requested_by: give the identity acknowledging the incident (e.g. user:alice)")
    ledger = Ledger()
    incident = ledger.incident(incident_id)
    if incident["status"] != ACKNOWLEDGEABLE:
        raise InvalidInput(f"incident {incident_id} was already {incident['status']}; only an open incident "
                           "can be acknowledged")
    release_id = incident["release_id"]
    stage = incident["task"] or incident["flow"]
    reason = f"incident {incident_id} ({stage}) acknowledged by {requested_by}" + (f": {comment}" if comment else "")
    try:
        ledger.set_incident_status(incident_id, "acknowledged", expected=(ACKNOWLEDGEABLE,))
    except ConflictError:
        raise InvalidInput(f"incident {incident_id} was replayed or acknowledged meanwhile") from None
    # operations are kept per release; an incident outside any release is kept under "-"
    ledger.record_action(release_id or "-", action="acknowledged", actor=requested_by, reason=reason,
                         detail={"incident_id": incident_id, "stage": stage, "comment": comment})
    refresh_incident_views(release_id, ledger)
    get_run_logger().info(reason)
    return reason


__all__ = [
    "acknowledge_incident",
    "cancel_release",
    "replay_incident",
    "retry_release",
]
