"""Recovery: a release run that ended abnormally is brought back, or settled.

- :func:`recover_release` (deployment ``recover-release``, run by automations that ``delivery up``
  creates): a release run marked Crashed (its process died: the worker saw it exit, or its
  heartbeats stopped) is resubmitted, Crashed -> Scheduled ``AwaitingRetry``, at most
  ``DELIVERY_RECOVERY_ATTEMPTS`` times (default 3) per run, each as ``system:recovery``; past the
  bound an incident is raised. A run that Prefect's server failed because its approval wait
  expired has its waiting plan rejected for timeout, as ``system:timeout``.
- :func:`sweep_releases` (deployment ``recovery-sweep``, every minute) does the same for what the
  automations missed, and marks a silent running run Crashed.

Each resubmission continues the same flow run (:func:`flows.release_runs.resubmit`), so the release
keeps one run, one idempotency key and one trace; its persisted stages come back Cached. The
operations a person asks for (retry, cancel, replay) are in :mod:`flows.operations`.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.concurrency.sync import concurrency
from prefect.states import AwaitingRetry, Cancelled, Crashed, Failed

from delivery.approvals import TIMEOUT_ACTOR, timeout_reason
from delivery.events import EventName, emit
from delivery.ids import RELEASE_FLOW
from delivery.ledger import Ledger
from delivery.plan import PlanState, PromotionCause
from flows.promotion import load_delivery_config
from flows.release_runs import (
    GONE_AFTER_SECONDS,
    last_sign_of_life,
    latest_beat,
    release_of,
    resubmit,
)
from tasks.approval import decide
from tasks.incidents import publish_incidents
from tasks.locks import ensure_limit
from tasks.summary import publish_status

RECOVERY_ACTOR = "system:recovery"
EXPIRED_WAIT = "paused and never resumed"  # the message Prefect's server gives an expired suspension
PENDING_GONE_AFTER_SECONDS = 600
MARKED_CRASHED = "marked Crashed"
RECOVERY_LOCK = "delivery-recovery"
# How a process exit is reported: by the flow run's runner at once, and by its worker again later.
RUNNER_EXIT_REPORT = "Process exited with status code"
WORKER_EXIT_REPORT = "Flow run infrastructure exited with non-zero status code"
# How far back, and how many release runs, the sweep looks at.
SWEEP_DAYS = 7
SWEEP_LIMIT = 200
# The operations that decide whether a crashed run may be resubmitted: the latest one wins.
_RESUMING = ("retried", "replayed")


def max_resubmissions() -> int:
    """How many times one crashed release run is resubmitted (``DELIVERY_RECOVERY_ATTEMPTS``, default 3)."""
    return int(os.environ.get("DELIVERY_RECOVERY_ATTEMPTS", "3"))


def _raise_incident(run: FlowRun, release_id: str, ledger: Ledger, error: str) -> int:
    request = (run.parameters or {}).get("request") or {}
    trace_id = request.get("trace_id") if isinstance(request, dict) else None
    envelope = {"flow": RELEASE_FLOW, "flow_run_id": str(run.id),
                "deployment_id": str(run.deployment_id) if run.deployment_id else None, "task": None,
                "attempts": run.run_count, "parameters": run.parameters, "trace_id": trace_id,
                "error_type": "Crashed", "error": error, "traceback": ""}
    incident_id = ledger.record_incident(flow=RELEASE_FLOW, error=error, envelope=envelope, release_id=release_id,
                                         trace_id=trace_id)
    if trace_id:
        emit(EventName.INCIDENT_RAISED, release_id=release_id, trace_id=trace_id,
             payload={"incident_id": incident_id, "task": None, "error": error})
    publish_incidents(ledger)
    return incident_id


def expire_approvals(release_id: str, ledger: Ledger) -> list[str]:
    """Reject, as timed out, the release's plans still waiting for approval; return their environments."""
    config = load_delivery_config()
    expired = []
    for plan in ledger.latest_plans(release_id):
        if plan.state is PlanState.PENDING_APPROVAL:
            rules = config.environment(plan.environment).approval
            decide(plan, PlanState.REJECTED, actor=TIMEOUT_ACTOR, reason=timeout_reason(plan.approvals, rules),
                   cause=PromotionCause.TIMEOUT)
            expired.append(plan.environment)
    return expired


def _cancelled(ledger: Ledger, release_id: str) -> bool:
    """Whether the release's latest operation from outside is a cancel (a retry or replay after it reopens it)."""
    latest = [a for a in ledger.actions(release_id=release_id) if a["action"] in ("cancelled", *_RESUMING)]
    return bool(latest) and latest[-1]["action"] == "cancelled"


