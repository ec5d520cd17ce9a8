"""Every environment at a glance: what runs where, since when, who approved it, and whether it drifted.

:func:`environment_overview` reads the ledger alone (plans, transitions, approvals, the
operations on releases, and the sync states the drift check keeps) and returns one
:class:`OverviewRow` per environment of the promotion path and application planned there:

- the release and revision running now: the plan of that environment and application that most
  recently reached ``Deployed``. A later attempt that failed was rolled back to the last healthy
  revision (``healthy/<env>/<app>``), which is what that plan deployed, so it still runs; the
  later attempt is shown beside it (``last_attempt``);
- since when (the time of its move to ``Deployed``, or of a later on-demand rollback that
  restored it), and who approved it (the approvals that counted);
- health: ``Healthy`` (its health gates passed, and any later failure was rolled back),
  ``Progressing`` (a newer plan is being promoted), ``Degraded`` (an on-demand rollback's
  rollouts were not healthy), ``Unknown`` (a rollback started and has not finished) or
  ``Missing`` (nothing deployed);
- the environment's sync state from the latest drift check (``Synced``, ``OutOfSync`` when it
  drifted, ``Degraded`` when drift persisted), since when, and when the last check ran. The
  overview shows it as the drift state the issue names (:func:`drift_text`: ``OutOfSync`` reads
  ``Drifted``); the sync state keeps its name in the ledger, the events and the drift check.

An environment where nothing was ever deployed has one row with ``deployed`` false.
:func:`render_overview` turns the rows into the markdown of the ``environments`` artifact
(``tasks/overview.py``); ``delivery status`` prints the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from delivery.approvals import counted_approvers
from delivery.ledger import ROLLBACK_FINISHED, ROLLBACK_STARTED, Ledger, OnDemandRollback
from delivery.models import Model
from delivery.plan import PlanState, ReleasePlan
from delivery.sync_state import SyncState, SyncStatus
from delivery.sync_state_store import SyncStateStore


class Health(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    UNKNOWN = "Unknown"
    MISSING = "Missing"


class LastAttempt(Model):
    """A plan newer than the running one that did not (yet) replace it."""

    release_id: str
    revision: int
    attempt: int
    state: PlanState
    reason: str = ""
    at: datetime = Field(description="When it last moved")
    rolled_back: bool = Field(default=False, description="Its failure was rolled back to the running revision")


class OverviewRow(Model):
    """One environment and application, as the overview shows it."""

    environment: str
    app: str | None = Field(default=None, description="None: nothing was ever planned in the environment")
    deployed: bool = False
    release_id: str | None = None
    revision: int | None = None
    trace_id: str | None = None
    since: datetime | None = Field(default=None, description="When it was deployed, or restored by a rollback")
    approved_by: list[str] = Field(default_factory=list)
    health: Health = Health.MISSING
    health_detail: str = ""
    last_attempt: LastAttempt | None = None
    sync_state: SyncState | None = Field(default=None, description="None: never checked for drift")
    sync_reason: str = ""
    sync_since: datetime | None = None
    last_check: datetime | None = None


# --------------------------------------------------------------------------- computing the rows


def _utc(value: datetime) -> datetime:
    """SQLite gives times back without their zone; the ledger writes them in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _deployed_at(ledger: Ledger, plan: ReleasePlan) -> datetime:
    moves = [t.at for t in ledger.transitions(plan.plan_id) if t.to_state is PlanState.DEPLOYED]
    return _utc(moves[-1] if moves else plan.updated_at)


