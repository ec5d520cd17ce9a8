"""Creating the ledger's tables while other processes create them too."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, inspect, text

from delivery.ledger import Ledger
from delivery.ledger_tables import metadata
from delivery.schema import create_tables
from delivery.sync_state_store import SyncStateStore, drift_metadata

PROCESSES = 6


def _open_ledger(url: str, start: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue) -> None:
    start.wait(timeout=60)
    try:
        SyncStateStore(Ledger(url).engine)
    except Exception as error:  # reported to the test, which names it
        errors.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_a_fresh_ledger_at_once_all_succeed_and_create_every_table(
        tmp_path: Path, round_: int) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    context = multiprocessing.get_context("spawn")
    start, errors = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_open_ledger, args=(url, start, errors)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    tables = set(inspect(Ledger(url).engine).get_table_names())
    assert {table.name for table in [*metadata.sorted_tables, *drift_metadata.sorted_tables]} <= tables


def test_a_table_made_by_an_older_version_gains_the_nullable_columns_it_lacks(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old, new = MetaData(), MetaData()
    Table("plans", old, Column("id", String(8), primary_key=True))
    Table("plans", new, Column("id", String(8), primary_key=True), Column("reason", String(64)))
    create_tables(engine, old)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO plans (id) VALUES ('p1')"))

    create_tables(engine, new)
    create_tables(engine, new)  # a second run finds nothing to do

    assert [column["name"] for column in inspect(engine).get_columns("plans")] == ["id", "reason"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, reason FROM plans")).all() == [("p1", None)]