@flow(name="recover-release", log_prints=True)
def recover_release(flow_run_id: str, silent_for: int | None = None) -> str:
    """Bring a release run that ended abnormally back, or settle it (run by automations).

    Args:
        flow_run_id: the release run (from the triggering event).
        silent_for: set by the heartbeat automation: the run's heartbeats stopped this many
            seconds ago. It is marked Crashed (and so resubmitted) only if it still claims to be
            Running or Pending and gave no sign of life since: a suspended run's process may beat
            once more just after it suspended, which must not crash the wait.

    Returns:
        What was done, in words.
    """
    return recover(UUID(flow_run_id), silent_for=silent_for)


def recover(flow_run_id: UUID, *, silent_for: int | None = None, gone_after: float = GONE_AFTER_SECONDS) -> str:
    """Decide about one release run under the recovery lock (see :func:`recover_release`).

    The automations and the sweep may ask about the same run at the same moment: the lock and a
    fresh read of the run's state make the second one find the run already resubmitted.
    """
    with _recovery_lock():
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        release_id = release_of(run)
        if release_id is None or run.state is None:
            return f"run {flow_run_id} is not a release run"
        if silent_for is not None:
            return _crash_if_gone(run, silent_for, gone_after)
        return _settle(run, release_id, Ledger())


def _settle(run: FlowRun, release_id: str, ledger: Ledger) -> str:
    state = run.state
    if state.type is StateType.CRASHED and (late := _late_exit_report(run)) is not None:
        return late
    if state.type is StateType.CRASHED and _cancelled(ledger, release_id):
        # it crashed before (or while) someone cancelled it: settle it, never bring it back
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelled(message=f"crashed after its release was cancelled "
                                                                 f"({state.message or 'no message'})"), force=True)
        return "not resubmitted: the release was cancelled"
    if state.type is StateType.CRASHED:
        done = [a for a in ledger.actions(release_id=release_id, action="resubmitted")
                if a["detail"].get("flow_run_id") == str(run.id)]
        bound = max_resubmissions()
        if len(done) >= bound:
            incident = _raise_incident(run, release_id, ledger,
                                       f"the release run crashed {len(done) + 1} times; resubmitted {len(done)} "
                                       f"of {bound} allowed times; last: {state.message or 'no message'}")
            ledger.record_action(release_id, action="recovery-exhausted", actor=RECOVERY_ACTOR,
                                 reason=f"crashed past the bound of {bound} resubmissions; incident {incident}",
                                 detail={"flow_run_id": str(run.id), "incident_id": incident})
            with get_client(sync_client=True) as client:  # settled: no sweep raises the incident again
                client.set_flow_run_state(run.id, Failed(
                    message=f"crashed {len(done) + 1} times; recovery gave up: incident {incident}"), force=True)
            publish_status(release_id, ledger)
            return f"gave up after {len(done)} resubmissions: incident {incident}"
        resubmit(run, action="resubmitted", actor=RECOVERY_ACTOR, ledger=ledger,
                 reason=f"the run crashed ({state.message or 'no message'}); resubmission {len(done) + 1} of {bound}",
                 detail={"attempt": len(done) + 1})
        publish_status(release_id, ledger)
        return f"resubmitted ({len(done) + 1} of {bound})"
    if state.type is StateType.FAILED and EXPIRED_WAIT in (state.message or ""):
        expired = expire_approvals(release_id, ledger)
        if expired:
            publish_status(release_id, ledger)
        return f"approval timed out in {', '.join(expired) or 'no environment still waiting'}"
    return f"nothing to do: the run is {state.name}"


def _late_exit_report(run: FlowRun) -> str | None:
    """Answer a crash that only repeats one already recovered; None when the crash is news.

    When a flow-run process dies, its runner reports Crashed at once and the worker reports the
    same exit again up to seconds later. By then recovery may have resubmitted the run, and the
    late report overwrites the resubmission (or the new process's start). Resubmitting again
    would start a second process for the same run. So: a worker's exit report that follows a
    runner's report recovery already answered is not a crash of its own. When it overwrote the
    resubmission (no process yet) the resubmission is restored; when it overwrote a new process's
    start, that process moves the run on by itself, and only a run still Crashed
    ``GONE_AFTER_SECONDS`` later is treated as crashed (the sweep comes back to it).
    """
    with get_client(sync_client=True) as client:
        states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
    current, earlier = states[-1], states[:-1]
    if not (current.message or "").startswith(WORKER_EXIT_REPORT):
        return None
    crashes = [i for i, s in enumerate(earlier) if s.type is StateType.CRASHED]
    if not crashes or not (earlier[crashes[-1]].message or "").startswith(RUNNER_EXIT_REPORT):
        return None
    if not any(s.name == "AwaitingRetry" for s in earlier[crashes[-1] + 1:]):
        return None  # the runner's report was not answered yet: this crash is the one to answer
    overwritten = earlier[-1]
    if overwritten.type is StateType.SCHEDULED:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, AwaitingRetry(
                message="resubmission restored: the worker's late report of an exit already recovered had "
                        "overwritten it"), force=True)
        return "restored the resubmission a late exit report overwrote"
    if (datetime.now(UTC) - current.timestamp).total_seconds() < GONE_AFTER_SECONDS:
        return (f"left alone: a late report of an exit already recovered overwrote {overwritten.name}; "
                "the new process moves the run on")
    return None


