"""Settings read from the environment, with the embedded defaults.

Two ways to name the state folder:

- writers (``delivery up``, the flows, the worker it starts) use :func:`state_dir`: ``DELIVERY_HOME``, else
  ``.delivery`` in the working directory; they create what they need there.
- readers (the CLI's status, approval, incident and drift commands) use :func:`find_state_dir`, which looks
  for a stack that already exists and never creates anything: ``DELIVERY_HOME``; else the nearest
  ``.delivery`` folder holding a ``stack.json`` (or a ``ledger.db``) walking up from the working directory;
  else the folder of the last stack ``delivery up`` started, recorded per user in
  ``~/.config/delivery/current`` (see :func:`current_stack_record`); else none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# How often a flow run sends a heartbeat (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, Prefect's minimum): the
# workers `delivery up` starts use it, and recovery reads silence against it.
HEARTBEAT_SECONDS = 30

HOME_ENV = "DELIVERY_HOME"
LEDGER_ENV = "DELIVERY_LEDGER_URL"
CONFIG_DIR_ENV = "DELIVERY_CONFIG_DIR"
STATE_FOLDER = ".delivery"
STACK_FILE = "stack.json"
LEDGER_FILE = "ledger.db"
# What makes a folder a state folder worth reading: a running stack's description, or a ledger.
STATE_MARKERS = (STACK_FILE, LEDGER_FILE)


def state_dir() -> Path:
    """The state folder writers use (``DELIVERY_HOME``, default ``.delivery`` in the working directory)."""
    return Path(os.environ.get(HOME_ENV, STATE_FOLDER)).resolve()


def ledger_url() -> str:
    """The ledger's SQLAlchemy URL (``DELIVERY_LEDGER_URL``, default a SQLite file in the state folder).

    Only a URL: nothing is created here (a writing :class:`delivery.ledger.Ledger` creates the file).
    """
    url = os.environ.get(LEDGER_ENV)
    if url:
        return url
    return f"sqlite:///{state_dir() / LEDGER_FILE}"


def current_stack_record() -> Path:
    """The per-user record of the last state folder ``delivery up`` started.

    ``<config>/current``, one line: the folder's absolute path. ``<config>`` is ``DELIVERY_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/delivery``, else ``~/.config/delivery`` (tests point ``DELIVERY_CONFIG_DIR`` elsewhere).
    """
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).expanduser() / "current"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "delivery" / "current"


def record_current_stack(home: Path) -> Path:
    """Remember ``home`` as the last stack started (what ``delivery up`` calls); returns the record's path."""
    record = current_stack_record()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{home.resolve()}\n")
    return record


@dataclass(frozen=True)
class FoundStateDir:
    """A state folder :func:`find_state_dir` found, and how."""

    path: Path
    found_by: str  # "DELIVERY_HOME", "working directory" or "last delivery up"

    @property
    def stack_file(self) -> Path:
        return self.path / STACK_FILE


def _is_state_folder(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in STATE_MARKERS)


def find_state_dir(cwd: Path | None = None) -> FoundStateDir | None:
    """Find an existing state folder for a reader, creating nothing.

    The order: ``DELIVERY_HOME`` when set (taken as given, even empty); the nearest ``.delivery`` folder
    holding ``stack.json`` or ``ledger.db`` in ``cwd`` or one of its parents; the folder recorded in
    :func:`current_stack_record` when it still holds one of them; else None.

    Args:
        cwd: where to start walking up (default the working directory).
    """
    if os.environ.get(HOME_ENV):
        return FoundStateDir(Path(os.environ[HOME_ENV]).expanduser().resolve(), HOME_ENV)
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if _is_state_folder(folder / STATE_FOLDER):
            return FoundStateDir(folder / STATE_FOLDER, "working directory")
    try:
        recorded = current_stack_record().read_text().strip()
    except OSError:
        return None
    if recorded and Path(recorded).is_absolute() and _is_state_folder(Path(recorded)):
        return FoundStateDir(Path(recorded), "last delivery up")
    return None

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
