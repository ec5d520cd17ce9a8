"""Drift: compare what Git says with what runs, and keep each environment's sync state.

The comparison is pure. It walks the *desired* objects (the ones in Git) and compares only the
fields they set, so defaults the server fills in and server-populated metadata (uid,
resourceVersion, managedFields, status, ...) are never drift. Lists of objects are matched by
their merge key (``name`` first), so a reordered list is not drift and a changed container shows
as ``spec.template.spec.containers[app].image``.

Field paths use dots for map keys, ``["a.b/c"]`` for keys that are not plain words, ``[name]``
for list items matched by name, ``[port=80]`` for items matched by another key and ``[0]`` by
position. Ignore rules use the same syntax, where ``*`` stands for any one key and ``[*]`` for
any list item; a rule also ignores everything below the path it names.

Sync state per environment (``Synced``, ``OutOfSync``, ``Degraded``) moves by
:func:`next_status` and is kept in the ledger database by :class:`SyncStateStore`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from delivery.errors import InvalidInput
from delivery.events import EventName
from delivery.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from delivery.models import utcnow
from delivery.schema import create_tables

# --------------------------------------------------------------------------- settings


class DriftMode(StrEnum):
    RECONCILE = "reconcile"
    DETECT = "detect"


class SyncState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    DEGRADED = "Degraded"


class DriftSettings(BaseModel):
    """An environment's ``drift`` section of delivery.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: DriftMode = DriftMode.RECONCILE
    ignore: tuple[str, ...] = ()
    degraded_after: int = Field(default=3, ge=1, description="consecutive checks with drift before Degraded")

    @field_validator("ignore")
    @classmethod
    def _rules_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for rule in value:
            try:
                parse_path(rule)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
        return value

    @classmethod
    def parse(cls, raw: Any, *, environment: str) -> DriftSettings:
        """Validate a raw ``drift`` mapping (or a model with the same fields).

        Raises:
            InvalidInput: naming ``environments.<env>.drift.<field>`` and what is wrong with it.
        """
        if raw is None:
            return cls()
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(mode="json")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"environments.{environment}.drift.{'.'.join(str(p) for p in err['loc']) or '(section)'}: "
                f"{err['msg']}"
                for err in exc.errors()
            )
            raise InvalidInput(f"invalid drift settings: {problems}") from None


# --------------------------------------------------------------------------- field paths

Segment = str  # a map key as is, or a list item as "[label]"

_TOKEN = re.compile(
    r"""\.?(?P<key>[A-Za-z0-9_\-*$@]+)
      | \[(?P<quoted>"(?:[^"\\]|\\.)*"|'[^']*')\]
      | \[(?P<item>[^\]]*)\]""",
    re.VERBOSE,
)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-*$@]+$")


def parse_path(text: str) -> tuple[Segment, ...]:
    """Split a field path such as ``spec.template.spec.containers[app].image`` into segments.

    Raises:
        InvalidInput: the text is not a field path.
    """
    if not text or not text.strip():
        raise InvalidInput("empty field path in drift.ignore")
    segments: list[Segment] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position or (position == 0 and text.startswith(".")):
            raise InvalidInput(f"drift.ignore: {text!r} is not a field path (problem at character {position + 1})")
        if match.group("key") is not None:
            segments.append(match.group("key"))
        elif match.group("quoted") is not None:
            quoted = match.group("quoted")
            segments.append(quoted[1:-1].replace('\\"', '"'))
        else:
            segments.append(f"[{match.group('item')}]")
        position = match.end()
    return tuple(segments)


def format_path(segments: Sequence[Segment]) -> str:
    """Join segments back into the path syntax (the inverse of :func:`parse_path`)."""
    out = ""
    for segment in segments:
        if segment.startswith("["):
            out += segment
        elif _PLAIN_KEY.match(segment):
            out += f".{segment}" if out else segment
        else:
            out += '["' + segment.replace('"', '\\"') + '"]'
    return out