def _rollbacks(ledger: Ledger, action: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The promotion rollbacks of one kind, by (plan id, attempt)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for row in ledger.actions(action=action):
        detail = row["detail"]
        if "plan_id" in detail:
            found[(detail["plan_id"], int(detail.get("attempt") or 1))] = {**detail, "at": _utc(row["at"])}
    return found


def _last_attempt(ledger: Ledger, plan: ReleasePlan, finished: dict[tuple[str, int], Any]) -> LastAttempt:
    last = ledger.last_transition(plan.plan_id)
    return LastAttempt(
        release_id=plan.release_id, revision=plan.revision, attempt=plan.attempt, state=plan.state,
        reason=last.reason if last else "", at=_utc(last.at if last else plan.updated_at),
        rolled_back=(plan.plan_id, plan.attempt) in finished,
    )


def _health(latest: ReleasePlan | None, running: ReleasePlan | None, *, started: dict, finished: dict,
            on_demand: OnDemandRollback | None) -> tuple[Health, str]:
    if latest is not None and latest is not running:
        key = (latest.plan_id, latest.attempt)
        if latest.state is PlanState.PROMOTING:
            return Health.PROGRESSING, f"{latest.release_id} r{latest.revision} is being promoted"
        if latest.state is PlanState.FAILED and key in started and key not in finished:
            return Health.UNKNOWN, f"the rollback of {latest.release_id} r{latest.revision} has not finished"
    if running is None:
        return Health.MISSING, "nothing deployed"
    if on_demand is not None and not on_demand.healthy:
        return Health.DEGRADED, f"the rollback by {on_demand.actor} ended with unhealthy rollouts"
    if on_demand is not None:
        return Health.HEALTHY, f"restored by {on_demand.actor}: {on_demand.reason}"
    return Health.HEALTHY, "health gates passed"


def _app_row(ledger: Ledger, environment: str, app: str, plans: Sequence[ReleasePlan], *,
             started: dict, finished: dict, rollbacks: Sequence[OnDemandRollback]) -> OverviewRow:
    deployed = [(plan, _deployed_at(ledger, plan)) for plan in plans if plan.state is PlanState.DEPLOYED]
    running, since = max(deployed, key=lambda pair: pair[1]) if deployed else (None, None)
    latest = max(plans, key=lambda plan: (plan.updated_at, plan.created_at))
    mine = [r for r in rollbacks if r.environment == environment and r.app == app]
    on_demand = mine[-1] if mine and (since is None or mine[-1].at > since) else None
    if on_demand is not None and on_demand.restored_from is None:
        running = None  # nothing was healthy: the rollback removed the application
    health, detail = _health(latest, running, started=started, finished=finished, on_demand=on_demand)
    newer = latest is not running and (since is None or _utc(latest.updated_at) > since)
    row = OverviewRow(
        environment=environment, app=app, health=health, health_detail=detail,
        last_attempt=_last_attempt(ledger, latest, finished) if newer else None,
    )
    if running is None:
        return row
    return row.model_copy(update={
        "deployed": True, "release_id": running.release_id, "revision": running.revision,
        "trace_id": running.trace_id, "since": on_demand.at if on_demand else since,
        "approved_by": counted_approvers(running.approvals),
    })


def _with_sync(row: OverviewRow, status: SyncStatus | None) -> OverviewRow:
    if status is None:
        return row
    return row.model_copy(update={"sync_state": status.state, "sync_reason": status.reason,
                                  "sync_since": status.since, "last_check": status.checked_at})


def _environments(path: Iterable[str] | None, plans: Sequence[ReleasePlan], synced: Iterable[str]) -> list[str]:
    """The path's environments; without one, those the ledger knows, in the order first planned."""
    if path is not None:
        return list(dict.fromkeys(path))
    return list(dict.fromkeys([plan.environment for plan in plans] + sorted(synced)))


def environment_overview(ledger: Ledger, *, path: Iterable[str] | None = None) -> list[OverviewRow]:
    """Compute the overview from the ledger: one row per environment and application.

    Args:
        ledger: the ledger (its database also holds the drift check's sync states).
        path: the promotion path, in order; default: the environments the ledger knows, in the order
            they were first planned, then those only the drift check knows.

    Returns:
        The rows, by environment in path order, then by application name. An environment where
        nothing was planned has one row, with no application and ``deployed`` false.
    """
    plans = ledger.plans()
    sync = {status.environment: status for status in SyncStateStore(ledger.engine).all()}
    started, finished = _rollbacks(ledger, ROLLBACK_STARTED), _rollbacks(ledger, ROLLBACK_FINISHED)
    rollbacks = [r.model_copy(update={"at": _utc(r.at)}) for r in ledger.on_demand_rollbacks() if r.at]
    rows: list[OverviewRow] = []
    for environment in _environments(path, plans, sync):
        by_app: dict[str, list[ReleasePlan]] = {}
        for plan in plans:
            if plan.environment == environment:
                by_app.setdefault(plan.app, []).append(plan)
        env_rows = [_app_row(ledger, environment, app, by_app[app], started=started, finished=finished,
                             rollbacks=rollbacks) for app in sorted(by_app)]
        rows += [_with_sync(row, sync.get(environment)) for row in env_rows or [OverviewRow(environment=environment)]]
    return rows


# --------------------------------------------------------------------------- markdown


def format_time(value: datetime | None) -> str:
    """A time as the status views print it (UTC, to the second), or ``-``."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def markdown_cell(text: str) -> str:
    """Text made safe for one markdown table cell (pipes escaped, one line, bounded)."""
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def attempt_text(attempt: LastAttempt | None) -> str:
    """The newer attempt in words, e.g. ``rel-2 r1 Failed (rolled back): HealthCheckFailed: ...``."""
    if attempt is None:
        return "-"
    rolled = " (rolled back)" if attempt.rolled_back else ""
    reason = f": {attempt.reason}" if attempt.reason else ""
    return f"{attempt.release_id} r{attempt.revision} {attempt.state.value}{rolled}{reason}"


# The overview's words for the sync states: a person reads "Drifted", the drift check and its events say OutOfSync.
_DRIFT_WORDS = {SyncState.SYNCED: "Synced", SyncState.OUT_OF_SYNC: "Drifted", SyncState.DEGRADED: "Degraded"}
OVERVIEW_COLUMNS = ("environment", "app", "release", "revision", "since", "approved by", "health", "drift",
                    "drift since", "last check", "last attempt")


def drift_text(state: SyncState | None) -> str:
    """A sync state as the overview shows it: ``Synced``, ``Drifted``, ``Degraded``, or ``never checked`` for None."""
    return _DRIFT_WORDS[state] if state else "never checked"


def render_overview(rows: Sequence[OverviewRow]) -> str:
    """The markdown of the ``environments`` artifact: one table row per environment and application."""
    lines = ["# Environments", "",
             "| " + " | ".join(OVERVIEW_COLUMNS) + " |",
             "|" + "---|" * len(OVERVIEW_COLUMNS)]
    for row in rows:
        release = row.release_id if row.deployed else "not deployed"
        lines.append(
            f"| {row.environment} | {row.app or '-'} | {markdown_cell(release or '-')} | "
            f"{row.revision if row.revision is not None else '-'} | {format_time(row.since)} | "
            f"{markdown_cell(', '.join(row.approved_by)) or '-'} | {row.health.value} | "
            f"{drift_text(row.sync_state)} | {format_time(row.sync_since)} | "
            f"{format_time(row.last_check)} | {markdown_cell(attempt_text(row.last_attempt))} |")
    lines += ["", "health: `Healthy`, `Progressing` (a newer plan is being promoted), `Degraded`, `Unknown`, "
              "`Missing` (nothing deployed). drift, from the latest drift check: `Synced` (live matches Git), "
              "`Drifted` (the check found differences and reconciled them; its events say `OutOfSync`), "
              "`Degraded` (the drift persisted; alerted); drift since: when it last changed."]
    return "\n".join(lines) + "\n"


__all__ = ["OVERVIEW_COLUMNS", "Health", "LastAttempt", "OverviewRow", "attempt_text", "drift_text",
           "environment_overview", "format_time", "markdown_cell", "render_overview"]
