"""The credential that protects the local stack's Prefect API (HTTP Basic, Prefect's own auth string).

``delivery up`` generates it once per state folder into ``<home>/api-auth`` (mode 0600) and gives
it to the server as ``PREFECT_SERVER_API_AUTH_STRING``; every client sends it: Prefect's own
client from the ``PREFECT_API_AUTH_STRING`` setting, the product's httpx calls as an
``Authorization: Basic`` header. A caller finds it in ``PREFECT_API_AUTH_STRING``, else in the
state folder's file. It is shared by everything that talks to the stack and identifies nobody.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from delivery.settings import state_dir

AUTH_FILE = "api-auth"
AUTH_ENV = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
USER = "delivery"


def auth_file(home: Path | None = None) -> Path:
    """Where a state folder keeps its credential: ``<home>/api-auth``."""
    return (home or state_dir()) / AUTH_FILE


def ensure_auth_file(home: Path) -> Path:
    """The state folder's credential file, created once (``delivery:<random token>``, mode 0600 from the start).

    An existing file is kept (the credential lives across ``down``/``up``); its mode is tightened to 0600.
    """
    path = auth_file(home)
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        if path.read_text().strip():
            return path
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{USER}:{secrets.token_urlsafe(32)}\n")
    return path


def read_auth_file(path: str | Path) -> str | None:
    """The credential in ``path``, or None when the file is missing or empty."""
    try:
        return Path(path).read_text().strip() or None
    except FileNotFoundError:
        return None


def api_auth_string(home: Path | None = None) -> str | None:
    """The credential a client sends: ``PREFECT_API_AUTH_STRING``, else the state folder's file, else None."""
    return os.environ.get(AUTH_ENV) or read_auth_file(auth_file(home))


def basic_auth_header(auth_string: str) -> dict[str, str]:
    """The ``Authorization`` header Prefect's server checks (Basic, the whole string base64-encoded)."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


@contextmanager
def prefect_client_settings(api_url: str | None = None, *, auth_string: str | None = None) -> Iterator[None]:
    """Prefect's client settings for this block: the API URL when given, and the credential.

    The credential is ``auth_string``, else the one :func:`api_auth_string` finds (so a CLI run
    without ``PREFECT_API_AUTH_STRING`` exported still uses the state folder's file).
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates: dict = {}
    if api_url:
        updates[PREFECT_API_URL] = api_url
    credential = auth_string or api_auth_string()
    if credential:
        updates[PREFECT_API_AUTH_STRING] = credential
    with temporary_settings(updates):
        yield


__all__ = ["AUTH_ENV", "AUTH_FILE", "SERVER_AUTH_ENV", "api_auth_string", "auth_file", "basic_auth_header",
           "ensure_auth_file", "prefect_client_settings", "read_auth_file"]
