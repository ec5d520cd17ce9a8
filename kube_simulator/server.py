"""HTTP front of the simulator: routes Kubernetes API paths onto the store."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

from . import resources
from .faults import Faults
from .resources import BY_PATH, ResourceType
from .selectors import SelectorError, exact_field, field_selector, label_selector
from .status import ApiError, bad_request
from .store import Event, Store

logger = logging.getLogger(__name__)

_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
_DEFAULT_WATCH_SECONDS = 1800
_WAKE_SECONDS = 0.5


class SimulatorServer(ThreadingHTTPServer):
    """Threaded HTTP server that knows its store and can sever kept-alive connections on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default backlog of 5 turns bursts of new connections into 1 s SYN retries

    def __init__(self, address: tuple[str, int], store: Store, faults: Faults | None = None):
        super().__init__(address, _Handler)
        self.store = store
        self.faults = faults if faults is not None else Faults()
        self.stopping = threading.Event()
        self._count_lock = threading.Lock()
        self.request_count = 0
        self.requests_by_method: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()

    def count_request(self, method: str) -> None:
        with self._count_lock:
            self.request_count += 1
            self.requests_by_method[method] += 1

    def reset_request_count(self) -> None:
        with self._count_lock:
            self.request_count = 0
            self.requests_by_method = Counter()

    def process_request(self, request, client_address):  # noqa: ANN001 - stdlib signature
        with self._count_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # noqa: ANN001 - stdlib signature
        with self._count_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def sever_connections(self) -> None:
        with self._count_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms per request.
    disable_nagle_algorithm = True
    server: SimulatorServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # plumbing --------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        self.server.count_request(method)
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            raw = self._read_body()
            injected = self.server.faults.take(method, url.path)
            if injected is not None:
                raise injected
            code, body = self._dispatch(method, url.path, query, raw)
        except ApiError as exc:
            code, body = exc.code, exc.status()
        except SelectorError as exc:
            code, body = 400, bad_request(str(exc)).status()
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as exc:  # a bug must answer a Status, not drop the connection
            logger.exception("simulator failed on %s %s", method, self.path)
            code, body = 500, ApiError(500, "InternalError", f"simulator error: {exc!r}").status()
        if body is not None:
            self._send(code, body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: dict | bytes) -> None:
        data = body if isinstance(body, bytes) else self.server.store.encoded(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _parse(self, raw: bytes, *, yaml_ok: bool = False) -> object:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            if not yaml_ok:
                raise bad_request("the request body is not valid JSON") from None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"the request body is not valid YAML: {exc}") from exc

    # routing ---------------------------------------------------------------------------------

    def _dispatch(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, dict | bytes | None]:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"] or parts == ["healthz"] or parts == ["readyz"] or parts == ["livez"]:
            return 200, resources.VERSION_INFO if parts == ["version"] else {"status": "ok"}
        discovery = _discovery(parts)
        if discovery is not None:
            if method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return 200, discovery
        rt, namespace, name, subresource = _resource_route(parts)
        if subresource is not None and method not in ("GET", "PUT", "PATCH"):
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on the {subresource} subresource")
        dry_run = _dry_run(query)
        store = self.server.store
        if method == "GET":
            if name is not None:
                return 200, store.get(rt, namespace, name)
            if _flag(query, "watch"):
                self._watch(rt, namespace, query)
                return 200, None
            return 200, self._list(rt, namespace, query)
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        if method == "POST":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST is not supported on a named resource")
            return 201, store.create(rt, namespace, self._parse(raw), manager=manager, dry_run=dry_run)
        if name is None:
            if method == "DELETE":
                labels, fields = _selectors(query)
                return 200, store.delete_collection(rt, namespace, labels=labels, fields=fields, dry_run=dry_run)
            raise ApiError(405, "MethodNotAllowed", f"{method} needs a resource name")
        if method == "PUT":
            body = self._parse(raw)
            return 200, store.replace(
                rt, namespace, name, body, manager=manager, subresource=subresource, dry_run=dry_run
            )
        if method == "PATCH":
            return self._patch(rt, namespace, name, subresource, query, raw, dry_run)
        if method == "DELETE":
            options = self._parse(raw) or {}
            dry_run = dry_run or (isinstance(options, dict) and "All" in (options.get("dryRun") or []))
            preconditions = options.get("preconditions") if isinstance(options, dict) else None
            return 200, store.delete(rt, namespace, name, dry_run=dry_run, preconditions=preconditions)
        raise ApiError(405, "MethodNotAllowed", f"method {method} is not supported")

    def _patch(self, rt, namespace, name, subresource, query, raw, dry_run) -> tuple[int, dict]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        patch_type = _PATCH_TYPES.get(content_type)
        if patch_type is None:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        store = self.server.store
        manager = query.get("fieldManager")
        if patch_type != "apply" and not manager:
            manager = (self.headers.get("User-Agent") or "unknown").split("/")[0]
        existed = patch_type != "apply" or store.exists(rt, namespace, name)
        result = store.patch(
            rt,
            namespace,
            name,
            patch_type,
            self._parse(raw, yaml_ok=patch_type == "apply"),
            manager=manager,
            force=_flag(query, "force"),
            subresource=subresource,
            dry_run=dry_run,
        )
        return (200 if existed else 201), result

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> bytes:
        labels, fields = _selectors(query)
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        items, rv, token = self.server.store.list(
            rt,
            namespace,
            labels=labels,
            fields=fields,
            name=exact_field(query.get("fieldSelector"), "metadata.name"),
            limit=limit or None,
            continue_token=query.get("continue") or None,
        )
        metadata: dict = {"resourceVersion": str(rv)}
        if token:
            metadata["continue"] = token
        head = json.dumps({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata})
        encoded = self.server.store.encoded
        return head[:-1].encode() + b',"items":[' + b",".join(encoded(obj) for obj in items) + b"]}"

    # watch -----------------------------------------------------------------------------------

    def _watch(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        labels, fields = _selectors(query)
        store = self.server.store
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else _DEFAULT_WATCH_SECONDS
        deadline = time.monotonic() + timeout
        since = query.get("resourceVersion") or "0"
        if not since.isdigit():
            raise bad_request(f"invalid resourceVersion {since!r}")

        def matches(obj: dict | None) -> bool:
            if obj is None or (namespace is not None and obj["metadata"].get("namespace") != namespace):
                return False
            return (not labels or labels(obj)) and (not fields or fields(obj))

        def seen_as(event: Event) -> str | None:
            """The event type this watcher sees: a change moving an object out of (into) the selection
            is a DELETED (ADDED) for it, as with the API server."""
            if event.rt is not rt:
                return None
            now_in = matches(event.obj)
            if event.type != "MODIFIED":
                return event.type if now_in else None
            was_in = matches(event.old)
            if was_in and now_in:
                return "MODIFIED"
            return "ADDED" if now_in else ("DELETED" if was_in else None)

        with store.lock:
            if since == "0":
                initial, cursor, _ = store.list(rt, namespace, labels=labels, fields=fields)
                lines = [("ADDED", obj) for obj in initial]
            else:
                cursor, lines = int(since), []
                if store.events_after(cursor) is None:
                    lines = None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            if lines is None:
                self._chunk([("ERROR", _expired(since))])
            else:
                self._chunk(lines)
            while lines is not None and not self.server.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with store.changed:
                    events = store.events_after(cursor)
                    if events == []:
                        store.changed.wait(min(remaining, _WAKE_SECONDS))
                        events = store.events_after(cursor)
                if events is None:
                    self._chunk([("ERROR", _expired(str(cursor)))])
                    break
                if events:
                    cursor = events[-1].rv
                    seen = [(seen_as(e), e.data) for e in events]
                    self._chunk([(kind, data) for kind, data in seen if kind])
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def _chunk(self, events: list[tuple[str, dict | bytes]]) -> None:
        if not events:
            return
        encoded = self.server.store.encoded
        data = b"".join(
            b'{"type":"' + kind.encode() + b'","object":' + (obj if isinstance(obj, bytes) else encoded(obj)) + b"}\n"
            for kind, obj in events
        )
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _discovery(parts: list[str]) -> dict | None:
    if parts == ["api"]:
        return resources.core_versions()
    if parts == ["api", "v1"]:
        return resources.resource_list("", "v1")
    if parts == ["apis"]:
        return resources.group_list()
    if len(parts) == 2 and parts[0] == "apis":
        return resources.group(parts[1]) or _raise_not_found()
    if len(parts) == 3 and parts[0] == "apis":
        return resources.resource_list(parts[1], parts[2]) or _raise_not_found()
    return None


def _raise_not_found() -> dict:
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


def _resource_route(parts: list[str]) -> tuple[ResourceType, str | None, str | None, str | None]:
    if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        _raise_not_found()
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = BY_PATH.get((group, version, rest[2]))
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = BY_PATH.get((group, version, rest[0]))
    if rt is None or len(rest) > 3:
        _raise_not_found()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if subresource is not None and (subresource != "status" or not rt.has_status):
        _raise_not_found()
    if rt.namespaced and name is not None and namespace is None:
        _raise_not_found()
    return rt, namespace, name, subresource


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun")
    if value is None or value == "":
        return False
    if value != "All":
        raise bad_request(f'invalid dryRun value {value!r}: only "All" is supported')
    return True


def _selectors(query: dict[str, str]):  # noqa: ANN202 - pair of optional predicates
    return label_selector(query.get("labelSelector")), field_selector(query.get("fieldSelector"))


def _expired(since: str) -> dict:
    return ApiError(410, "Expired", f"too old resource version: {since}").status()


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")
