"""The embedded image registry: the Debian ``docker-registry`` (CNCF distribution) on 127.0.0.1.

:func:`start_registry` writes its own configuration (loopback, a free port, filesystem storage,
no authentication, deletes allowed) into a folder, starts the binary and waits until ``/v2/``
answers; :func:`stop_registry` ends it by pid. Tests and ``delivery up`` use it.

With a :class:`TokenAuth` the registry asks for the Docker registry token flow instead, as ACR and
the cloud registries do: ``/v2/`` answers 401 with ``WWW-Authenticate: Bearer realm=...`` and only
accepts JWTs signed by the issuer whose certificate is in ``rootcertbundle`` (the ``x5c`` header
with that certificate, or ``kid`` set to its libtrust key id), for the service as audience.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from delivery.errors import InvalidInput, TransientError

REGISTRY_BINARY = "/usr/bin/docker-registry"


@dataclass(frozen=True)
class LocalRegistry:
    """A running registry: its URL, its process id and the folder holding config, data and log."""

    url: str
    pid: int
    root: Path

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the form image references use."""
        return self.url.removeprefix("http://")

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop this registry (see :func:`stop_registry`)."""
        stop_registry(self.pid, timeout=timeout)

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class TokenAuth:
    """The registry's ``auth.token`` section: where clients get tokens and whose tokens it accepts.

    Attributes:
        realm: the token service's URL, sent to clients in the ``Bearer`` challenge.
        service: the registry's name, sent in the challenge and expected as the token's audience.
        issuer: the ``iss`` claim tokens must carry.
        rootcertbundle: a PEM file of the certificates whose keys may sign tokens.
    """

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registry_config(*, port: int, storage: Path, token_auth: TokenAuth | None = None) -> dict:
    """The registry configuration the product runs with; token authentication when ``token_auth`` is given."""
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if token_auth is not None:
        config["auth"] = {"token": {"realm": token_auth.realm, "service": token_auth.service,
                                    "issuer": token_auth.issuer,
                                    "rootcertbundle": str(token_auth.rootcertbundle)}}
    return config


def _is_up(answer: httpx.Response, *, token_auth: bool) -> bool:
    if token_auth:
        return answer.status_code == 401 and answer.headers.get("WWW-Authenticate", "").lower().startswith("bearer ")
    return answer.status_code == 200


def start_registry(
    root: str | os.PathLike[str] | None = None,
    *,
    binary: str = REGISTRY_BINARY,
    startup_timeout: float = 20.0,
    attempts: int = 3,
    token_auth: TokenAuth | None = None,
) -> LocalRegistry:
    """Start a registry on 127.0.0.1 and a free port, and wait until it answers.

    Args:
        root: folder for config, storage and log; a new temporary folder when omitted. Images
            stored there survive a restart on the same folder.
        binary: the registry executable.
        startup_timeout: seconds to wait for ``GET /v2/`` to answer (200, or the challenge).
        attempts: tries, each on a new port (another process may take a free port first).
        token_auth: ask clients for bearer tokens from this token service (none by default: no
            authentication). Such a registry is up once ``GET /v2/`` answers 401 with its challenge.

    Returns:
        The running registry (url, pid, root).

    Raises:
        InvalidInput: the binary is missing.
        TransientError: it did not come up.
    """
    if not (Path(binary).exists() or shutil.which(binary)):
        raise InvalidInput(f"registry binary {binary!r} not found: install the Debian package docker-registry")
    base = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="delivery-registry-"))
    base.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(attempts):
        port = _free_port()
        config = base / "config.yml"
        config.write_text(yaml.safe_dump(registry_config(port=port, storage=base / "storage", token_auth=token_auth)))
        log = open(base / "registry.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if _is_up(httpx.get(f"{url}/v2/", timeout=1.0), token_auth=token_auth is not None):
                    return LocalRegistry(url=url, pid=process.pid, root=base)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        last_error = (base / "registry.log").read_text(errors="replace")[-500:]
        process.kill()
        process.wait(timeout=5)
    raise TransientError(f"docker-registry did not start in {startup_timeout}s: {last_error.strip()}")


def stop_registry(pid: int, *, timeout: float = 10.0) -> None:
    """Stop a registry started by :func:`start_registry`: SIGTERM, then SIGKILL after ``timeout``.

    Args:
        pid: the process id :func:`start_registry` returned; a pid already gone is fine.
        timeout: seconds to wait before killing.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            finished = 0
        if finished == pid:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
