"""Settings read from the environment, with the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The local state folder (``DELIVERY_HOME``, default ``.delivery`` in the working directory)."""
    return Path(os.environ.get("DELIVERY_HOME", ".delivery")).resolve()


def ledger_url() -> str:
    """The ledger's SQLAlchemy URL (``DELIVERY_LEDGER_URL``, default a SQLite file in the state folder)."""
    url = os.environ.get("DELIVERY_LEDGER_URL")
    if url:
        return url
    path = state_dir() / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"
