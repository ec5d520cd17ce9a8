"""Operations on a release from outside its run: recover, retry, cancel, replay.

A release is one top-level flow run. Everything here acts on that run through Prefect, and on the
plans through the state machine, and writes what it did to the ledger with the actor who asked:

- :func:`recover_release` (deployment ``recover-release``, run by automations that ``delivery up``
  creates): a release run marked Crashed (its process died: the worker saw it exit, or its
  heartbeats stopped) is resubmitted, Crashed -> Scheduled ``AwaitingRetry``, at most
  ``DELIVERY_RECOVERY_ATTEMPTS`` times (default 3) per run, each as ``system:recovery``; past the
  bound an incident is raised. A run that Prefect's server failed because its approval wait
  expired has its waiting plan rejected for timeout, as ``system:timeout``.
- :func:`retry_release`: a Failed environment goes back to Promoting (a new attempt) and the
  release run is resubmitted; it continues from its stored stage results.
- :func:`cancel_release`: a waiting or stuck release ends: its run is cancelled, its open plans
  rejected (or failed, when promoting), and the environment lock its dead process held freed.
- :func:`replay_incident`: the run an incident belongs to is resubmitted (after moving a Failed
  environment back to Promoting), whatever stage it failed in.

Each resubmission continues the same flow run, so the release keeps one run, one idempotency key
and one trace; its persisted stages come back Cached.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.concurrency.sync import concurrency
from prefect.states import AwaitingRetry, Cancelled, Cancelling, Crashed, Failed

from delivery.approvals import TIMEOUT_ACTOR, timeout_reason
from delivery.errors import ConflictError, InvalidInput, NotFound
from delivery.events import EventName, emit
from delivery.ledger import Ledger
from delivery.plan import PlanState, PromotionCause, ReleasePlan
from delivery.settings import HEARTBEAT_SECONDS
from flows.locks import ensure_limit, free_dead_leases
from flows.promotion import load_delivery_config, publish_status
from tasks.approval import decide, supersede_reason, superseded_by
from tasks.incidents import publish_incidents, refresh_incident_views

RECOVERY_ACTOR = "system:recovery"
RELEASE_FLOW = "release"
EXPIRED_WAIT = "paused and never resumed"  # the message Prefect's server gives an expired suspension
FINISHED = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
ENDED = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED}  # what cancel leaves alone
# A run whose process gave no sign of life (heartbeat, start) for this long has no process: a live
# one beats every HEARTBEAT_SECONDS.
GONE_AFTER_SECONDS = HEARTBEAT_SECONDS + 15
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


# --------------------------------------------------------------------------- reading runs and plans


def release_of(run: FlowRun) -> str | None:
    """The release id a flow run belongs to (its ``release:<id>`` tag)."""
    return next((tag.split(":", 1)[1] for tag in run.tags or [] if tag.startswith("release:")), None)


def release_runs(release_id: str) -> list[FlowRun]:
    """The release's top-level runs of the release flow, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RELEASE_FLOW])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"release:{release_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )


def _describe(plans: list[ReleasePlan]) -> str:
    return ", ".join(f"{plan.environment} {plan.state.value}" for plan in plans) or "nothing planned yet"


def _the_run(release_id: str) -> FlowRun:
    runs = release_runs(release_id)
    if not runs:
        raise NotFound(f"release {release_id}: no release run found")
    return runs[0]


# --------------------------------------------------------------------------- acting


def resubmit(run: FlowRun, *, action: str, actor: str, reason: str, ledger: Ledger,
             detail: dict[str, Any] | None = None) -> None:
    """Put a finished release run back on the schedule (``AwaitingRetry``) and write why to the ledger."""
    release_id = release_of(run) or "unknown"
    ledger.record_action(release_id, action=action, actor=actor, reason=reason,
                         detail={"flow_run_id": str(run.id), **(detail or {})})
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, AwaitingRetry(message=f"{action} by {actor}: {reason}"), force=True)
    get_run_logger().info("release %s: run %s %s by %s (%s)", release_id, run.name, action, actor, reason)


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
        if run.state.type is StateType.RUNNING and _latest_beat(client, run) is None:
            # its worker may send no heartbeats at all (one not started by `delivery up`): silence proves nothing
            logger.info("release run %s: left alone: it never sent a heartbeat", run.name)
            return "not crashed: it never sent a heartbeat, so its silence proves nothing"
        silent = (datetime.now(UTC) - _last_sign_of_life(client, run)).total_seconds()
        if silent < gone_after:
            logger.info("release run %s: not crashed: a sign of life %.0f s ago", run.name, silent)
            return f"not crashed: its process gave a sign of life {silent:.0f} s ago"
        client.set_flow_run_state(run.id, Crashed(
            message=f"no heartbeat for {max(silent_for, int(silent))} s: the process running this release died"))
    logger.warning("release run %s: no heartbeat for %.0f s: marked Crashed", run.name, silent)
    return MARKED_CRASHED


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
        raise InvalidInput(f"release {release_id}: no Failed environment{where} to retry ({_describe(plans)})")
    run = _the_run(release_id)
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
                           f"({_describe(plans)})")
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


def _last_sign_of_life(client: SyncPrefectClient, run: FlowRun) -> datetime:
    """When the run's process last showed it was alive: its latest heartbeat, or when it (re)started."""
    started = [s.timestamp for s in client.read_flow_run_states(run.id)
               if s.type in (StateType.PENDING, StateType.RUNNING) and s.timestamp is not None]
    beat = _latest_beat(client, run)
    moments = [*started, *([beat] if beat else [])]
    return max(moments) if moments else datetime.now(UTC)


def _latest_beat(client: SyncPrefectClient, run: FlowRun) -> datetime | None:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter

    beats = client.read_events(EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                                           resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                                           order=EventOrder.DESC), limit=1).events
    return beats[0].occurred if beats else None


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
            silent = (datetime.now(UTC) - _last_sign_of_life(client, current)).total_seconds()
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
    run = _the_run(release_id)
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
    "RECOVERY_ACTOR",
    "acknowledge_incident",
    "cancel_release",
    "expire_approvals",
    "recover",
    "recover_release",
    "release_of",
    "release_runs",
    "replay_incident",
    "resubmit",
    "retry_release",
    "sweep_releases",
]
