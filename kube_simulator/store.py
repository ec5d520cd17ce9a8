"""The object store: indexed by type, namespace and name, versioned by one global resourceVersion.

Stored objects are never mutated once stored (every write stores a fresh copy), so readers can
serialise them outside the lock and watch events can share them.
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from . import defaults
from .fields import ApplyConflict, record_update, server_side_apply
from .patch import PatchError, clone, json_merge_patch, json_patch, strategic_merge
from .resources import RESOURCE_TYPES, ResourceType
from .selectors import Predicate
from .status import ApiError, already_exists, bad_request, conflict, not_found, success

_EVENT_LOG_LIMIT = 50_000
_NAMESPACE = next(t for t in RESOURCE_TYPES if t.kind == "Namespace")
_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

Listener = Callable[[ResourceType, dict | None, dict | None], None]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: dict | None) -> dict:
    return {k: v for k, v in (obj or {}).items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: dict | None) -> dict | None:
    """The object minus what a no-op write would still change (rv, managedFields timestamps)."""
    if obj is None:
        return None
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    fields = [{k: v for k, v in e.items() if k != "time"} for e in obj.get("metadata", {}).get("managedFields", [])]
    return {**obj, "metadata": meta, "__fields": fields}


def encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Event:
    """One change; ``data`` is the object already serialised (watchers share it), ``old`` what it replaced."""

    __slots__ = ("rv", "rt", "type", "obj", "data", "old")

    def __init__(self, rv: int, rt: ResourceType, type_: str, obj: dict, data: bytes, old: dict | None = None):
        self.rv, self.rt, self.type, self.obj, self.data, self.old = rv, rt, type_, obj, data, old


class Store:
    """Thread-safe object store; every public method takes the lock once."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0
        self._objects: dict[ResourceType, dict[str, dict[str, dict]]] = {t: {} for t in RESOURCE_TYPES}
        self._events: list[Event] = []
        self._event_rvs: list[int] = []
        self._oldest_rv = 0
        self._listeners: list[Listener] = []
        # JSON of every stored object, keyed by id(): stored objects are immutable, so it never goes
        # stale, and an entry is dropped when its object leaves the store.
        self._encoded: dict[int, bytes] = {}
        for name in _INITIAL_NAMESPACES:
            self.create(_NAMESPACE, None, {"metadata": {"name": name}}, manager="simulator")

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # reads -----------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        with self.lock:
            obj = self._objects[rt].get(namespace or "", {}).get(name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def encoded(self, obj: dict) -> bytes:
        """The JSON of an object returned by this store (cached for stored objects)."""
        cached = self._encoded.get(id(obj))
        return cached if cached is not None else encode(obj)

    def exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        with self.lock:
            return name in self._objects[rt].get(namespace or "", {})

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        labels: Predicate | None = None,
        fields: Predicate | None = None,
        name: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[dict], int, str | None]:
        """Matching objects sorted by namespace and name, the list's resourceVersion, the next token."""
        start = _decode_continue(continue_token) if continue_token else None
        with self.lock:
            by_ns = self._objects[rt]
            spaces = [namespace or ""] if namespace is not None or not rt.namespaced else sorted(by_ns)
            rv = self.rv
            candidates: list[tuple[str, str, dict]] = []
            for ns in spaces:
                objects = by_ns.get(ns, {})
                if name is not None:
                    found = objects.get(name)
                    candidates.extend([(ns, name, found)] if found is not None else [])
                else:
                    candidates.extend((ns, n, o) for n, o in objects.items())
        candidates.sort(key=lambda c: (c[0], c[1]))
        items, token = [], None
        for ns, n, obj in candidates:
            if start is not None and (ns, n) <= start:
                continue
            if (labels and not labels(obj)) or (fields and not fields(obj)):
                continue
            if limit and len(items) >= limit:
                token = _encode_continue(items[-1])
                break
            items.append(obj)
        return items, rv, token

    # writes ----------------------------------------------------------------------------------

    def create(
        self, rt: ResourceType, namespace: str | None, body: dict, *, manager: str, dry_run: bool = False
    ) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        _check_kind(rt, body)
        body_ns = meta.get("namespace")
        if rt.namespaced and body_ns and namespace and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        defaults.validate_name(rt, name)
        with self.lock:
            if rt.namespaced and not self._objects[_NAMESPACE].get("", {}).get(namespace or ""):
                raise not_found(_NAMESPACE, namespace or "")
            if name in self._objects[rt].get(namespace or "", {}):
                raise already_exists(rt, name)
            return self._commit(rt, namespace, name, None, body, manager=manager, dry_run=dry_run)

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict,
        *,
        manager: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        _check_kind(rt, body)
        _check_name(body, name)
        with self.lock:
            old = self._current(rt, namespace, name)
            _check_precondition(rt, name, old, body)
            return self._commit(
                rt, namespace, name, old, body, manager=manager, subresource=subresource, dry_run=dry_run
            )

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: object,
        *,
        manager: str | None,
        force: bool = False,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        with self.lock:
            existing = self._objects[rt].get(namespace or "", {}).get(name)
            if patch_type == "apply":
                body = self._applied(rt, namespace, name, existing, patch, manager, force, subresource)
                writer = None  # server-side apply has already recorded the managed fields
            else:
                body = _patched(rt, name, existing, patch_type, patch)
                writer = manager or "unknown"
            return self._commit(
                rt, namespace, name, existing, body, manager=writer, subresource=subresource, dry_run=dry_run
            )

    def _applied(self, rt, namespace, name, existing, config, manager, force, subresource) -> dict:
        if not manager:
            raise bad_request("PATCH requests with apply content type must include fieldManager")
        if not isinstance(config, dict):
            raise bad_request("an applied configuration must be an object")
        _check_kind(rt, config, required=True)
        _check_name(config, name)
        if existing is None:
            if subresource:
                raise not_found(rt, name)
            if rt.namespaced and not self._objects[_NAMESPACE].get("", {}).get(namespace or ""):
                raise not_found(_NAMESPACE, namespace or "")
            defaults.validate_name(rt, name)
        _check_precondition(rt, name, existing, config)
        scope = True if subresource == "status" else (False if rt.has_status else None)
        try:
            merged, managed = server_side_apply(
                existing, config, manager=manager, force=force, api_version=rt.api_version, now=now(), scope=scope
            )
        except ApplyConflict as exc:
            raise ApiError(409, "Conflict", str(exc), {"name": name, "group": rt.group, "kind": rt.plural}) from exc
        merged.setdefault("metadata", {})["managedFields"] = managed
        return merged

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        dry_run: bool = False,
        preconditions: dict | None = None,
    ) -> dict:
        with self.lock:
            old = self._current(rt, namespace, name)
            meta = old["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                    raise conflict(rt, name, "Precondition failed: UID in precondition does not match the object")
                wanted = preconditions.get("resourceVersion")
                if wanted and wanted != meta["resourceVersion"]:
                    raise conflict(rt, name, "Precondition failed: resourceVersion does not match the object")
            if not dry_run:
                if rt is _NAMESPACE:
                    for other in RESOURCE_TYPES:
                        for child in list(self._objects[other].get(name, {}).values()):
                            self._remove(other, name, child)
                self._remove(rt, namespace, old)
        if rt.kind == "Service":  # the API server answers with the deleted Service, other kinds with a Status
            return old
        return success(rt, name, meta["uid"])

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        labels: Predicate | None,
        fields: Predicate | None,
        dry_run: bool,
    ) -> dict:
        with self.lock:
            items, _, _ = self.list(rt, namespace, labels=labels, fields=fields)
            for obj in items:
                self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], dry_run=dry_run)
            return {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }

    def update_status(self, rt: ResourceType, namespace: str | None, name: str, status: dict, *, manager: str) -> None:
        """A controller writes status (no-op when unchanged); silently ignores objects gone meanwhile."""
        with self.lock:
            old = self._objects[rt].get(namespace or "", {}).get(name)
            if old is None or old.get("status") == status:
                return
            self._commit(rt, namespace, name, old, {**old, "status": status}, manager=manager, subresource="status")

    # watch -----------------------------------------------------------------------------------

    def events_after(self, rv: int) -> list[Event] | None:
        """Events newer than ``rv`` (caller holds the lock); None when ``rv`` is older than the log."""
        if rv < self._oldest_rv:
            return None
        return self._events[bisect.bisect_right(self._event_rvs, rv) :]

    # internals -------------------------------------------------------------------------------

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self._objects[rt].get(namespace or "", {}).get(name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _commit(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        old: dict | None,
        body: dict,
        *,
        manager: str | None,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """Normalise, default, version and store one write; returns what is stored (or would be)."""
        new = clone(body)
        applied_fields = None if manager else new.get("metadata", {}).get("managedFields")
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        new["metadata"] = meta
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for key in ("resourceVersion", "managedFields", "selfLink", "deletionTimestamp"):
            meta.pop(key, None)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta.pop("generation", None)
            if rt.has_status:
                new.pop("status", None)
                if (initial := defaults.initial_status(rt)) is not None:
                    new["status"] = initial
        else:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "generation"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if subresource == "status":
                new = {**clone({k: v for k, v in old.items() if k != "status"}), "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
                meta = new["metadata"]
            elif rt.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = clone(old["status"])
        if subresource != "status":
            defaults.validate_metadata(rt, new)
            defaults.apply_defaults(rt, new, old)
        if rt.has_generation:
            if old is None:
                meta["generation"] = 1
            elif _spec_part(new) != _spec_part(old):
                meta["generation"] = old["metadata"].get("generation", 0) + 1
        if applied_fields is not None:
            meta["managedFields"] = applied_fields
        else:
            meta["managedFields"] = record_update(
                old,
                new,
                manager=manager or "unknown",
                api_version=rt.api_version,
                now=now(),
                subresource=subresource,
                status=rt.has_status,
            )
        if not meta["managedFields"]:
            meta.pop("managedFields")
        if old is not None and _comparable(new) == _comparable(old):
            return old
        if dry_run:
            if old is not None:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self._objects[rt].setdefault(namespace or "", {})[name] = new
        data = self._encoded[id(new)] = encode(new)
        if old is not None:
            self._encoded.pop(id(old), None)
        self._record(rt, "ADDED" if old is None else "MODIFIED", new, data, old)
        for listener in self._listeners:
            listener(rt, old, new)
        return new

    def _remove(self, rt: ResourceType, namespace: str | None, obj: dict) -> None:
        bucket = self._objects[rt].get(namespace or "", {})
        bucket.pop(obj["metadata"]["name"], None)
        if not bucket:
            self._objects[rt].pop(namespace or "", None)
        self._encoded.pop(id(obj), None)
        self.rv += 1
        gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._record(rt, "DELETED", gone, encode(gone))
        for listener in self._listeners:
            listener(rt, obj, None)

    def _record(self, rt: ResourceType, type_: str, obj: dict, data: bytes, old: dict | None = None) -> None:
        self._events.append(Event(self.rv, rt, type_, obj, data, old))
        self._event_rvs.append(self.rv)
        if len(self._events) > _EVENT_LOG_LIMIT:
            cut = _EVENT_LOG_LIMIT // 2
            self._oldest_rv = self._event_rvs[cut - 1]
            del self._events[:cut], self._event_rvs[:cut]
        self.changed.notify_all()


def _check_kind(rt: ResourceType, body: dict, *, required: bool = False) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if required and (not kind or not api_version):
        raise bad_request("apiVersion and kind must be set in an applied configuration")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind of the object ({kind}) does not match the endpoint ({rt.kind})")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the apiVersion of the object ({api_version}) does not match the endpoint ({rt.api_version})"
        )


def _patched(rt: ResourceType, name: str, existing: dict | None, patch_type: str, patch: object) -> dict:
    """The object a JSON, merge or strategic merge patch makes of ``existing``."""
    if existing is None:
        raise not_found(rt, name)
    try:
        if patch_type == "json":
            if not isinstance(patch, list):
                raise bad_request("a JSON patch must be a list of operations")
            body = json_patch(existing, patch)
        elif not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        elif patch_type == "merge":
            body = json_merge_patch(existing, patch)
        else:
            body = strategic_merge(existing, patch)
    except PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from exc
    if isinstance(patch, dict):
        _check_precondition(rt, name, existing, patch)
    return body


def _check_name(body: dict, name: str) -> None:
    body_name = (body.get("metadata") or {}).get("name")
    if body_name and body_name != name:
        raise bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")


def _check_precondition(rt: ResourceType, name: str, old: dict | None, body: dict) -> None:
    wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
    if wanted and (old is None or wanted != old["metadata"]["resourceVersion"]):
        if old is None:
            raise not_found(rt, name)
        raise conflict(rt, name)


def _encode_continue(last: dict) -> str:
    meta = last["metadata"]
    raw = json.dumps([meta.get("namespace") or "", meta["name"]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        ns, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return ns, name
    except (ValueError, TypeError) as exc:
        raise ApiError(400, "BadRequest", "invalid continue token") from exc
