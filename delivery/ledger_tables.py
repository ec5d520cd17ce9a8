"""The ledger's tables: plans and their transitions, approvals, policy evaluations, incidents,
the actions on a release and the lease each environment lock is held under.

Rows are only appended, except a plan's current state and an environment's lease. The tables are
created when missing by :func:`delivery.schema.create_tables`.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

plans_table = Table(
    "release_plans",
    metadata,
    Column("plan_id", String(200), primary_key=True),
    Column("release_id", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("environment", String(64), nullable=False, index=True),
    Column("trace_id", String(64), nullable=False, index=True),
    Column("state", String(32), nullable=False),
    Column("planned_by", String(200), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

transitions_table = Table(
    "plan_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_id", String(200), nullable=False, index=True),
    Column("from_state", String(32), nullable=False),
    Column("to_state", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

approvals_table = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_id", String(200), nullable=False, index=True),
    Column("approver", String(200), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("counted", Boolean, nullable=False),
    Column("refused_reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_fingerprint", String(100)),
    Column("signature_digest", String(80)),
)

policy_table = Table(
    "policy_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_id", String(200), nullable=False, index=True),
    Column("policy", String(200), nullable=False),
    Column("expression", Text, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("at", DateTime(timezone=True), nullable=False),
)

incidents_table = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("release_id", String(64), index=True),
    Column("trace_id", String(64), index=True),
    Column("flow", String(200), nullable=False),
    Column("task", String(200)),
    Column("error", Text, nullable=False),
    Column("envelope", JSON, nullable=False),
    Column("status", String(32), nullable=False, default="open"),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


actions_table = Table(
    "release_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("release_id", String(64), nullable=False, index=True),
    Column("action", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
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
    Column("lease_id", String(64), nullable=False),
    Column("release_id", String(64), nullable=False, index=True),
    Column("flow_run_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False),
)
