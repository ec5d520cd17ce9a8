"""Session-wide test set-up: one real Prefect server for the whole session, isolated state."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="delivery-tests-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(_SESSION_HOME / "results"))
os.environ.setdefault("DELIVERY_HOME", str(_SESSION_HOME / "state"))
# `delivery up` records the last stack it started per user: in tests, not in the real ~/.config.
os.environ.setdefault("DELIVERY_CONFIG_DIR", str(_SESSION_HOME / "config"))
# Retries in tests keep their exponential shape but on a short base delay.
os.environ.setdefault("DELIVERY_RETRY_BACKOFF_SECONDS", "0.2")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (``prefect_test_harness``), started once per session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def ledger(tmp_path: Path):
    """A fresh ledger on its own SQLite file, also made the default for code under test."""
    from delivery.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    previous = os.environ.get("DELIVERY_LEDGER_URL")
    os.environ["DELIVERY_LEDGER_URL"] = url
    try:
        yield Ledger(url)
    finally:
        if previous is None:
            os.environ.pop("DELIVERY_LEDGER_URL", None)
        else:
            os.environ["DELIVERY_LEDGER_URL"] = previous


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (Debian's binaries, as an unprivileged user), removed after.

    Its folder is searchable by that user (pytest's own temporary folders are not), so the cluster lives in it.
    """
    import shutil

    from cli.postgres_server import start_postgres, stop_postgres

    home = Path(tempfile.mkdtemp(prefix="delivery-postgres-tests-"))
    os.chmod(home, 0o711)
    server = start_postgres(home)
    try:
        yield server
    finally:
        stop_postgres(server.process())
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real image registry (Debian ``docker-registry`` on 127.0.0.1), one per test module."""
    from cli.local_registry import start_registry

    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running
