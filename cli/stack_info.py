"""Where a local stack is: its description (``<home>/stack.json``) and how reading commands find it.

``delivery up`` writes :class:`StackInfo`; every other command finds it with :func:`find_stack` from any
directory (see :func:`delivery.settings.find_state_dir` for the order). Finding creates nothing; when a
part is missing, :class:`StackTarget` raises :class:`~delivery.errors.StackNotFound` saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from delivery.api_auth import AUTH_ENV, auth_file, basic_auth_header, read_auth_file
from delivery.errors import StackNotFound
from delivery.settings import HOME_ENV, LEDGER_ENV, LEDGER_FILE, FoundStateDir, find_state_dir, state_dir


class StackProcess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    pid: int
    marker: str = Field(description="A word of its command line, checked before stopping it")
    log: str


class StackInfo(BaseModel):
    """What ``up`` started and where everything is (``<home>/stack.json``)."""

    model_config = ConfigDict(extra="forbid")

    home: str
    api_url: str
    ui_url: str
    simulator_url: str
    kubeconfig: str
    registry_url: str
    git_root: str
    gitops_repo: str
    ledger_url: str
    auth_file: str = Field(default="", description="The API credential's file (0600); the secret is never here")
    database: str = Field(default="sqlite", description="Where Prefect and the ledger keep their data")
    workers: int = 1
    pgpassfile: str = Field(default="", description="PostgreSQL's password file (0600), when on PostgreSQL")
    processes: list[StackProcess] = Field(default_factory=list)

    def auth_string(self) -> str | None:
        """The API credential (read from :attr:`auth_file`), or None for a stack without one."""
        return read_auth_file(self.auth_file) if self.auth_file else None

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header for raw HTTP calls to :attr:`api_url` (empty without a credential)."""
        secret = self.auth_string()
        return basic_auth_header(secret) if secret else {}

    def env(self) -> dict[str, str]:
        """The environment the worker, the CLI and flows share (with the API credential)."""
        env = {
            "PREFECT_API_URL": self.api_url,
            "DELIVERY_HOME": self.home,
            "DELIVERY_LEDGER_URL": self.ledger_url,
            "PREFECT_HOME": str(Path(self.home) / "prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(Path(self.home) / "results"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        if self.pgpassfile:
            env["PGPASSFILE"] = self.pgpassfile
        secret = self.auth_string()
        if secret:
            env[AUTH_ENV] = secret
        return env

    def prefect_settings(self) -> Any:
        """A context manager: Prefect's client in this process talks to this stack, with its credential."""
        from delivery.api_auth import prefect_client_settings

        return prefect_client_settings(self.api_url, auth_string=self.auth_string())


def stack_file(home: Path | None = None) -> Path:
    return (home or state_dir()) / "stack.json"


def read_stack(home: Path | None = None) -> StackInfo | None:
    """The running stack's description, or None."""
    path = stack_file(home)
    if not path.is_file():
        return None
    return StackInfo.model_validate_json(path.read_text())


API_ENV = "PREFECT_API_URL"


def no_stack_message(cwd: Path, *, ledger: bool = False) -> str:
    """What a reading command says when it finds no stack from ``cwd``."""
    also = f" / {LEDGER_ENV}" if ledger else ""
    return (f"no delivery stack found from {cwd}: run `delivery up`, or set {HOME_ENV} / {API_ENV}{also}")


@dataclass(frozen=True)
class StackTarget:
    """Where a reading command sends its calls: what :func:`find_stack` found, nothing created.

    Attributes:
        cwd: where the search started.
        found: the state folder, or None.
        info: its ``stack.json`` (a running stack), or None.
        api_url: the Prefect API: ``--api-url``/``PREFECT_API_URL``, else ``stack.json``'s, else the active
            Prefect profile's, else None.
        ledger_url: ``DELIVERY_LEDGER_URL``, else ``stack.json``'s, else ``<folder>/ledger.db``, else None.
    """

    cwd: Path
    found: FoundStateDir | None
    info: StackInfo | None
    api_url: str | None
    ledger_url: str | None

    def require_api(self) -> str:
        """The API URL, or :class:`StackNotFound` saying why there is none."""
        if self.api_url:
            return self.api_url
        if self.found is not None:
            raise StackNotFound(f"the delivery stack in {self.found.path} (found by {self.found.found_by}) is not "
                                f"running (no stack.json): run `delivery up`, or set {API_ENV}")
        raise StackNotFound(no_stack_message(self.cwd))

    def require_ledger(self) -> str:
        """The ledger URL, or :class:`StackNotFound`."""
        if self.ledger_url:
            return self.ledger_url
        raise StackNotFound(no_stack_message(self.cwd, ledger=True))

    def auth_string(self, api_url: str | None = None) -> str | None:
        """The API credential to send to ``api_url`` (default :attr:`api_url`).

        ``PREFECT_API_AUTH_STRING``, else the state folder's ``api-auth`` when the folder was named by
        ``DELIVERY_HOME`` or the call goes to the found stack's own API; a credential found by walking up or
        by the per-user record is never sent to another server.
        """
        if os.environ.get(AUTH_ENV):
            return os.environ[AUTH_ENV]
        if self.found is None:
            return None
        url = (api_url or self.api_url or "").rstrip("/")
        ours = self.info is not None and url == self.info.api_url.rstrip("/")
        if self.found.found_by != HOME_ENV and not ours:
            return None
        if self.info is not None and self.info.auth_file:
            return self.info.auth_string()
        return read_auth_file(auth_file(self.found.path))


def profile_api_url() -> str | None:
    """The API URL of the active Prefect profile, or None."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def find_stack(api_url: str | None = None, *, cwd: Path | None = None) -> StackTarget:
    """Find the stack a reading command talks to, from any directory, creating nothing.

    Args:
        api_url: an API URL the caller gave (``--api-url``; typer fills it from ``PREFECT_API_URL``).
        cwd: where to start looking (default the working directory).

    Returns:
        What was found; :meth:`StackTarget.require_api` / :meth:`StackTarget.require_ledger` raise
        :class:`StackNotFound` with a clear message when a part is missing.
    """
    cwd = (cwd or Path.cwd()).resolve()
    found = find_state_dir(cwd)
    info = read_stack(found.path) if found is not None else None
    api = api_url or os.environ.get(API_ENV) or (info.api_url if info else None) or profile_api_url()
    ledger = os.environ.get(LEDGER_ENV) or (info.ledger_url if info else None)
    if not ledger and found is not None:
        ledger = f"sqlite:///{found.path / LEDGER_FILE}"
    return StackTarget(cwd=cwd, found=found, info=info, api_url=api, ledger_url=ledger)



__all__ = ["API_ENV", "StackInfo", "StackProcess", "StackTarget", "find_stack", "no_stack_message", "profile_api_url",
           "read_stack", "stack_file"]
