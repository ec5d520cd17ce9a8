"""Environment locks on a real Prefect server: a dead holder's lease is freed by its own release, never by another.

A process that died holding a lock is stood in for by a lease taken through the API and never
renewed nor released, recorded in the ledger as the release's.
"""

from __future__ import annotations

import threading
import uuid

from prefect import flow
from prefect.client.orchestration import get_client
from support.runtime import wait_until

from tasks.locks import LOCK_LEASE_SECONDS, ensure_limit, environment_lock, free_dead_leases, lock_name

ENVIRONMENT = "locktest"


def _dead_holder(ledger, release_id: str) -> str:
    """Take the lock as a process that then died would have, and record it as the release's."""
    name = lock_name(ENVIRONMENT)
    ensure_limit(name)
    with get_client(sync_client=True) as client:
        granted = client.increment_concurrency_slots_with_lease(names=[name], slots=1, mode="concurrency",
                                                                 lease_duration=LOCK_LEASE_SECONDS).json()
    ledger.hold_lease(ENVIRONMENT, lease_id=granted["lease_id"], release_id=release_id, flow_run_id=None)
    return granted["lease_id"]


@flow(name="lock-probe")
def hold_lock(release_id: str, entered: threading.Event, leave: threading.Event) -> None:
    from delivery.ledger import Ledger

    with environment_lock(ENVIRONMENT, release_id=release_id, ledger=Ledger()):
        entered.set()
        leave.wait(timeout=120)


def _active_slots() -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(lock_name(ENVIRONMENT)).active_slots


def _probe(release_id: str) -> tuple[threading.Thread, threading.Event, threading.Event]:
    entered, leave = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold_lock, args=(release_id, entered, leave))
    thread.start()
    return thread, entered, leave


def test_a_resumed_release_frees_the_lease_its_dead_process_left_at_once(prefect_server, ledger) -> None:
    release_id = f"rel-{uuid.uuid4().hex[:8]}"
    dead = _dead_holder(ledger, release_id)
    thread, entered, leave = _probe(release_id)
    # well before the dead lease could lapse
    wait_until(entered.is_set, timeout=LOCK_LEASE_SECONDS / 2, what="the resumed release holding the lock")
    [held] = ledger.leases(release_id=release_id)
    assert held["lease_id"] != dead and held["environment"] == ENVIRONMENT and held["flow_run_id"]
    assert _active_slots() == 1
    leave.set()
    thread.join(timeout=60)
    assert ledger.leases(release_id=release_id) == []
    assert _active_slots() == 0


def test_another_release_waits_for_a_dead_holder_until_a_cancel_frees_it(prefect_server, ledger) -> None:
    dead_release, other = f"rel-{uuid.uuid4().hex[:8]}", f"rel-{uuid.uuid4().hex[:8]}"
    _dead_holder(ledger, dead_release)
    thread, entered, leave = _probe(other)
    assert not entered.wait(timeout=5)  # it is not this release's lease to free
    assert free_dead_leases(ledger, dead_release) == [ENVIRONMENT]  # what cancel does once the run has ended
    wait_until(entered.is_set, timeout=LOCK_LEASE_SECONDS / 2, what="the other release holding the lock")
    leave.set()
    thread.join(timeout=60)
    assert ledger.leases(release_id=dead_release) == ledger.leases(release_id=other) == []
