"""An HTTP server for tests, on 127.0.0.1 in a thread: Git smart HTTP through CGI ``git http-backend`` over
bare repositories, and a REST API a fake provider (tests/blocks/fake_github.py, fake_azure_repos.py) answers.

Every request must carry the expected ``Authorization`` header (401 otherwise). ``fail_next`` makes the
next REST answers faults (status, headers, body) to test error handling end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


# (request) -> Answer, or None when the route does not match
Route = Callable[[Request], "Answer | None"]
# (request path) -> (GIT_PROJECT_ROOT, PATH_INFO), or None when the path is not a git path
GitRoute = Callable[[str], "tuple[Path, str] | None"]


def git(repo: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    """Run git in a bare repository of the server (the fakes' merges and reads)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "Fake Host", "GIT_AUTHOR_EMAIL": "host@example.invalid",
           "GIT_COMMITTER_NAME": "Fake Host", "GIT_COMMITTER_EMAIL": "host@example.invalid"}
    proc = subprocess.run(["git", "--git-dir", str(repo), *args], input=input, capture_output=True, env=env,
                          check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {args}: {proc.stderr.decode()}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else ""


def init_bare(path: Path) -> Path:
    """An empty bare repository (the host's "new repository")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True)
    return path


def branch_head(repo: Path, branch: str) -> str | None:
    return git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False) or None


def merge_tree(repo: Path, base: str, head: str) -> str | None:
    """The tree of merging ``head`` into ``base``, or None on conflicts (``git merge-tree --write-tree``)."""
    proc = subprocess.run(["git", "--git-dir", str(repo), "merge-tree", "--write-tree", base, head],
                          capture_output=True, check=False)
    return proc.stdout.decode().split("\n", 1)[0].strip() if proc.returncode == 0 else None


def merge(repo: Path, *, target: str, head: str, message: str, squash: bool) -> str:
    """Merge ``head`` into branch ``target`` (a merge commit, or one squashed commit); the new target sha."""
    base = branch_head(repo, target)
    assert base is not None
    tree = merge_tree(repo, base, head)
    if tree is None:
        raise RuntimeError("conflicts")
    parents = ["-p", base] if squash else ["-p", base, "-p", head]
    sha = git(repo, "commit-tree", tree, *parents, input=message.encode())
    git(repo, "update-ref", f"refs/heads/{target}", sha, base)
    return sha


class FakeServer:
    """The thread serving one fake provider; ``url`` is its base (``http://127.0.0.1:<port>``)."""

    def __init__(self, *, git_route: GitRoute, api: Route, git_auth: str, api_auth: str) -> None:
        self.git_route, self.api, self.git_auth, self.api_auth = git_route, api, git_auth, api_auth
        self.faults: list[Answer] = []
        self.log: list[Request] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def fail_next(self, status: int, headers: dict[str, str] | None = None, body: Any = None, times: int = 1) -> None:
        self.faults += [Answer(status, body, headers or {})] * times


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        request = Request(self.command, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                          {k.lower(): v for k, v in self.headers.items()}, self._body())
        fake = self.fake
        with fake._lock:
            fake.log.append(request)
        target = fake.git_route(parts.path)
        expected = fake.git_auth if target is not None else fake.api_auth
        if request.headers.get("authorization") != expected:
            self._send(401, b'{"message": "Bad credentials"}', {"WWW-Authenticate": 'Basic realm="fake"',
                                                               "Content-Type": "application/json"})
            return
        if target is not None:
            self._git(request, *target, parts.query)
            return
        with fake._lock:
            answer = fake.faults.pop(0) if fake.faults else None
        if answer is None:
            try:
                answer = fake.api(request) or Answer(404, {"message": "Not Found"})
            except Exception as exc:  # noqa: BLE001 - a broken fake answers 500 and says why
                answer = Answer(500, {"message": f"fake failed: {exc!r}"})
        body = b"" if answer.body is None else json.dumps(answer.body).encode()
        self._send(answer.status, body, {"Content-Type": "application/json", **answer.headers})

    def _git(self, request: Request, root: Path, path_info: str, query: str) -> None:
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
               "REMOTE_USER": "delivery", "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": request.method,
               "PATH_INFO": path_info, "QUERY_STRING": query, "CONTENT_TYPE": request.headers.get("content-type", ""),
               "CONTENT_LENGTH": str(len(request.body)), "GIT_PROTOCOL": request.headers.get("git-protocol", ""),
               "HTTP_CONTENT_ENCODING": request.headers.get("content-encoding", "")}
        proc = subprocess.run(["git", "http-backend"], input=request.body, capture_output=True, env=env, check=False)
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, body = proc.stdout.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        self._send(status, body, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