class IgnoreRules:
    """Compiled ``drift.ignore`` rules; a rule ignores the path it names and all below it."""

    def __init__(self, rules: Iterable[str] = ()) -> None:
        self.rules = tuple(parse_path(rule) for rule in rules)

    def __call__(self, path: Sequence[Segment]) -> bool:
        return any(len(rule) <= len(path) and all(_segment_matches(r, p) for r, p in zip(rule, path, strict=False))
                   for rule in self.rules)


def _segment_matches(rule: Segment, actual: Segment) -> bool:
    if rule == "*":
        return not actual.startswith("[")
    if rule == "[*]":
        return actual.startswith("[")
    return rule == actual


# --------------------------------------------------------------------------- comparison

# What the server fills in on every object; never drift even if a manifest carries it.
SERVER_METADATA = frozenset(
    {"uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "selfLink", "deletionTimestamp",
     "deletionGracePeriodSeconds"}
)
# Keys that identify an item of a list of objects, in order of preference (Kubernetes merge keys).
MERGE_KEYS = ("name", "mountPath", "devicePath", "containerPort", "port", "ip")
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
     "StorageClass", "IngressClass", "PriorityClass"}
)


def field_differences(desired: Mapping[str, Any], live: Mapping[str, Any], *,
                      ignore: IgnoreRules | Iterable[str] = ()) -> list[str]:
    """List the paths of the fields set in ``desired`` whose live value differs.

    Args:
        desired: the object as Git has it.
        live: the object as the runtime returns it.
        ignore: ignore rules (compiled or as text).

    Returns:
        Sorted field paths, e.g. ``["spec.replicas", "spec.template.spec.containers[app].image"]``.
    """
    rules = ignore if isinstance(ignore, IgnoreRules) else IgnoreRules(ignore)
    out: list[tuple[Segment, ...]] = []
    for key, value in desired.items():
        if key in ("status", "apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(value, Mapping):
            meta = {k: v for k, v in value.items() if k not in SERVER_METADATA and k not in ("name", "namespace")}
            _walk(meta, live.get("metadata") or {}, ("metadata",), out, rules)
            continue
        _walk({key: value}, live, (), out, rules)
    return sorted(format_path(p) for p in out)


def _empty(value: Any) -> bool:
    """Whether a desired value sets nothing (null, or only empty maps and lists)."""
    if isinstance(value, Mapping):
        return all(_empty(v) for v in value.values())
    return value is None or value == []


def _walk(desired: Any, live: Any, path: tuple[Segment, ...], out: list[tuple[Segment, ...]],
          ignored: IgnoreRules) -> None:
    if (path and ignored(path)) or desired is None:
        return  # null in a manifest sets nothing
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            if not (_empty(desired) and live is None):
                out.append(path)
            return
        for key, value in desired.items():
            child = (*path, str(key))
            if key in live:
                _walk(value, live[key], child, out, ignored)
            elif not _empty(value) and not ignored(child):
                out.append(child)
        return
    if isinstance(desired, list):
        if not isinstance(live, list):
            if not (_empty(desired) and live is None):
                out.append(path)
            return
        _walk_list(desired, live, path, out, ignored)
        return
    if not _same_scalar(desired, live) and not (_QUANTITY_PARENTS & set(path) and _same_quantity(desired, live)):
        out.append(path)


# API servers write resource quantities in canonical form ("0.5" -> "500m", "1024Mi" -> "1Gi"),
# so under these keys two spellings of the same amount are not drift.
_QUANTITY_PARENTS = frozenset({"resources", "limits", "requests", "capacity", "allocatable", "hard"})
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": Decimal("1e-9"),
           "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "P": 10**15, "E": 10**18}


def quantity(value: Any) -> Decimal | None:
    """The amount a Kubernetes quantity (``500m``, ``1Gi``, ``2``, ``1e3``) stands for, or None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, exponent, suffix = match.groups()
    amount = Decimal(number)
    if exponent is not None:
        return amount.scaleb(int(exponent))
    return amount * _SUFFIX[suffix] if suffix else amount


def _same_quantity(desired: Any, live: Any) -> bool:
    want, have = quantity(desired), quantity(live)
    return want is not None and want == have


def _walk_list(desired: list[Any], live: list[Any], path: tuple[Segment, ...], out: list[tuple[Segment, ...]],
               ignored: IgnoreRules) -> None:
    key = _merge_key(desired, live)
    if key is None:
        if all(not isinstance(item, Mapping | list) for item in desired):
            if len(desired) != len(live) or any(not _same_scalar(d, v) for d, v in zip(desired, live, strict=False)):
                out.append(path)
            return
        if len(desired) != len(live):
            out.append(path)
            return
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            _walk(want, have, (*path, f"[{index}]"), out, ignored)
        return
    live_items = {_item_label(item, key): item for item in live if isinstance(item, Mapping)}
    desired_labels = set()
    for item in desired:
        label = _item_label(item, key)
        desired_labels.add(label)
        child = (*path, label)
        if label in live_items:
            _walk(item, live_items[label], child, out, ignored)
        elif not ignored(child):
            out.append(child)
    for label in live_items:
        child = (*path, label)
        if label not in desired_labels and not ignored(child):
            out.append(child)  # an item someone added, e.g. a sidecar container


def _merge_key(desired: list[Any], live: list[Any]) -> str | None:
    items = [item for item in (*desired, *live)]
    if not desired or not all(isinstance(item, Mapping) for item in items):
        return None
    for key in MERGE_KEYS:
        if all(key in item for item in desired):
            return key
    return None


def _item_label(item: Mapping[str, Any], key: str) -> Segment:
    value = item.get(key)
    return f"[{value}]" if key == "name" else f"[{key}={value}]"


def _same_scalar(desired: Any, live: Any) -> bool:
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    return desired == live


# --------------------------------------------------------------------------- objects


class ObjectKey(BaseModel):
    """Which object: group, kind, namespace and name (the API version does not matter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: str
    kind: str
    namespace: str | None = None
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rsplit("/", 1)[0] if "/" in self.api_version else ""

    @property
    def identity(self) -> tuple[str, str, str | None, str]:
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def object_key(obj: Mapping[str, Any], *, namespace: str | None = None) -> ObjectKey:
    """The key of a manifest or live object; ``namespace`` fills in a namespaced object without one.

    Raises:
        InvalidInput: the object has no apiVersion, kind or metadata.name.
    """
    meta = obj.get("metadata") or {}
    if not obj.get("apiVersion") or not obj.get("kind") or not meta.get("name"):
        raise InvalidInput("a manifest object needs apiVersion, kind and metadata.name")
    kind = str(obj["kind"])
    ns = None if kind in CLUSTER_SCOPED_KINDS else (meta.get("namespace") or namespace)
    return ObjectKey(api_version=str(obj["apiVersion"]), kind=kind, namespace=ns, name=str(meta["name"]))


class ObjectDrift(BaseModel):
    """One object that differs: missing from the runtime, extra in it, or changed on some fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: ObjectKey
    change: Literal["missing", "extra", "changed"]
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{self.change} {self.object}{detail}"


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether a live object carries the product's managed-by label."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def compare_objects(desired: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]], *,
                    namespace: str | None = None, ignore: IgnoreRules | Iterable[str] = ()) -> list[ObjectDrift]:
    """Compare Git's objects with the live managed ones.

    Live objects without the managed-by label are left out whatever the caller passed, so
    an object the product does not manage is never reported.

    Args:
        desired: the objects in Git.
        live: the objects the runtime lists for the environment.
        namespace: the environment's namespace, for manifests that leave it out.
        ignore: ignore rules.

    Returns:
        The drift, sorted by object: missing, extra and changed objects with their field paths.
    """
    rules = ignore if isinstance(ignore, IgnoreRules) else IgnoreRules(ignore)
    live_by_id = {}
    for obj in live:
        if is_managed(obj):
            key = object_key(obj, namespace=namespace)
            live_by_id[key.identity] = (key, obj)
    drift: list[ObjectDrift] = []
    seen = set()
    for obj in desired:
        key = object_key(obj, namespace=namespace)
        seen.add(key.identity)
        found = live_by_id.get(key.identity)
        if found is None:
            drift.append(ObjectDrift(object=key, change="missing"))
            continue
        fields = field_differences(obj, found[1], ignore=rules)
        if fields:
            drift.append(ObjectDrift(object=key, change="changed", fields=tuple(fields)))
    for identity, (key, _obj) in live_by_id.items():
        if identity not in seen:
            drift.append(ObjectDrift(object=key, change="extra"))
    return sorted(drift, key=lambda d: (d.object.kind, d.object.namespace or "", d.object.name, d.change))


# --------------------------------------------------------------------------- field ownership


def dropped_fields(desired: Mapping[str, Any], live: Mapping[str, Any], *, manager: str) -> list[str] | None:
    """The fields ``manager`` last server-side applied to ``live`` that ``desired`` no longer sets.

    :func:`compare_objects` sees only the fields Git sets, so a field Git dropped is invisible to it;
    a server-side apply would remove that field, and this says whether one is needed for that. It
    reads the manager's ``Apply`` entry of ``metadata.managedFields`` (FieldsV1) and looks each owned
    path up in ``desired``; no schema is needed, since an owned list item names its own key.

    Args:
        desired: the object as Git has it.
        live: the object as the runtime returns it.
        manager: the field manager of the applies (the runtime's).

    Returns:
        The dropped paths (empty when Git still sets every owned field), or None when ``manager``
        never applied the object (it owns none of its fields yet).
    """
    entries = [e for e in (live.get("metadata") or {}).get("managedFields") or []
               if isinstance(e, Mapping) and e.get("manager") == manager and e.get("operation") == "Apply"
               and not e.get("subresource")]
    if not entries:
        return None
    out: list[tuple[Segment, ...]] = []
    for entry in entries:
        _owned_missing(entry.get("fieldsV1") or {}, desired, (), out)
    return sorted({format_path(p) for p in out})


def _owned_missing(tree: Mapping[str, Any], desired: Any, path: tuple[Segment, ...],
                   out: list[tuple[Segment, ...]]) -> None:
    """Collect the FieldsV1 paths of ``tree`` that ``desired`` lacks (``f:`` key, ``k:`` item, ``v:`` value)."""
    for part, child in tree.items():
        if part == ".":  # the map or item itself: owned when any of its fields is
            continue
        found, value, segment = _owned_part(part, desired)
        if not found:
            out.append((*path, segment))
        elif isinstance(child, Mapping) and any(k != "." for k in child):
            _owned_missing(child, value, (*path, segment), out)


def _owned_part(part: str, desired: Any) -> tuple[bool, Any, Segment]:
    """Find one FieldsV1 step in ``desired``: whether it is there, its value, and its path segment."""
    kind, _, text = part.partition(":")
    if kind == "f":
        found = isinstance(desired, Mapping) and text in desired
        return found, desired[text] if found else None, text
    if kind == "k":
        keys = json.loads(text)
        items = desired if isinstance(desired, list) else []
        item = next((i for i in items if _same_item(i, keys)), None)
        label = ",".join(f"{k}={v}" for k, v in keys.items())
        return item is not None, item, f"[{keys['name']}]" if list(keys) == ["name"] else f"[{label}]"
    if kind == "v":
        value = json.loads(text)
        return isinstance(desired, list) and value in desired, value, f"[{text}]"
    if kind == "i":
        index = int(text)
        found = isinstance(desired, list) and 0 <= index < len(desired)
        return found, desired[index] if found else None, f"[{index}]"
    return False, None, f"[{part}]"  # a step this reader does not know: re-applying is the safe answer


def _same_item(item: Any, keys: Mapping[str, Any]) -> bool:
    """Whether a list item is the one a FieldsV1 ``k:`` step names.

    A key the manifest leaves out counts as matching: API servers fill in defaults before they
    record ownership (a container port applied without ``protocol`` is owned as
    ``k:{"containerPort":8080,"protocol":"TCP"}``), and the item is still the one Git sets.
    """
    if not isinstance(item, Mapping) or not keys:
        return False
    first, *_ = keys
    return item.get(first) == keys[first] and all(item.get(k, v) == v for k, v in keys.items())


# --------------------------------------------------------------------------- reports


class InfrastructureDrift(BaseModel):
    """The Pulumi stack's drift preview for an environment, or why it was skipped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str
    checked: bool
    skipped_reason: str | None = None
    changes: tuple[str, ...] = Field(default=(), description="resources the preview would change, e.g. 'update urn'")

    @property
    def drifted(self) -> bool:
        return bool(self.changes)


class DriftReport(BaseModel):
    """What one drift check of one environment found and did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    revision: str | None
    mode: DriftMode
    desired_objects: int
    live_objects: int
    drift: tuple[ObjectDrift, ...] = ()
    reconciled: bool = False
    remaining: tuple[ObjectDrift, ...] = Field(default=(), description="drift left after reconciling")
    reconcile_error: str | None = None
    infrastructure: InfrastructureDrift | None = None
    status: SyncStatus | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.drift) or bool(self.infrastructure and self.infrastructure.drifted)

    @property
    def missing(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "missing"]

    @property
    def extra(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "extra"]

    @property
    def changed(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "changed"]

    def summary(self) -> str:
        """One line per drifted object, or a note that everything matches."""
        lines = [str(d) for d in self.drift]
        if self.infrastructure and self.infrastructure.drifted:
            lines += [f"infrastructure {self.infrastructure.stack}: {c}" for c in self.infrastructure.changes]
        return "\n".join(lines) if lines else f"{self.environment}: live state matches revision {self.revision}"


# --------------------------------------------------------------------------- sync state


class SyncStatus(BaseModel):
    """An environment's sync state after its latest drift check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    state: SyncState
    reason: str
    message: str
    consecutive_drift: int = Field(default=0, ge=0, description="checks in a row that found drift")
    revision: str | None = None
    checked_at: datetime = Field(default_factory=utcnow)
    since: datetime = Field(default_factory=utcnow, description="when the state last changed")


DriftReport.model_rebuild()


def next_status(previous: SyncStatus | None, *, environment: str, revision: str | None, found: int,
                remaining: int, reconcile_error: str | None = None, degraded_after: int = 3,
                detail: str = "", now: datetime | None = None) -> tuple[SyncStatus, list[EventName]]:
    """Move an environment's sync state after a check and say which events to emit.

    A check that finds drift counts, whether or not it reconciled it: drift that comes back in
    ``degraded_after`` consecutive checks makes the environment Degraded. A check that finds
    none returns it to Synced (with ``SyncRecovered`` when it was not).

    Args:
        previous: the stored status, or None on the first check.
        environment: the environment's name.
        revision: the Git revision compared.
        found: drifted objects (and infrastructure) the check found.
        remaining: drift left after reconciling (equals ``found`` in detect mode).
        reconcile_error: why reconciling failed, if it did.
        degraded_after: consecutive checks with drift before Degraded.
        detail: a short description of the drift for the message.
        now: the clock.

    Returns:
        The new status and the events it calls for, in order.
    """
    now = now or utcnow()
    was = previous.state if previous else SyncState.SYNCED
    events: list[EventName] = []
    if found == 0:
        count = 0
        state, reason = SyncState.SYNCED, "InSync"
        message = f"live state matches revision {revision}"
        if was is not SyncState.SYNCED:
            events.append(EventName.SYNC_RECOVERED)
    else:
        count = (previous.consecutive_drift if previous else 0) + 1
        events.append(EventName.DRIFT_DETECTED)
        where = f"{found} drifted object(s) in {count} consecutive check(s)"
        if count >= degraded_after:
            state, reason = SyncState.DEGRADED, "PersistentDrift"
            message = f"{where} (limit {degraded_after})"
            if was is not SyncState.DEGRADED:
                events.append(EventName.SYNC_DEGRADED)
        elif reconcile_error:
            state, reason = SyncState.OUT_OF_SYNC, "ReconcileFailed"
            message = f"{where}; reconcile failed: {reconcile_error}"
        elif remaining:
            reason = "DriftDetected" if remaining == found else "ReconcileIncomplete"
            state, message = SyncState.OUT_OF_SYNC, f"{where}; {remaining} left"
        else:
            state, reason, message = SyncState.SYNCED, "Reconciled", f"{where}; reconciled"
        if detail:
            message = f"{message}: {detail}"
    status = SyncStatus(
        environment=environment, state=state, reason=reason, message=message[:2000], consecutive_drift=count,
        revision=revision, checked_at=now, since=previous.since if previous and previous.state is state else now,
    )
    return status, events


# --------------------------------------------------------------------------- persistence

drift_metadata = MetaData()

sync_states_table = Table(
    "environment_sync_states",
    drift_metadata,
    Column("environment", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("body", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

drift_checks_table = Table(
    "drift_checks",
    drift_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("drifted", Integer, nullable=False),
    Column("report", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


class SyncStateStore:
    """Each environment's current sync state, and every check appended, in the ledger database.

    Args:
        engine: the ledger's engine (``Ledger().engine``); the tables are created when missing.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, drift_metadata)

    def get(self, environment: str) -> SyncStatus | None:
        """The stored status of an environment, or None before its first check."""
        with self.engine.connect() as conn:
            body = conn.execute(
                select(sync_states_table.c.body).where(sync_states_table.c.environment == environment)
            ).scalar_one_or_none()
        return None if body is None else SyncStatus.model_validate(body)

    def all(self) -> list[SyncStatus]:
        """Every environment's status, by name."""
        with self.engine.connect() as conn:
            bodies = conn.execute(select(sync_states_table.c.body).order_by(sync_states_table.c.environment)).scalars()
            return [SyncStatus.model_validate(b) for b in bodies]

    def record(self, report: DriftReport, status: SyncStatus) -> None:
        """Store the new status and append the check, in one database transaction."""
        body = status.model_dump(mode="json")
        with self.engine.begin() as conn:
            values = {"state": status.state.value, "body": body, "updated_at": status.checked_at}
            done = conn.execute(
                update(sync_states_table).where(sync_states_table.c.environment == status.environment).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(sync_states_table).values(environment=status.environment, **values))
            conn.execute(
                insert(drift_checks_table).values(
                    environment=status.environment, state=status.state.value, drifted=len(report.drift),
                    report=report.model_dump(mode="json"), at=status.checked_at,
                )
            )

    def checks_since(self, at: datetime, *, environment: str | None = None) -> list[dict[str, Any]]:
        """The checks recorded at or after ``at`` (latest per environment), by environment."""
        query = select(drift_checks_table).where(drift_checks_table.c.at >= at).order_by(drift_checks_table.c.id)
        if environment is not None:
            query = query.where(drift_checks_table.c.environment == environment)
        latest: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings().all():
                latest[row["environment"]] = dict(row)
        return [latest[name] for name in sorted(latest)]

    def checks(self, environment: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The latest checks of an environment, newest first."""
        query = (select(drift_checks_table).where(drift_checks_table.c.environment == environment)
                 .order_by(drift_checks_table.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]


__all__ = [
    "DriftMode", "DriftReport", "DriftSettings", "IgnoreRules", "InfrastructureDrift", "ObjectDrift", "ObjectKey",
    "SyncState", "SyncStateStore", "SyncStatus", "compare_objects", "dropped_fields", "field_differences",
    "format_path", "is_managed", "next_status", "object_key", "parse_path",
]
