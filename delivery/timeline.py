"""A release's whole story on one timeline: the ledger's decisions, Git's commits and Prefect's events.

Each source gives entries of one shape (:class:`TimelineEntry`: when, where from, what, who, in
which environment, in words); :func:`merge` orders them. The ledger and Git are kept as long as the
project keeps them, so a timeline without Prefect's events (kept 7 days by default) still tells
every decision and every commit.

- :func:`ledger_entries`: plan transitions, approvals counted and refused (with the reason),
  policy evaluations, incidents, and the release's actions (resubmissions, retries, cancels,
  replays, rollbacks, its pull request's check results and merge, drift reconciles of the
  environments it runs in), each with its actor and reason;
- :func:`commit_entries`: the commits carrying the release's ``Release-Id`` trailer, in the
  application repository and in the GitOps repository;
- :func:`event_entries`: the ``delivery.*`` events of the release's trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import Field

from delivery.events import trace_resource
from delivery.ledger import Ledger
from delivery.models import Model

Source = Literal["ledger", "git", "events"]


class TimelineEntry(Model):
    """One thing that happened to a release."""

    at: datetime = Field(description="When it happened (UTC)")
    source: Source = Field(description="Where it is recorded: the ledger, Git, or Prefect's events")
    kind: str = Field(description="What it is, e.g. transition, approval, approval-refused, commit, event")
    summary: str = Field(description="One line a person reads")
    actor: str | None = Field(default=None, description="Who did it, when recorded")
    environment: str | None = None


class Commit(Protocol):
    """A commit found by its trailers (``blocks.git_repository.TrailedCommit``)."""

    sha: str
    at: datetime
    author: str
    subject: str
    trailers: dict[str, list[str]]


class TraceEvent(Model):
    """One ``delivery.*`` event of a release's trace, as Prefect's events API gives it."""

    event: str
    occurred: datetime
    release_id: str | None = None
    environment: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> TraceEvent:
        """From one event of the API's JSON (``POST /api/events/filter``)."""
        resource = event.get("resource") or {}
        return cls(event=event["event"], occurred=event["occurred"], release_id=resource.get("prefect.resource.name"),
                   environment=resource.get("delivery.environment"))


# How the events API is asked for a trace's events (the server answers 50 a page).
TRACE_PAGE_SIZE = 50


def trace_events_filter(trace_id: str) -> dict[str, Any]:
    """The events API's filter for a trace's ``delivery.*`` events, oldest first."""
    return {"related": {"id": [trace_resource(trace_id)]}, "event": {"prefix": ["delivery."]},
            "occurred": {"since": "2000-01-01T00:00:00Z"}, "order": "ASC"}


def collect_trace_events(page: Mapping[str, Any], next_page: Callable[[str], Mapping[str, Any]], *,
                         limit: int) -> list[TraceEvent]:
    """Every event of the pages (JSON, the first given, the others read by ``next_page(url)``), up to ``limit``."""
    events: list[TraceEvent] = []
    while True:
        events += [TraceEvent.of(event) for event in page.get("events", [])]
        url = page.get("next_page")
        if not url or len(events) >= limit:
            return events[:limit]
        page = next_page(str(url))


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)  # SQLite gives back naive UTC


def _environment(plan_id: str) -> str:
    return plan_id.rsplit("/", 1)[-1]  # <release>/r<revision>/<environment>


def ledger_entries(ledger: Ledger, release_id: str) -> list[TimelineEntry]:
    """Every decision the ledger holds about ``release_id``, with its actor and reason."""
    entries = []
    for move in ledger.transitions(release_id=release_id):
        entries.append(TimelineEntry(
            at=_utc(move.at), source="ledger", kind="transition", actor=move.actor,
            environment=_environment(move.plan_id),
            summary=f"{move.plan_id}: {move.from_state.value} -> {move.to_state.value} ({move.reason})"))
    for plan in ledger.plans(release_id=release_id):
        environment = plan.environment
        for approval in ledger.approvals(plan.plan_id):
            refused = not approval.counted
            why = f"refused: {approval.refused_reason}" if refused else "counted"
            entries.append(TimelineEntry(
                at=_utc(approval.at), source="ledger", kind="approval-refused" if refused else "approval",
                actor=approval.approver, environment=environment,
                summary=f"{approval.decision.value} by {approval.approver} ({why})"
                        + (f": {approval.comment}" if approval.comment else "")))
        for evaluation in ledger.policy_evaluations(plan.plan_id):
            verdict = "passed" if evaluation["passed"] else "failed"
            entries.append(TimelineEntry(
                at=_utc(evaluation["at"]), source="ledger", kind="policy", actor="system:policy",
                environment=environment,
                summary=f"policy {evaluation['policy']} {verdict}"
                        + (f": {evaluation['detail']}" if evaluation.get("detail") else "")))
    for incident in ledger.incidents(release_id=release_id):
        entries.append(TimelineEntry(
            at=_utc(incident["created_at"]), source="ledger", kind="incident", actor="system:retries",
            summary=f"incident {incident['id']} ({incident['status']}) in {incident.get('task') or incident['flow']}: "
                    f"{incident['error']}"))
    for action in ledger.actions(release_id=release_id):
        detail: dict[str, Any] = action.get("detail") or {}
        entries.append(TimelineEntry(
            at=_utc(action["at"]), source="ledger", kind=action["action"], actor=action["actor"],
            environment=detail.get("environment"), summary=f"{action['action']}: {action['reason']}"))
    return entries


def commit_entries(commits: Iterable[Commit], *, repository: str) -> list[TimelineEntry]:
    """The release's commits in ``repository``, each with its author and its ``Environment`` trailer."""
    entries = []
    for commit in commits:
        environment = (commit.trailers.get("Environment") or [None])[0]
        entries.append(TimelineEntry(
            at=_utc(commit.at), source="git", kind="commit", actor=commit.author, environment=environment,
            summary=f"{repository} {commit.sha[:12]}: {commit.subject}"))
    return entries


def event_entries(events: Iterable[TraceEvent]) -> list[TimelineEntry]:
    """Prefect's ``delivery.*`` events of the release's trace."""
    return [TimelineEntry(at=_utc(event.occurred), source="events", kind="event", environment=event.environment,
                          summary=event.event) for event in events]


def merge(*sources: Sequence[TimelineEntry]) -> list[TimelineEntry]:
    """One timeline, oldest first (ties keep the ledger before Git before events: cause before report)."""
    order = {"ledger": 0, "git": 1, "events": 2}
    return sorted((entry for source in sources for entry in source), key=lambda e: (e.at, order[e.source]))


__all__ = ["TRACE_PAGE_SIZE", "TimelineEntry", "TraceEvent", "collect_trace_events", "commit_entries", "event_entries",
           "ledger_entries", "merge", "trace_events_filter"]
