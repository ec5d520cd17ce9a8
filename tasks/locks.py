"""Environment locks: one promotion (or drift reconcile) per environment at a time.

Each environment has a Prefect global concurrency limit ``delivery-env-<env>`` (limit 1), created
by the product before use and acquired strictly, so a missing limit is an error rather than a
silent no-lock. A holder takes it with a lease of ``LOCK_LEASE_SECONDS`` that its process renews;
a process that dies stops renewing and the lock frees itself when the lease lapses. A release
records the lease it holds in the ledger, so that its own resumed run, or a cancel, frees the
lease its dead process left at once rather than waiting for it to lapse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.context import ConcurrencyContext
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from delivery.ledger import Ledger

LOCK_TIMEOUT_SECONDS = float(os.environ.get("DELIVERY_LOCK_TIMEOUT_SECONDS", "3600"))
# Prefect's minimum; a holder that died frees the environment within this time.
LOCK_LEASE_SECONDS = 60


def lock_name(environment: str) -> str:
    """The global concurrency limit guarding an environment."""
    return f"delivery-env-{environment}"


def ensure_limit(name: str) -> str:
    """Create the global concurrency limit ``name`` (limit 1) when missing; return the name."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # someone created it first
    return name


def ensure_environment_lock(environment: str) -> str:
    """Create the environment's global concurrency limit (limit 1) when missing; return its name."""
    return ensure_limit(lock_name(environment))


def free_dead_leases(ledger: Ledger, release_id: str, *, environment: str | None = None) -> list[str]:
    """Release the environment leases recorded for ``release_id`` (optionally one environment's).

    Only for a release whose earlier process is gone: its resumed run (one flow run never runs
    in two processes) or a cancel once the run has ended. A lease that already lapsed is simply
    forgotten. Returns the environments freed.
    """
    held = [row for row in ledger.leases(release_id=release_id) if environment in (None, row["environment"])]
    if not held:  # the usual case: no client needed on every lock taken
        return []
    with get_client(sync_client=True) as client:
        for row in held:
            client.release_concurrency_slots_with_lease(UUID(row["lease_id"]))
            ledger.drop_lease(row["environment"], row["lease_id"])
    return [row["environment"] for row in held]


@contextmanager
def environment_lock(environment: str, *, release_id: str, ledger: Ledger) -> Iterator[None]:
    """Hold the environment's lock for a release, its lease recorded for whoever must free it after a crash.

    A lease this release's own dead process left is released first: waiting for it to lapse
    would only delay the resumed run.
    """
    name = ensure_environment_lock(environment)
    if free_dead_leases(ledger, release_id, environment=environment):
        get_run_logger().warning("%s: freed the lock a dead process of release %s held", environment, release_id)
    with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_SECONDS, lease_duration=LOCK_LEASE_SECONDS,
                     strict=True):
        lease = _current_lease()
        if lease is not None:
            run = FlowRunContext.get()
            ledger.hold_lease(environment, lease_id=lease, release_id=release_id,
                              flow_run_id=str(run.flow_run.id) if run and run.flow_run else None)
        try:
            yield
        finally:
            if lease is not None:
                ledger.drop_lease(environment, lease)


def _current_lease() -> str | None:
    """The lease just granted in this run (Prefect keeps it for clean-up), if any."""
    context = ConcurrencyContext.get()
    return str(context.cleanup_lease_ids[-1]) if context and context.cleanup_lease_ids else None


__all__ = ["LOCK_LEASE_SECONDS", "LOCK_TIMEOUT_SECONDS", "ensure_environment_lock", "ensure_limit",
           "environment_lock", "free_dead_leases", "lock_name"]
