"""An environment's sync state (``Synced``, ``OutOfSync``, ``Degraded``) and how a drift check moves it.

The moves are data: :data:`OUTCOMES` lists, in order of precedence, each outcome a check can have,
the state it leads to, its message and the event entering that state calls for; the first
outcome whose condition holds is the check's. :func:`next_status` only counts the consecutive
checks with drift and applies the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from delivery.events import EventName
from delivery.models import utcnow


class SyncState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    DEGRADED = "Degraded"


class SyncStatus(BaseModel):
    """An environment's sync state after its latest drift check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    state: SyncState
    reason: str
    message: str
    consecutive_drift: int = Field(default=0, ge=0, description="checks in a row that found drift")
    revision: str | None = None
    checked_at: datetime = Field(default_factory=utcnow)
    since: datetime = Field(default_factory=utcnow, description="when the state last changed")


@dataclass(frozen=True)
class Check:
    """What one drift check found, as the outcome conditions and messages read it.

    Attributes:
        found: drifted objects (and infrastructure) the check found.
        remaining: drift left after reconciling (equals ``found`` in detect mode).
        consecutive: checks in a row that found drift, this one included.
        degraded_after: consecutive checks with drift before Degraded.
        error: why reconciling failed, if it did.
        revision: the Git revision compared.
        detail: ``": <short description of the drift>"``, or empty.
    """

    found: int
    remaining: int
    consecutive: int
    degraded_after: int
    error: str | None
    revision: str | None
    detail: str

    @property
    def where(self) -> str:
        return f"{self.found} drifted object(s) in {self.consecutive} consecutive check(s)"


@dataclass(frozen=True)
class SyncOutcome:
    """One outcome of a check: when it applies, the state it leads to and what it says.

    Attributes:
        reason: the status's reason.
        when: whether a check has this outcome (read only when no earlier outcome applies).
        state: the state the environment goes to.
        message: the status's message, formatted with the :class:`Check`'s fields and ``where``.
        events: the events every check with this outcome emits.
        on_entry: the event emitted when the environment was in another state before.
    """

    reason: str
    when: Callable[[Check], bool]
    state: SyncState
    message: str
    events: tuple[EventName, ...] = (EventName.DRIFT_DETECTED,)
    on_entry: EventName | None = None


# In order of precedence: the first outcome whose condition holds is the check's.
OUTCOMES: tuple[SyncOutcome, ...] = (
    SyncOutcome("InSync", lambda c: c.found == 0, SyncState.SYNCED, "live state matches revision {revision}",
            events=(), on_entry=EventName.SYNC_RECOVERED),
    SyncOutcome("PersistentDrift", lambda c: c.consecutive >= c.degraded_after, SyncState.DEGRADED,
            "{where} (limit {degraded_after}){detail}", on_entry=EventName.SYNC_DEGRADED),
    SyncOutcome("ReconcileFailed", lambda c: bool(c.error), SyncState.OUT_OF_SYNC,
            "{where}; reconcile failed: {error}{detail}"),
    SyncOutcome("DriftDetected", lambda c: c.remaining == c.found, SyncState.OUT_OF_SYNC,
            "{where}; {remaining} left{detail}"),
    SyncOutcome("ReconcileIncomplete", lambda c: bool(c.remaining), SyncState.OUT_OF_SYNC,
            "{where}; {remaining} left{detail}"),
    SyncOutcome("Reconciled", lambda c: True, SyncState.SYNCED, "{where}; reconciled{detail}"),
)


def outcome_of(check: Check) -> SyncOutcome:
    """The first outcome of :data:`OUTCOMES` whose condition ``check`` meets."""
    return next(outcome for outcome in OUTCOMES if outcome.when(check))


def next_status(previous: SyncStatus | None, *, environment: str, revision: str | None, found: int,
                remaining: int, reconcile_error: str | None = None, degraded_after: int = 3,
                detail: str = "", now: datetime | None = None) -> tuple[SyncStatus, list[EventName]]:
    """Move an environment's sync state after a check and say which events to emit.

    A check that finds drift counts, whether or not it reconciled it: drift that comes back in
    ``degraded_after`` consecutive checks makes the environment Degraded. A check that finds
    none returns it to Synced (with ``SyncRecovered`` when it was not).

    Args:
        previous: the stored status, or None on the first check.
        environment: the environment's name.
        revision: the Git revision compared.
        found: drifted objects (and infrastructure) the check found.
        remaining: drift left after reconciling (equals ``found`` in detect mode).
        reconcile_error: why reconciling failed, if it did.
        degraded_after: consecutive checks with drift before Degraded.
        detail: a short description of the drift for the message.
        now: the clock.

    Returns:
        The new status and the events it calls for, in order.
    """
    now = now or utcnow()
    was = previous.state if previous else SyncState.SYNCED
    consecutive = 0 if found == 0 else (previous.consecutive_drift if previous else 0) + 1
    check = Check(found=found, remaining=remaining, consecutive=consecutive, degraded_after=degraded_after,
                  error=reconcile_error, revision=revision, detail=f": {detail}" if detail else "")
    outcome = outcome_of(check)
    events = list(outcome.events)
    if outcome.on_entry is not None and was is not outcome.state:
        events.append(outcome.on_entry)
    message = outcome.message.format(where=check.where, **vars(check))
    status = SyncStatus(
        environment=environment, state=outcome.state, reason=outcome.reason, message=message[:2000],
        consecutive_drift=consecutive, revision=revision, checked_at=now,
        since=previous.since if previous and previous.state is outcome.state else now,
    )
    return status, events


__all__ = ["OUTCOMES", "Check", "SyncOutcome", "SyncState", "SyncStatus", "next_status", "outcome_of"]
