"""Settings read from the environment, with the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

# How often a flow run sends a heartbeat (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, Prefect's minimum): the
# workers `delivery up` starts use it, and recovery reads silence against it.
HEARTBEAT_SECONDS = 30


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

# Blocks the flows load, as "<block-type-slug>/<document-name>"; each can be pointed elsewhere.
BLOCK_ENV_DEFAULTS: dict[str, str] = {
    "git_host": "local-git-host/default",
    "gitops_repo": "gitops-repo/default",
    "pipeline_runner": "local-pipeline-runner/default",
    "package_feed": "directory-package-feed/default",
    "image_registry": "oci-image-registry/default",
}


def block_ref(role: str) -> str:
    """The saved block to use for a role, from ``DELIVERY_<ROLE>_BLOCK`` or the embedded default.

    Args:
        role: one of the keys of :data:`BLOCK_ENV_DEFAULTS`, e.g. ``git_host``.
    """
    return os.environ.get(block_setting(role), BLOCK_ENV_DEFAULTS[role])


def block_setting(role: str) -> str:
    """The environment variable that points a role at a saved block, e.g. ``DELIVERY_GIT_HOST_BLOCK``."""
    return f"DELIVERY_{role.upper()}_BLOCK"