@flow(name="recovery-sweep", log_prints=True)
def sweep_releases() -> list[str]:
    """Recover what the automations missed (deployment ``recovery-sweep``, every minute).

    Events are not enough on their own: a restarted Prefect server's trigger service holds state
    events of runs that were alive before the restart for up to 15 minutes, and an automation's
    action can fail under load. The sweep looks at every release run of the last
    ``SWEEP_DAYS`` that is Crashed, Running or Pending, or Failed by an expired approval wait,
    and recovers it as the automations would: a silent Running run is marked Crashed and
    resubmitted at once.

    Returns:
        What was done, one line per run acted on.
    """
    since = datetime.now(UTC) - timedelta(days=SWEEP_DAYS)
    types = [StateType.CRASHED, StateType.RUNNING, StateType.PENDING, StateType.FAILED]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RELEASE_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
                                          expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            limit=SWEEP_LIMIT)
    ledger = Ledger()
    done = []
    for run in runs:
        release_id = release_of(run)
        if release_id is None or run.state is None:
            continue
        if run.state.type is StateType.FAILED and not (
                EXPIRED_WAIT in (run.state.message or "")
                and any(p.state is PlanState.PENDING_APPROVAL for p in ledger.latest_plans(release_id))):
            continue
        if run.state.type in (StateType.RUNNING, StateType.PENDING):
            # a Pending run's process may still be starting: it gets longer before it counts as gone
            gone_after = GONE_AFTER_SECONDS if run.state.type is StateType.RUNNING else PENDING_GONE_AFTER_SECONDS
            if recover(run.id, silent_for=int(gone_after), gone_after=gone_after) != MARKED_CRASHED:
                continue
        done.append(f"{run.name} ({release_id}): {recover(run.id)}")
    for line in done:
        get_run_logger().warning(line)
    return done


def _recovery_lock() -> AbstractContextManager[None]:
    """One recovery decision at a time (a Prefect global concurrency limit, created when missing)."""
    return concurrency(ensure_limit(RECOVERY_LOCK), occupy=1, timeout_seconds=120, lease_duration=60, strict=True)


def _crash_if_gone(run: FlowRun, silent_for: int, gone_after: float = GONE_AFTER_SECONDS) -> str:
    """Mark a silent release run Crashed when it still claims to run and its process is gone."""
    logger = get_run_logger()
    if run.state is None or run.state.type not in (StateType.RUNNING, StateType.PENDING):
        logger.info("release run %s: not crashed: it is %s and holds no process", run.name, run.state_name)
        return f"not crashed: the run is {run.state_name}, it holds no process"
    with get_client(sync_client=True) as client:
        if run.state.type is StateType.RUNNING and latest_beat(client, run) is None:
            # its worker may send no heartbeats at all (one not started by `delivery up`): silence proves nothing
            logger.info("release run %s: left alone: it never sent a heartbeat", run.name)
            return "not crashed: it never sent a heartbeat, so its silence proves nothing"
        silent = (datetime.now(UTC) - last_sign_of_life(client, run)).total_seconds()
        if silent < gone_after:
            logger.info("release run %s: not crashed: a sign of life %.0f s ago", run.name, silent)
            return f"not crashed: its process gave a sign of life {silent:.0f} s ago"
        client.set_flow_run_state(run.id, Crashed(
            message=f"no heartbeat for {max(silent_for, int(silent))} s: the process running this release died"))
    logger.warning("release run %s: no heartbeat for %.0f s: marked Crashed", run.name, silent)
    return MARKED_CRASHED


__all__ = [
    "EXPIRED_WAIT",
    "RECOVERY_ACTOR",
    "WORKER_EXIT_REPORT",
    "expire_approvals",
    "recover",
    "recover_release",
    "sweep_releases",
]
