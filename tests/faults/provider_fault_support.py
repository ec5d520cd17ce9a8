"""Transient faults injected at the provider boundary, for the provider-fault tests (tests/faults/).

Nothing here mocks the product: each fault happens in the provider the product talks to.

- :func:`install_push_faults`: a ``pre-receive`` hook in a bare repository makes the next push of
  an armed ref fail, the way a push fails while another writer holds the ref's lock: the hook takes
  the ref's lock file and git itself rejects the update ("cannot lock ref ... File exists",
  ``[remote rejected] (failed to update ref)``). The next push of that ref removes the stale lock
  first and goes through. A ``post-receive`` hook records every ref really updated.
- :class:`RegistryFaultProxy`: an HTTP proxy on 127.0.0.1 in front of the real registry that
  answers armed requests (method, path regex) with a 5xx instead of forwarding them, once each,
  and records every request with its status.

The Kubernetes faults are the simulator's own (``KubernetesSimulator.inject_fault``); the Pulumi
fault is the recording CLI boundary's (``infra.testing.RecordingBackend.fail``).
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

# --------------------------------------------------------------------------- git push rejected

_PRE_RECEIVE = """#!/bin/sh
# Fault injection (tests/faults/provider_fault_support.py): a push of an armed ref fails, as while another
# writer holds the ref's lock, as many times as the ref is armed but never twice in a row; the
# push after a rejected one clears the stale lock and goes through.
state={state}
repo={repo}
while read old new ref; do
  key=$(printf '%s' "$ref" | tr '/' '_')
  armed=$(grep -cxF "$ref" "$state/armed")
  rejected=$(cat "$state/rejected-$key" 2>/dev/null || echo 0)
  last=$(cat "$state/last-$key" 2>/dev/null || echo none)
  if [ "$last" != rejected ] && [ "$armed" -gt "$rejected" ]; then
    mkdir -p "$(dirname "$repo/$ref")"
    : > "$repo/$ref.lock"
    echo $((rejected + 1)) > "$state/rejected-$key"
    echo rejected > "$state/last-$key"
    echo "rejected $ref $new" >> "$state/log"
  else
    if [ "$last" = rejected ]; then rm -f "$repo/$ref.lock"; fi
    echo passed > "$state/last-$key"
    echo "passed $ref $new" >> "$state/log"
  fi
done
exit 0
"""

_POST_RECEIVE = """#!/bin/sh
while read old new ref; do echo "updated $ref $new" >> {state}/log; done
exit 0
"""


@dataclass(frozen=True)
class PushEntry:
    """One line of a hook log: ``rejected`` / ``passed`` (pre-receive) or ``updated`` (post-receive)."""

    what: str
    ref: str
    sha: str


@dataclass
class PushFaults:
    """The push faults of one bare repository: what is armed and what the hooks saw."""

    repo: Path
    state: Path

    def arm(self, ref: str, *, times: int = 1) -> PushFaults:
        """Make the next push of ``ref`` (e.g. ``refs/heads/main``) fail, and ``times`` pushes in all.

        A rejected push is always followed by one that passes (its retry).
        """
        with open(self.state / "armed", "a") as armed:
            armed.writelines(f"{ref}\n" for _ in range(times))
        return self

    def log(self) -> list[PushEntry]:
        path = self.state / "log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [PushEntry(*line.split(" ", 2)) for line in lines]

    def count(self, what: str, ref: str) -> int:
        return sum(1 for entry in self.log() if entry.what == what and entry.ref == ref)

    def updates(self) -> list[str]:
        """The refs really moved, in order (one entry per ref per accepted push)."""
        return [entry.ref for entry in self.log() if entry.what == "updated"]


def install_push_faults(repo: str | Path, state: str | Path) -> PushFaults:
    """Install the fault hooks in a bare repository (nothing armed yet).

    Args:
        repo: the bare repository.
        state: a folder of the test for the armed list, the markers and the log.
    """
    repo, state = Path(repo).resolve(), Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    (state / "armed").touch()
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    for name, text in (("pre-receive", _PRE_RECEIVE), ("post-receive", _POST_RECEIVE)):
        hook = hooks / name
        hook.write_text(text.format(state=shlex.quote(str(state)), repo=shlex.quote(str(repo))))
        hook.chmod(0o755)
    return PushFaults(repo=repo, state=state)


# --------------------------------------------------------------------------- registry 5xx

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
               "content-length", "host"}


@dataclass
class ProxyFault:
    """Answer ``times`` requests matching ``method`` and the ``path`` regex with ``status``."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int = 1
    fired: int = 0


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    status: int
    injected: bool


@dataclass
class RegistryFaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry, answering armed requests with a 5xx.

    Forwarded requests keep their ``Host`` header, so the registry builds upload locations on the
    proxy's address and the whole push goes through it.
    """

    upstream: str
    faults: list[ProxyFault] = field(default_factory=list)
    requests: list[ProxiedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=self.upstream.rstrip("/"), timeout=60, follow_redirects=False)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="registry-fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def arm(self, method: str, path: str, *, status: int = 503, times: int = 1) -> ProxyFault:
        fault = ProxyFault(method=method.upper(), path=re.compile(path), status=status, times=times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> ProxyFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fired < fault.times and fault.method == method and fault.path.search(path):
                    fault.fired += 1
                    return fault
        return None

    def record(self, entry: ProxiedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def seen(self, method: str, path: str, *, status: int | None = None, injected: bool | None = None) -> int:
        """How many requests matched ``method`` and the ``path`` regex (and the status / injected flag)."""
        pattern = re.compile(path)
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and pattern.search(r.path)
                       and (status is None or r.status == status) and (injected is None or r.injected == injected))

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self._client.request(method, target, headers=headers, content=body)

    def start(self) -> RegistryFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._client.close()

    def __enter__(self) -> RegistryFaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _handler_for(proxy: RegistryFaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            """Silence per-request logging."""

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            fault = proxy.take(self.command, path)
            if fault is not None:
                data = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected fault",
                                               "detail": f"{self.command} {path}"}]}).encode()
                proxy.record(ProxiedRequest(self.command, path, fault.status, True))
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = self.headers.get("Host", "")
            response = proxy.forward(self.command, self.path, headers, body)
            proxy.record(ProxiedRequest(self.command, path, response.status_code, False))
            self.send_response(response.status_code)
            for key, value in response.headers.multi_items():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            payload = response.content
            if self.command == "HEAD":
                self.send_header("Content-Length", response.headers.get("Content-Length", "0"))
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay  # noqa: N815 - stdlib naming

    return Handler


def manifest_revisions(registry_root: Path, repository: str) -> list[str]:
    """The manifest digests the registry's storage holds for a repository (each stored once)."""
    folder = (registry_root / "storage" / "docker" / "registry" / "v2" / "repositories" / repository
              / "_manifests" / "revisions" / "sha256")
    return sorted(f"sha256:{p.name}" for p in folder.iterdir()) if folder.is_dir() else []
