"""An environment's sync state: how a drift check moves it, and where it is kept (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from delivery.drift import DriftMode, DriftReport
from delivery.events import EventName
from delivery.sync_state import OUTCOMES, SyncState, next_status
from delivery.sync_state_store import SyncStateStore

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def _walk_states(outcomes, *, degraded_after=3):
    status, seen = None, []
    for found, remaining in outcomes:
        status, events = next_status(status, environment="dev", revision="abc", found=found, remaining=remaining,
                                     degraded_after=degraded_after)
        seen.append((status.state, status.reason, status.consecutive_drift, events))
    return seen



def test_reconciled_drift_that_keeps_coming_back_degrades_after_n_checks_then_recovers():
    seen = _walk_states([(0, 0), (1, 0), (1, 0), (1, 0), (1, 0), (0, 0)])
    assert seen == [
        (SyncState.SYNCED, "InSync", 0, []),
        (SyncState.SYNCED, "Reconciled", 1, [EventName.DRIFT_DETECTED]),
        (SyncState.SYNCED, "Reconciled", 2, [EventName.DRIFT_DETECTED]),
        (SyncState.DEGRADED, "PersistentDrift", 3, [EventName.DRIFT_DETECTED, EventName.SYNC_DEGRADED]),
        (SyncState.DEGRADED, "PersistentDrift", 4, [EventName.DRIFT_DETECTED]),
        (SyncState.SYNCED, "InSync", 0, [EventName.SYNC_RECOVERED]),
    ]


def test_detected_drift_is_out_of_sync_and_a_clean_check_resets_the_count():
    seen = _walk_states([(2, 2), (0, 0), (2, 2)], degraded_after=2)
    assert [s[:3] for s in seen] == [
        (SyncState.OUT_OF_SYNC, "DriftDetected", 1),
        (SyncState.SYNCED, "InSync", 0),
        (SyncState.OUT_OF_SYNC, "DriftDetected", 1),
    ]
    assert seen[1][3] == [EventName.SYNC_RECOVERED]


def test_failed_reconcile_is_out_of_sync_with_the_error():
    status, events = next_status(None, environment="dev", revision="abc", found=1, remaining=1,
                                 reconcile_error="409 conflict", detail="changed Deployment dev/web")
    assert status.state is SyncState.OUT_OF_SYNC and status.reason == "ReconcileFailed"
    assert "409 conflict" in status.message and "Deployment dev/web" in status.message
    assert events == [EventName.DRIFT_DETECTED]


def test_since_keeps_the_time_the_state_was_entered():
    first, _ = next_status(None, environment="dev", revision="a", found=0, remaining=0, now=T0)
    second, _ = next_status(first, environment="dev", revision="a", found=0, remaining=0, now=T0 + timedelta(minutes=5))
    assert second.since == T0 and second.checked_at == T0 + timedelta(minutes=5)


def test_store_keeps_current_state_and_appends_checks(ledger):
    store = SyncStateStore(ledger.engine)
    assert store.get("dev") is None
    report = DriftReport(environment="dev", revision="abc", mode=DriftMode.DETECT, desired_objects=1, live_objects=1)
    first, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=1)
    store.record(report, first)
    second, _ = next_status(first, environment="dev", revision="abc", found=0, remaining=0)
    store.record(report, second)
    again = SyncStateStore(ledger.engine)  # a second process sees the same rows
    assert again.get("dev") == second
    assert [s.environment for s in again.all()] == ["dev"]
    assert [c["state"] for c in again.checks("dev")] == ["Synced", "OutOfSync"]


# --------------------------------------------------------------------------- each outcome, as the table has it


def test_the_table_is_the_designed_machine():
    assert [(o.reason, o.state, o.on_entry) for o in OUTCOMES] == [
        ("InSync", SyncState.SYNCED, EventName.SYNC_RECOVERED),
        ("PersistentDrift", SyncState.DEGRADED, EventName.SYNC_DEGRADED),
        ("ReconcileFailed", SyncState.OUT_OF_SYNC, None),
        ("DriftDetected", SyncState.OUT_OF_SYNC, None),
        ("ReconcileIncomplete", SyncState.OUT_OF_SYNC, None),
        ("Reconciled", SyncState.SYNCED, None),
    ]
    assert [o.events for o in OUTCOMES] == [()] + [(EventName.DRIFT_DETECTED,)] * 5


@pytest.mark.parametrize(
    "found,remaining,error,reason,state,message",
    [
        (0, 0, None, "InSync", SyncState.SYNCED, "live state matches revision abc"),
        (2, 2, None, "DriftDetected", SyncState.OUT_OF_SYNC, "2 drifted object(s) in 1 consecutive check(s); 2 left"),
        (2, 1, None, "ReconcileIncomplete", SyncState.OUT_OF_SYNC,
         "2 drifted object(s) in 1 consecutive check(s); 1 left"),
        (2, 0, None, "Reconciled", SyncState.SYNCED, "2 drifted object(s) in 1 consecutive check(s); reconciled"),
        (2, 2, "409", "ReconcileFailed", SyncState.OUT_OF_SYNC,
         "2 drifted object(s) in 1 consecutive check(s); reconcile failed: 409"),
    ],
)
def test_each_outcome_has_its_reason_state_and_message(found, remaining, error, reason, state, message):
    status, events = next_status(None, environment="dev", revision="abc", found=found, remaining=remaining,
                                 reconcile_error=error, now=T0)
    assert (status.reason, status.state, status.message) == (reason, state, message)
    assert status.environment == "dev" and status.revision == "abc"
    assert status.consecutive_drift == (1 if found else 0)
    assert status.checked_at == T0 and status.since == T0
    assert events == ([EventName.DRIFT_DETECTED] if found else [])


def test_the_detail_follows_the_message_of_a_check_with_drift_only():
    degraded, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=0, degraded_after=1,
                              detail="changed Deployment dev/web")
    assert degraded.message == "1 drifted object(s) in 1 consecutive check(s) (limit 1): changed Deployment dev/web"
    clean, _ = next_status(None, environment="dev", revision="abc", found=0, remaining=0, detail="ignored")
    assert clean.message == "live state matches revision abc"


def test_the_message_is_cut_at_2000_characters():
    status, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=1, detail="x" * 3000)
    assert len(status.message) == 2000


def test_a_first_check_with_persistent_drift_degrades_and_says_so():
    status, events = next_status(None, environment="dev", revision="abc", found=1, remaining=1, degraded_after=1)
    assert (status.state, status.reason) == (SyncState.DEGRADED, "PersistentDrift")
    assert events == [EventName.DRIFT_DETECTED, EventName.SYNC_DEGRADED]


def test_reconciling_an_out_of_sync_environment_brings_it_back_without_a_recovery_event():
    out, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=1)
    back, events = next_status(out, environment="dev", revision="abc", found=1, remaining=0)
    assert (back.state, back.reason, back.consecutive_drift) == (SyncState.SYNCED, "Reconciled", 2)
    assert events == [EventName.DRIFT_DETECTED]


def test_the_count_goes_on_from_the_previous_check():
    previous, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=1)
    previous = previous.model_copy(update={"consecutive_drift": 5})
    status, _ = next_status(previous, environment="dev", revision="abc", found=3, remaining=3, degraded_after=10)
    assert status.consecutive_drift == 6
    assert status.message == "3 drifted object(s) in 6 consecutive check(s); 3 left"


def test_since_moves_when_the_state_changes():
    first, _ = next_status(None, environment="dev", revision="a", found=0, remaining=0, now=T0)
    later = T0 + timedelta(minutes=5)
    second, _ = next_status(first, environment="dev", revision="b", found=1, remaining=1, now=later)
    assert second.since == later and second.revision == "b"


def test_the_default_clock_is_now():
    before = datetime.now(UTC)
    status, _ = next_status(None, environment="dev", revision="a", found=0, remaining=0)
    assert before <= status.checked_at <= datetime.now(UTC)


def test_by_default_the_third_check_in_a_row_with_drift_degrades():
    status = None
    for _ in range(3):
        status, _events = next_status(status, environment="dev", revision="abc", found=1, remaining=1)
        assert status.state is (SyncState.DEGRADED if status.consecutive_drift == 3 else SyncState.OUT_OF_SYNC)
