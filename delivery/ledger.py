"""The ledger: the queryable audit trail of releases.

SQLAlchemy Core over any URL (SQLite file by default, PostgreSQL at scale). It stores release
plans, every transition with actor, time and reason, approvals (counted or refused), policy
evaluations, incidents with their replay envelopes, and the actions on a release: the operations
done to it from outside its run (resubmissions after a crash, retries, cancellations, replays,
acknowledgements), its rollbacks, its pull request's check results and merge, and the drift
reconciles of the environments it runs in, each with its actor and reason; signing keys revoked are
kept as actions too, under the release id ``identities``. Rows are only
appended, except the plan's current state, which moves with a compare-and-set on the previous state.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from delivery.errors import ConflictError, NotFound
from delivery.ledger_tables import (
    actions_table,
    approvals_table,
    incidents_table,
    leases_table,
    plans_table,
    policy_table,
    transitions_table,
)
from delivery.models import Approval, Model, utcnow
from delivery.plan import PlanState, ReleasePlan, Transition
from delivery.schema import ensure_schema, ledger_metadata
from delivery.settings import ledger_url

# The operations a release's own rollback writes (``flows/deploy.py``): before its first outside
# write, and after its last, so a run resumed in between finishes it.
ROLLBACK_STARTED = "rollback-started"
ROLLBACK_FINISHED = "rolled-back"
# An on-demand rollback (the ``roll_back`` flow), kept under the rollback's own release id.
ON_DEMAND_ROLLBACK = "rolled-back-on-demand"
# The pull request's checks (``tasks/pull_request.py``), once per head and outcome, and its merge.
PULL_REQUEST_CHECKS_PASSED = "pull-request-checks-passed"
PULL_REQUEST_CHECKS_FAILED = "pull-request-checks-failed"
PULL_REQUEST_MERGED = "pull-request-merged"
# A drift check that re-applied or pruned objects (``tasks/drift.py``), under the release the environment runs.
DRIFT_RECONCILED = "drift-reconciled"
DRIFT_RECONCILE_FAILED = "drift-reconcile-failed"
# A release request refused for its planner's signature (``tasks/approval.py``): the only row it writes.
REQUEST_REFUSED = "request-refused"
# A signing key revoked (``delivery identity revoke``, delivery/revocation.py): no release owns a key, so
# the action is kept under this release id, once per key fingerprint.
IDENTITY_REVOKED = "identity-revoked"
IDENTITIES_RECORD = "identities"


# The columns of a plan's row written once, when it is created; state, body and updated_at move with it.
_PLAN_COLUMNS = ("plan_id", "release_id", "revision", "environment", "trace_id", "planned_by", "created_at")


class OnDemandRollback(Model):
    """An environment returned to its last healthy revision on demand, as the ledger keeps it."""

    release_id: str
    environment: str
    app: str
    actor: str
    reason: str
    git_revision: str
    restored_from: str | None = None
    healthy: bool = True
    at: datetime | None = None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")  # first: switching a fresh file to WAL waits for other openers
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, or None (another database, or SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):  # a SQLite URI: its own options, left alone
        return None
    return Path(parsed.database).expanduser().resolve()


def _new_engine(url: str, **options: Any) -> Engine:
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# One engine per process and database, its pool shared by every Ledger of the process; the schema is checked
# when the engine is made. The least recently used beyond a few are disposed (a test process opens hundreds of
# ledgers); a Ledger still holding one gets new connections from it.
_ENGINES: OrderedDict[str, Engine] = OrderedDict()
_ENGINES_KEPT = 8
_ENGINES_LOCK = threading.Lock()


def ledger_engine(url: str) -> Engine:
    """The process's engine for the ledger at ``url``, its schema at the head (:func:`delivery.schema.ensure_schema`).

    Raises:
        SchemaOutOfDate: a database other than SQLite is behind: ``delivery db upgrade`` applies the migrations.
    """
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            _ENGINES.move_to_end(url)
            return engine
        # a pooled server connection may die with a database restart: checked before each use
        engine = _new_engine(url, pool_pre_ping=make_url(url).get_backend_name() != "sqlite")
        try:
            ensure_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        _ENGINES[url] = engine
        while len(_ENGINES) > _ENGINES_KEPT:
            _ENGINES.popitem(last=False)[1].dispose()
        return engine


class Ledger:
    """Read and append the audit trail.

    Args:
        url: a SQLAlchemy URL; default from :func:`delivery.settings.ledger_url`.
        create: a writer (the flows, ``delivery up``) creates a missing SQLite file and its folder; a reader
            (``create=False``, the CLI) creates nothing and reads a missing file as an empty ledger.

    Raises:
        SchemaOutOfDate: the ledger is on a database other than SQLite whose schema is behind.
    """

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = url or ledger_url()
        path = _sqlite_file(self.url)
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif path is not None and not path.is_file():  # nothing written yet: an empty ledger, in memory
            self.engine: Engine = _new_engine("sqlite://", poolclass=StaticPool)
            ledger_metadata().create_all(self.engine)
            return
        self.engine = ledger_engine(self.url)

    # ---------------------------------------------------------------- plans

    def save_plan(self, plan: ReleasePlan, transition: Transition | None = None) -> ReleasePlan:
        """Store a plan, and the transition that produced it, in one database transaction.

        A new plan is inserted. An existing plan moves only from the state the transition
        starts at: a concurrent writer that moved it first makes this raise.

        Args:
            plan: the plan as it is now.
            transition: the move that made it so, if any.

        Returns:
            The plan.

        Raises:
            ConflictError: the stored plan is not in ``transition.from_state``.
        """
        body = plan.model_dump(mode="json")
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(plans_table.c.state).where(plans_table.c.plan_id == plan.plan_id)
            ).scalar_one_or_none()
            values = {
                "state": plan.state.value,
                "body": body,
                "updated_at": plan.updated_at,
            }
            if existing is None:
                fixed = {name: getattr(plan, name) for name in _PLAN_COLUMNS}
                try:
                    conn.execute(insert(plans_table).values(**fixed, **values))
                except IntegrityError as exc:
                    raise ConflictError(f"plan {plan.plan_id} was created by another writer") from exc
            else:
                expected = transition.from_state.value if transition else existing
                result = conn.execute(
                    update(plans_table)
                    .where(plans_table.c.plan_id == plan.plan_id, plans_table.c.state == expected)
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise ConflictError(
                        f"plan {plan.plan_id} is no longer {expected}: another writer moved it"
                    )
            if transition is not None:
                conn.execute(insert(transitions_table).values(**transition.model_dump()))
        return plan

    def get_plan(self, plan_id: str) -> ReleasePlan:
        """Return the stored plan.

        Raises:
            NotFound: no plan has that id.
        """
        with self.engine.connect() as conn:
            body = conn.execute(
                select(plans_table.c.body).where(plans_table.c.plan_id == plan_id)
            ).scalar_one_or_none()
        if body is None:
            raise NotFound(f"no release plan {plan_id!r} in the ledger")
        return ReleasePlan.model_validate(_loads(body))

    def find_plan(self, plan_id: str) -> ReleasePlan | None:
        """Return the stored plan, or None."""
        try:
            return self.get_plan(plan_id)
        except NotFound:
            return None

    def plans(self, *, release_id: str | None = None, environment: str | None = None) -> list[ReleasePlan]:
        """List plans, oldest first, optionally for one release and/or environment."""
        query = select(plans_table.c.body).order_by(plans_table.c.created_at, plans_table.c.plan_id)
        if release_id is not None:
            query = query.where(plans_table.c.release_id == release_id)
        if environment is not None:
            query = query.where(plans_table.c.environment == environment)
        with self.engine.connect() as conn:
            return [ReleasePlan.model_validate(_loads(b)) for b in conn.execute(query).scalars()]

    def latest_plans(self, release_id: str) -> list[ReleasePlan]:
        """Per environment, the plan of the release's latest revision, in the order they were planned."""
        latest: dict[str, ReleasePlan] = {}
        for plan in self.plans(release_id=release_id):
            if plan.environment not in latest or plan.revision >= latest[plan.environment].revision:
                latest[plan.environment] = plan
        return sorted(latest.values(), key=lambda plan: plan.created_at)

    def transitions(self, plan_id: str | None = None, *, release_id: str | None = None) -> list[Transition]:
        """List recorded transitions in the order they happened."""
        query = select(transitions_table).order_by(transitions_table.c.id)
        if plan_id is not None:
            query = query.where(transitions_table.c.plan_id == plan_id)
        if release_id is not None:
            # through the release's plans: both columns indexed, where a prefix LIKE is not on every database
            plan_ids = select(plans_table.c.plan_id).where(plans_table.c.release_id == release_id)
            query = query.where(transitions_table.c.plan_id.in_(plan_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            _transition(r)
            for r in rows
        ]

    # ---------------------------------------------------------------- approvals and policies

    def last_transition(self, plan_id: str) -> Transition | None:
        """The plan's latest transition (who moved it to its state, and why), or None before any."""
        query = (select(transitions_table).where(transitions_table.c.plan_id == plan_id)
                 .order_by(transitions_table.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _transition(row) if row else None

    def record_approval(self, plan_id: str, approval: Approval) -> None:
        """Append an approval, counted or refused."""
        with self.engine.begin() as conn:
            conn.execute(insert(approvals_table).values(plan_id=plan_id, **approval.model_dump()))

    def approvals(self, plan_id: str) -> list[Approval]:
        """List every approval recorded for a plan, refused ones included."""
        query = select(approvals_table).where(approvals_table.c.plan_id == plan_id).order_by(approvals_table.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Approval(**{name: r[name] for name in Approval.model_fields}) for r in rows]

    def record_policy_evaluation(
        self, plan_id: str, *, policy: str, expression: str, passed: bool, detail: str = ""
    ) -> None:
        """Append one policy gate evaluation."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(policy_table).values(
                    plan_id=plan_id, policy=policy, expression=expression, passed=passed, detail=detail,
                    at=utcnow(),
                )
            )

    def policy_evaluations(self, plan_id: str) -> list[dict[str, Any]]:
        """List a plan's policy evaluations in order."""
        query = select(policy_table).where(policy_table.c.plan_id == plan_id).order_by(policy_table.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    # ---------------------------------------------------------------- incidents

    def record_incident(
        self,
        *,
        flow: str,
        error: str,
        envelope: dict[str, Any],
        task: str | None = None,
        release_id: str | None = None,
        trace_id: str | None = None,
    ) -> int:
        """Append an incident with its replay envelope; return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(incidents_table).values(
                    flow=flow, task=task, error=error, envelope=envelope, release_id=release_id,
                    trace_id=trace_id, status="open", created_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0])

    def incidents(self, *, status: str | None = None, release_id: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
        """List incidents, newest first, optionally in one status and/or of one release, at most ``limit``."""
        query = select(incidents_table).order_by(incidents_table.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(incidents_table.c.status == status)
        if release_id is not None:
            query = query.where(incidents_table.c.release_id == release_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def incident(self, incident_id: int) -> dict[str, Any]:
        """Return one incident.

        Raises:
            NotFound: no incident has that id.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(incidents_table).where(incidents_table.c.id == incident_id)
            ).mappings().one_or_none()
        if row is None:
            raise NotFound(f"no incident {incident_id} in the ledger")
        return dict(row)

    def set_incident_status(self, incident_id: int, status: str, *, expected: tuple[str, ...] | None = None) -> None:
        """Mark an incident (for example ``replayed``); with ``expected``, only from one of those statuses.

        Raises:
            ConflictError: the incident's status is no longer one of ``expected`` (someone else moved it).
        """
        query = update(incidents_table).where(incidents_table.c.id == incident_id)
        if expected is not None:
            query = query.where(incidents_table.c.status.in_(expected))
        with self.engine.begin() as conn:
            if conn.execute(query.values(status=status)).rowcount == 0 and expected is not None:
                raise ConflictError(f"incident {incident_id} is no longer {' or '.join(expected)}")

    # ---------------------------------------------------------------- operations on a release

    def record_action(self, release_id: str, *, action: str, actor: str, reason: str,
                      detail: dict[str, Any] | None = None, key: str | None = None) -> int:
        """Append a decision or an operation on a release; return its id.

        Args:
            release_id: the release.
            action: what was done, e.g. ``resubmitted``, ``retried``, ``cancelled``, ``replayed``,
                ``pull-request-merged``.
            actor: who asked or decided (``system:recovery`` for the product itself).
            reason: why, in words a person reads in the audit trail.
            detail: anything else worth keeping (flow run id, attempt, incident id).
            key: records the action once: when the release already has this action under this key
                (a stage run again after a crash), nothing is appended and the kept record's id is returned.
        """
        values = {"release_id": release_id, "action": action, "actor": actor, "reason": reason,
                  "detail": detail or {}, "at": utcnow(), "record_key": key}
        try:
            with self.engine.begin() as conn:
                kept = self._kept_action(conn, release_id, action, key)
                if kept is not None:
                    return kept
                return int(conn.execute(insert(actions_table).values(**values)).inserted_primary_key[0])
        except IntegrityError:  # another writer recorded the same key between the look and the insert
            with self.engine.connect() as conn:
                kept = self._kept_action(conn, release_id, action, key)
            if kept is None:
                raise
            return kept

    @staticmethod
    def _kept_action(conn: Any, release_id: str, action: str, key: str | None) -> int | None:
        if key is None:
            return None
        found = conn.execute(select(actions_table.c.id).where(
            actions_table.c.release_id == release_id, actions_table.c.action == action,
            actions_table.c.record_key == key).order_by(actions_table.c.id)).scalars().first()
        return None if found is None else int(found)

    def actions(self, *, release_id: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """The operations recorded, oldest first, optionally of one release and one kind."""
        query = select(actions_table).order_by(actions_table.c.id)
        if release_id is not None:
            query = query.where(actions_table.c.release_id == release_id)
        if action is not None:
            query = query.where(actions_table.c.action == action)
        with self.engine.connect() as conn:
            return [{**dict(r), "detail": _loads(r["detail"])} for r in conn.execute(query).mappings().all()]

    def record_on_demand_rollback(self, rollback: OnDemandRollback) -> int:
        """Append an on-demand rollback (an operation under the rollback's release id); return its id."""
        detail = rollback.model_dump(mode="json", include={"environment", "app", "git_revision", "restored_from",
                                                           "healthy"})
        return self.record_action(rollback.release_id, action=ON_DEMAND_ROLLBACK, actor=rollback.actor,
                                  reason=rollback.reason, detail=detail)

    def on_demand_rollbacks(self) -> list[OnDemandRollback]:
        """Every on-demand rollback recorded, oldest first."""
        return [OnDemandRollback(release_id=row["release_id"], actor=row["actor"], reason=row["reason"], at=row["at"],
                                 **row["detail"]) for row in self.actions(action=ON_DEMAND_ROLLBACK)]

    # ---------------------------------------------------------------- environment locks

    def hold_lease(self, environment: str, *, lease_id: str, release_id: str, flow_run_id: str | None) -> None:
        """Record that ``release_id`` holds the environment's lock under ``lease_id``."""
        row = {"lease_id": lease_id, "release_id": release_id, "flow_run_id": flow_run_id, "at": utcnow()}
        with self.engine.begin() as conn:
            if conn.execute(update(leases_table).where(leases_table.c.environment == environment)
                            .values(**row)).rowcount == 0:
                conn.execute(insert(leases_table).values(environment=environment, **row))

    def leases(self, *, release_id: str) -> list[dict[str, Any]]:
        """The environment locks a release is recorded as holding."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(leases_table).where(leases_table.c.release_id == release_id)).mappings()
            return [dict(r) for r in rows]

    def drop_lease(self, environment: str, lease_id: str) -> None:
        """Forget a lease (released, or found gone); a newer holder's row is left alone."""
        with self.engine.begin() as conn:
            conn.execute(delete(leases_table).where(leases_table.c.environment == environment,
                                                    leases_table.c.lease_id == lease_id))


def _transition(row: Any) -> Transition:
    return Transition(plan_id=row["plan_id"], from_state=PlanState(row["from_state"]),
                      to_state=PlanState(row["to_state"]), actor=row["actor"], reason=row["reason"], at=row["at"],
                      cause=row["cause"])


def _loads(body: Any) -> Any:
    return json.loads(body) if isinstance(body, str) else body


__all__ = [
    "DRIFT_RECONCILED", "DRIFT_RECONCILE_FAILED", "ON_DEMAND_ROLLBACK", "PULL_REQUEST_CHECKS_FAILED",
    "PULL_REQUEST_CHECKS_PASSED", "PULL_REQUEST_MERGED", "REQUEST_REFUSED", "ROLLBACK_FINISHED", "ROLLBACK_STARTED",
    "Ledger",
    "OnDemandRollback",
]
