"""The release's actions in the ledger: appended, or kept once under a key (a stage run again after a crash)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, inspect

from delivery.ledger import Ledger


def test_a_keyed_action_is_kept_once_and_an_unkeyed_one_appended_each_time(ledger: Ledger) -> None:
    first = ledger.record_action("rel-1", action="pull-request-merged", actor="agent:rm", reason="merged", key="m:1")
    again = ledger.record_action("rel-1", action="pull-request-merged", actor="agent:rm", reason="again", key="m:1")
    other = ledger.record_action("rel-1", action="pull-request-merged", actor="agent:rm", reason="other", key="m:2")
    elsewhere = ledger.record_action("rel-2", action="pull-request-merged", actor="agent:rm", reason="x", key="m:1")
    ledger.record_action("rel-1", action="retried", actor="user:a", reason="one")
    ledger.record_action("rel-1", action="retried", actor="user:a", reason="two")

    assert again == first and len({first, other, elsewhere}) == 3
    merged = ledger.actions(release_id="rel-1", action="pull-request-merged")
    assert [(a["reason"], a["record_key"]) for a in merged] == [("merged", "m:1"), ("other", "m:2")]
    assert [a["reason"] for a in ledger.actions(release_id="rel-1", action="retried")] == ["one", "two"]


def test_a_table_of_an_older_version_gains_the_key_and_still_keeps_a_keyed_action_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = MetaData()
    Table("release_actions", old, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("release_id", String(64), nullable=False), Column("action", String(64), nullable=False),
          Column("actor", String(200), nullable=False), Column("reason", Text, nullable=False),
          Column("detail", JSON, nullable=False), Column("at", DateTime(timezone=True), nullable=False))
    old.create_all(create_engine(url))  # as an older version made it: no record_key, no schema revision

    ledger = Ledger(url)
    assert "record_key" in {column["name"] for column in inspect(ledger.engine).get_columns("release_actions")}
    first = ledger.record_action("rel-1", action="drift-reconciled", actor="system:drift-check", reason="r", key="k")
    assert ledger.record_action("rel-1", action="drift-reconciled", actor="system:drift-check", reason="r",
                                key="k") == first
    assert len(ledger.actions(release_id="rel-1")) == 1
