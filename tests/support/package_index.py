"""A real package index for the tests: pypiserver with authentication, as a private Azure Artifacts feed is."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from blocks.azure_artifacts_feed import AzureArtifactsFeed

USER, TOKEN = "ci-bot", "pat-7f3a9c1e5b"


@dataclass(frozen=True)
class IndexServer:
    url: str
    pid: int
    packages: Path

    @property
    def index(self) -> str:
        return f"{self.url}/simple/"

    def feed(self, token: str = TOKEN, **fields) -> AzureArtifactsFeed:
        return AzureArtifactsFeed(upload_url=f"{self.url}/", index_url=self.index, username=USER, token=token,
                                  timeout_seconds=20, **fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_package_index(root: Path, *, users: dict[str, str]) -> Iterator[IndexServer]:
    """pypiserver on 127.0.0.1: authentication for update, list and download; no overwrite; stopped by pid."""
    with warnings.catch_warnings():  # passlib imports the crypt module, deprecated since Python 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        from passlib.apache import HtpasswdFile

    packages = root / "packages"
    packages.mkdir(parents=True)
    passwords = HtpasswdFile(str(root / "htpasswd"), new=True)
    for user, password in users.items():
        passwords.set_password(user, password)
    passwords.save()
    port = free_port()
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pypiserver", "run", "--host", "127.0.0.1", "--port", str(port),
             "--passwords", str(root / "htpasswd"), "--authenticate", "update,list,download", "--disable-fallback",
             "--server", "wsgiref", str(packages)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (root / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "pypiserver did not come up:\n" + (root / "server.log").read_text()
            time.sleep(0.1)
        yield IndexServer(url=url, pid=process.pid, packages=packages)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


