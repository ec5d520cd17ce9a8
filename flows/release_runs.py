"""A release's run: finding it, telling whether its process lives, and putting it back on the schedule.

A release is one top-level run of the ``release`` flow, tagged ``release:<id>``. Recovery
(:mod:`flows.recovery`) and the operations asked from outside the run (:mod:`flows.operations`)
act on it through these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import AwaitingRetry

from delivery.errors import NotFound
from delivery.ids import RELEASE_FLOW, release_of_tags, release_tag
from delivery.ledger import Ledger
from delivery.plan import ReleasePlan
from delivery.settings import HEARTBEAT_SECONDS

# A run whose process gave no sign of life (heartbeat, start) for this long has no process: a live one
# beats every HEARTBEAT_SECONDS, but under load its beats reach the server late (20 releases at once on
# SQLite, bench/concurrency.py: live runs seen silent for 57-88 s at one missed beat plus 15 s, and
# resubmitted beside their own process). Two missed beats plus 15 s, the automation's silence too.
GONE_AFTER_SECONDS = 2 * HEARTBEAT_SECONDS + 15


# --------------------------------------------------------------------------- finding it


def release_of(run: FlowRun) -> str | None:
    """The release id a flow run belongs to (its ``release:<id>`` tag)."""
    return release_of_tags(run.tags)


def release_runs(release_id: str) -> list[FlowRun]:
    """The release's top-level runs of the release flow, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RELEASE_FLOW])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[release_tag(release_id)])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )


def describe_plans(plans: list[ReleasePlan]) -> str:
    """The plans' environments and states in words (``dev Deployed, prod Failed``), for messages."""
    return ", ".join(f"{plan.environment} {plan.state.value}" for plan in plans) or "nothing planned yet"


def latest_release_run(release_id: str) -> FlowRun:
    """The release's newest release run.

    Raises:
        NotFound: the release has no run.
    """
    runs = release_runs(release_id)
    if not runs:
        raise NotFound(f"release {release_id}: no release run found")
    return runs[0]


# --------------------------------------------------------------------------- is its process alive


def last_sign_of_life(client: SyncPrefectClient, run: FlowRun) -> datetime:
    """When the run's process last showed it was alive: its latest heartbeat, or when it (re)started."""
    started = [s.timestamp for s in client.read_flow_run_states(run.id)
               if s.type in (StateType.PENDING, StateType.RUNNING) and s.timestamp is not None]
    beat = latest_beat(client, run)
    moments = [*started, *([beat] if beat else [])]
    return max(moments) if moments else datetime.now(UTC)


def latest_beat(client: SyncPrefectClient, run: FlowRun) -> datetime | None:
    """When the run's process last sent a heartbeat event (None: it never sent one)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter

    beats = client.read_events(EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                                           resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                                           order=EventOrder.DESC), limit=1).events
    return beats[0].occurred if beats else None


# --------------------------------------------------------------------------- acting on it


def resubmit(run: FlowRun, *, action: str, actor: str, reason: str, ledger: Ledger,
             detail: dict[str, Any] | None = None) -> None:
    """Put a finished release run back on the schedule (``AwaitingRetry``) and write why to the ledger."""
    release_id = release_of(run) or "unknown"
    ledger.record_action(release_id, action=action, actor=actor, reason=reason,
                         detail={"flow_run_id": str(run.id), **(detail or {})})
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, AwaitingRetry(message=f"{action} by {actor}: {reason}"), force=True)
    get_run_logger().info("release %s: run %s %s by %s (%s)", release_id, run.name, action, actor, reason)


__all__ = [
    "GONE_AFTER_SECONDS",
    "describe_plans",
    "last_sign_of_life",
    "latest_beat",
    "latest_release_run",
    "release_of",
    "release_runs",
    "resubmit",
]
