"""The ledger as it was before migrations: create what is missing, adopt a ledger an older version made.

A ledger made before the schema had a version has every table, but may lack the nullable columns added
since (``cause``, ``key_fingerprint``, ``signature_digest``, ``record_key``) and, on ``release_actions``,
the unique key of ``record_key``: they are added here, once, and the ledger is stamped with this revision.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _at(name: str = "at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _key() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def _col(name: str, type_: sa.types.TypeEngine, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, type_, nullable=nullable)


def _tables() -> dict[str, tuple[list[sa.Column], list[str]]]:
    """Each table: its columns (new objects on every call: a column belongs to one table), its indexed columns."""
    return {
        "release_plans": ([
            sa.Column("plan_id", sa.String(200), primary_key=True), _col("release_id", sa.String(64)),
            _col("revision", sa.Integer), _col("environment", sa.String(64)), _col("trace_id", sa.String(64)),
            _col("state", sa.String(32)), _col("planned_by", sa.String(200)), _col("body", sa.JSON),
            _at("created_at"), _at("updated_at"),
        ], ["release_id", "environment", "trace_id"]),
        "plan_transitions": ([
            _key(), _col("plan_id", sa.String(200)), _col("from_state", sa.String(32)), _col("to_state", sa.String(32)),
            _col("actor", sa.String(200)), _col("reason", sa.Text), _at(), _col("cause", sa.String(32), nullable=True),
        ], ["plan_id"]),
        "approvals": ([
            _key(), _col("plan_id", sa.String(200)), _col("approver", sa.String(200)), _col("decision", sa.String(16)),
            _col("comment", sa.Text), _col("counted", sa.Boolean), _col("refused_reason", sa.Text, nullable=True),
            _at(), _col("key_fingerprint", sa.String(100), nullable=True),
            _col("signature_digest", sa.String(80), nullable=True),
        ], ["plan_id"]),
        "policy_evaluations": ([
            _key(), _col("plan_id", sa.String(200)), _col("policy", sa.String(200)), _col("expression", sa.Text),
            _col("passed", sa.Boolean), _col("detail", sa.Text), _at(),
        ], ["plan_id"]),
        "incidents": ([
            _key(), _col("release_id", sa.String(64), nullable=True), _col("trace_id", sa.String(64), nullable=True),
            _col("flow", sa.String(200)), _col("task", sa.String(200), nullable=True), _col("error", sa.Text),
            _col("envelope", sa.JSON), _col("status", sa.String(32)), _at("created_at"),
        ], ["release_id", "trace_id"]),
        "release_actions": ([
            _key(), _col("release_id", sa.String(64)), _col("action", sa.String(64)), _col("actor", sa.String(200)),
            _col("reason", sa.Text), _col("detail", sa.JSON), _at(), _col("record_key", sa.String(200), nullable=True),
        ], ["release_id"]),
        "environment_leases": ([
            sa.Column("environment", sa.String(64), primary_key=True), _col("lease_id", sa.String(64)),
            _col("release_id", sa.String(64)), _col("flow_run_id", sa.String(64), nullable=True), _at(),
        ], ["release_id"]),
        "environment_sync_states": ([
            sa.Column("environment", sa.String(64), primary_key=True), _col("state", sa.String(16)),
            _col("body", sa.JSON), _at("updated_at"),
        ], []),
        "drift_checks": ([
            _key(), _col("environment", sa.String(64)), _col("state", sa.String(16)), _col("drifted", sa.Integer),
            _col("report", sa.JSON), _at(),
        ], ["environment"]),
    }


RECORD_KEY = ("uq_release_actions_record_key", "release_actions", ["release_id", "action", "record_key"])


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    for name, (columns, indexed) in _tables().items():
        if name not in present:
            constraints = [sa.UniqueConstraint(*RECORD_KEY[2], name=RECORD_KEY[0])] if name == RECORD_KEY[1] else []
            op.create_table(name, *columns, *constraints)
            for column in indexed:
                op.create_index(f"ix_{name}_{column}", name, [column])
            continue
        had = {column["name"] for column in inspector.get_columns(name)}
        for column in columns:
            if column.name not in had:
                op.add_column(name, column)
        if name == RECORD_KEY[1] and RECORD_KEY[0] not in _unique_names(inspector, name):
            # an index, not a constraint: SQLite cannot add a constraint to a table; the effect is the same
            op.create_index(RECORD_KEY[0], name, RECORD_KEY[2], unique=True)


def _unique_names(inspector: sa.Inspector, table: str) -> set[str]:
    return ({c["name"] for c in inspector.get_unique_constraints(table)}
            | {i["name"] for i in inspector.get_indexes(table) if i["unique"]})
