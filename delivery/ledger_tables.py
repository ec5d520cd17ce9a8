"""The ledger's tables: plans and their transitions, approvals, policy evaluations, incidents,
the actions on a release and the lease each environment lock is held under.

Rows are only appended, except a plan's current state and an environment's lease. The database is
built by the migrations (``delivery/migrations``); ``tests/delivery/test_migrations.py`` proves they build
exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, Text, UniqueConstraint

from delivery.schema import required, row_id, timestamp

metadata = MetaData()


def _plan_id() -> Column:
    return required("plan_id", String(200), index=True)


def _release_id(**options: bool) -> Column:
    return Column("release_id", String(64), index=True, **options)


def _who_and_why() -> tuple[Column, Column]:
    return required("actor", String(200)), required("reason", Text)


plans_table = Table(
    "release_plans",
    metadata,
    Column("plan_id", String(200), primary_key=True),
    _release_id(nullable=False),
    required("revision", Integer),
    required("environment", String(64), index=True),
    required("trace_id", String(64), index=True),
    required("state", String(32)),
    required("planned_by", String(200)),
    required("body", JSON),
    timestamp("created_at"),
    timestamp("updated_at"),
)

transitions_table = Table(
    "plan_transitions",
    metadata,
    row_id(),
    _plan_id(),
    required("from_state", String(32)),
    required("to_state", String(32)),
    *_who_and_why(),
    timestamp(),
    Column("cause", String(32)),  # a PromotionCause on a move that settles a promotion
)

approvals_table = Table(
    "approvals",
    metadata,
    row_id(),
    _plan_id(),
    required("approver", String(200)),
    required("decision", String(16)),
    required("comment", Text, default=""),
    required("counted", Boolean),
    Column("refused_reason", Text),
    timestamp(),
    Column("key_fingerprint", String(100)),
    Column("signature_digest", String(80)),
)

policy_table = Table(
    "policy_evaluations",
    metadata,
    row_id(),
    _plan_id(),
    required("policy", String(200)),
    required("expression", Text),
    required("passed", Boolean),
    required("detail", Text, default=""),
    timestamp(),
)

incidents_table = Table(
    "incidents",
    metadata,
    row_id(),
    _release_id(),
    Column("trace_id", String(64), index=True),
    required("flow", String(200)),
    Column("task", String(200)),
    required("error", Text),
    required("envelope", JSON),
    required("status", String(32), default="open", index=True),
    timestamp("created_at"),
)


actions_table = Table(
    "release_actions",
    metadata,
    row_id(),
    _release_id(nullable=False),
    required("action", String(64), index=True),
    *_who_and_why(),
    required("detail", JSON),
    timestamp(),
    # what makes a record once-only (a stage run again after a crash finds it); NULL: every call appends
    Column("record_key", String(200)),
    # on a table created before record_key, ``record_action`` looks before it inserts instead
    UniqueConstraint("release_id", "action", "record_key", name="uq_release_actions_record_key"),
)


# Who holds each environment's lock, by its Prefect lease: a resumed or cancelled release frees the
# lease its dead process left instead of waiting for it to lapse. A row per environment, replaced.
leases_table = Table(
    "environment_leases",
    metadata,
    Column("environment", String(64), primary_key=True),
    required("lease_id", String(64)),
    _release_id(nullable=False),
    Column("flow_run_id", String(64)),
    timestamp(),
)
