"""Where the drift check keeps each environment's sync state and every check, in the ledger database.

Two tables beside the ledger's own: ``environment_sync_states`` (the current status of each
environment) and ``drift_checks`` (every check appended, with its report). The ledger's migrations
create them with its own (``delivery/migrations``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from delivery.drift import DriftReport
from delivery.schema import required, row_id, timestamp
from delivery.sync_state import SyncStatus

drift_metadata = MetaData()

sync_states_table = Table(
    "environment_sync_states",
    drift_metadata,
    Column("environment", String(64), primary_key=True),
    required("state", String(16)),
    required("body", JSON),
    timestamp("updated_at"),
)

drift_checks_table = Table(
    "drift_checks",
    drift_metadata,
    row_id(),
    required("environment", String(64), index=True),
    required("state", String(16)),
    required("drifted", Integer),
    required("report", JSON),
    timestamp(),
)


class SyncStateStore:
    """Each environment's current sync state, and every check appended, in the ledger database.

    Args:
        engine: the ledger's engine (``Ledger().engine``: its schema holds these tables).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, environment: str) -> SyncStatus | None:
        """The stored status of an environment, or None before its first check."""
        with self.engine.connect() as conn:
            body = conn.execute(
                select(sync_states_table.c.body).where(sync_states_table.c.environment == environment)
            ).scalar_one_or_none()
        return None if body is None else SyncStatus.model_validate(body)

    def all(self) -> list[SyncStatus]:
        """Every environment's status, by name."""
        with self.engine.connect() as conn:
            bodies = conn.execute(select(sync_states_table.c.body).order_by(sync_states_table.c.environment)).scalars()
            return [SyncStatus.model_validate(b) for b in bodies]

    def record(self, report: DriftReport, status: SyncStatus) -> None:
        """Store the new status and append the check, in one database transaction."""
        body = status.model_dump(mode="json")
        with self.engine.begin() as conn:
            values = {"state": status.state.value, "body": body, "updated_at": status.checked_at}
            done = conn.execute(
                update(sync_states_table).where(sync_states_table.c.environment == status.environment).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(sync_states_table).values(environment=status.environment, **values))
            conn.execute(
                insert(drift_checks_table).values(
                    environment=status.environment, state=status.state.value, drifted=len(report.drift),
                    report=report.model_dump(mode="json"), at=status.checked_at,
                )
            )

    def checks_since(self, at: datetime, *, environment: str | None = None) -> list[dict[str, Any]]:
        """The checks recorded at or after ``at`` (latest per environment), by environment."""
        query = select(drift_checks_table).where(drift_checks_table.c.at >= at).order_by(drift_checks_table.c.id)
        if environment is not None:
            query = query.where(drift_checks_table.c.environment == environment)
        latest: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings().all():
                latest[row["environment"]] = dict(row)
        return [latest[name] for name in sorted(latest)]

    def checks(self, environment: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The latest checks of an environment, newest first."""
        query = (select(drift_checks_table).where(drift_checks_table.c.environment == environment)
                 .order_by(drift_checks_table.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]


__all__ = ["SyncStateStore", "drift_checks_table", "drift_metadata", "sync_states_table"]
