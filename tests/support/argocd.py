"""An in-test Argo CD API on 127.0.0.1 answering the documented shapes with state (tests/blocks, tests/flows).

The fake keeps one Application per name: a sync POST sets its operation Running and its sync OutOfSync,
then over a few status reads it becomes Synced at the revision and Progressing, then Healthy (or
Degraded for the revisions a test marks). Every request must carry a Bearer token the fake knows: the
static token, or one ``POST /api/v1/session`` handed out.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from pydantic import SecretStr
from support.runtime import APP, FAST_VALUES, SAMPLE_DEPLOY

from blocks.argocd_runtime import ArgoCDRuntime
from blocks.gitops_repo import GitOpsRepo
from delivery.manifests import ManifestSpec, render, templates_from_dir
from tasks.promote import Promotion, write_promotion

STATIC_TOKEN = "static-token-s3cr3t"
PASSWORD = "pa55-w0rd-s3cr3t"
ENVIRONMENT = "dev"
APPLICATION = f"{APP}-{ENVIRONMENT}"


@dataclass
class FakeApp:
    sync_status: str = "OutOfSync"
    revision: str | None = None
    health: str = "Missing"
    health_message: str = ""
    phase: str | None = None
    target: str | None = None
    reads_since_sync: int = 0

    def document(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = {"sync": {"status": self.sync_status, "revision": self.revision},
                                  "health": {"status": self.health, "message": self.health_message}}
        if self.phase:
            status["operationState"] = {"phase": self.phase, "syncResult": {"revision": self.target}}
        return {"metadata": {"name": name}, "spec": {}, "status": status}


@dataclass
class FakeArgo:
    """The Argo CD API's state, shared with the handler thread."""

    url: str = ""
    reads_to_sync: int = 2
    reads_to_health: int = 2
    apps: dict[str, FakeApp] = field(default_factory=lambda: {APPLICATION: FakeApp()})
    degraded: set[str] = field(default_factory=set)
    reported_head: str | None = None  # when set, Synced is reported at this revision (the tracked branch's head)
    degrade_next_sync: bool = False  # the revision of the next sync POST ends Degraded (unknown to the test before)
    tokens: set[str] = field(default_factory=lambda: {STATIC_TOKEN})
    users: dict[str, str] = field(default_factory=lambda: {"admin": PASSWORD})
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def syncs(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if method == "POST" and path.endswith("/sync")]

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, path, _ in self.requests if m == method and path.endswith(suffix))

    def answer(self, method: str, raw_path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            parsed = urlparse(raw_path)
            self.requests.append((method, parsed.path, body))
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, {"error": "slow down", "code": 8}
            if method == "POST" and parsed.path == "/api/v1/session":
                if self.users.get(body.get("username")) != body.get("password"):
                    return 401, {"error": "Invalid username or password", "code": 16}
                token = f"session-{uuid.uuid4().hex}"
                self.tokens.add(token)
                return 200, {"token": token}
            auth = headers.get("Authorization") or ""
            presented = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or presented not in self.tokens:
                # a careless server echoing the credential: the product must not repeat it
                return 401, {"error": f"invalid session: token {presented} is not valid", "code": 16}
            parts = parsed.path.split("/")  # ['', 'api', 'v1', 'applications', name, ('sync')]
            if len(parts) < 5 or parts[3] != "applications":
                return 404, {"error": "not found", "code": 5}
            app = self.apps.get(parts[4])
            if app is None:
                return 404, {"error": f'applications.argoproj.io "{parts[4]}" not found', "code": 5,
                             "message": f'applications.argoproj.io "{parts[4]}" not found'}
            if method == "POST" and len(parts) == 6 and parts[5] == "sync":
                if not body.get("dryRun"):
                    if self.degrade_next_sync:
                        self.degraded.add(body["revision"])
                        self.degrade_next_sync = False
                    app.target, app.phase, app.sync_status, app.reads_since_sync = body["revision"], "Running", \
                        "OutOfSync", 0
                return 200, app.document(parts[4])
            if method == "GET" and len(parts) == 5:
                assert parse_qs(parsed.query).get("refresh") == ["normal"]
                if app.target and app.phase in ("Running", "Succeeded"):
                    app.reads_since_sync += 1
                    if app.reads_since_sync >= self.reads_to_sync:
                        app.sync_status, app.phase = "Synced", "Succeeded"
                        app.revision = self.reported_head or app.target
                        app.health, app.health_message = "Progressing", "Waiting for rollout to finish"
                    if app.reads_since_sync >= self.reads_to_sync + self.reads_to_health:
                        if app.target in self.degraded:
                            app.health = "Degraded"
                            app.health_message = f'Deployment "{APP}" exceeded its progress deadline'
                        else:
                            app.health, app.health_message = "Healthy", ""
                return 200, app.document(parts[4])
            return 404, {"error": "not found", "code": 5}


@contextmanager
def serve_argo() -> Iterator[FakeArgo]:
    """Start the fake Argo CD API on 127.0.0.1 in a thread; stop it after."""
    state = FakeArgo()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            code, answer = state.answer(self.command, self.path, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve  # noqa: N815 - the stdlib's names

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def runtime_for(argo: FakeArgo, **options: Any) -> ArgoCDRuntime:
    credentials: dict[str, Any] = {"token": SecretStr(STATIC_TOKEN)}
    if "username" in options or "token" in options:
        credentials = {}
    return ArgoCDRuntime(**{"server_url": argo.url, "poll_seconds": 0.01, "retry_backoff_seconds": 0.01,
                            "sync_timeout_seconds": 5, **credentials, **options})



def target() -> dict[str, Any]:
    return {"release_id": f"rel-argo-{uuid.uuid4().hex[:8]}", "trace_id": uuid.uuid4().hex, "app": APP,
            "environment": ENVIRONMENT, "namespace": f"{ENVIRONMENT}-ns"}


def promoted(repo: GitOpsRepo, image: str) -> tuple[dict[str, Any], str]:
    where = target()
    spec = ManifestSpec(**where, image=image, templates=templates_from_dir(SAMPLE_DEPLOY), values=FAST_VALUES)
    return where, write_promotion(repo, Promotion(**where, files=render(spec).files)).git_revision
