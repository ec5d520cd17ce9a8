"""Compare live objects with Git on the fields Git sets.

The comparison is pure. It walks the *desired* objects (the ones in Git) and compares only the
fields they set, so defaults the server fills in and server-populated metadata (uid,
resourceVersion, managedFields, status, ...) are never drift. Lists of objects are matched by
their merge key (``name`` first), so a reordered list is not drift and a changed container shows
as ``spec.template.spec.containers[app].image`` (the path grammar of :mod:`delivery.field_paths`).
Resource quantities are compared by amount, so the canonical form an API server writes
(``0.5`` -> ``500m``) is not drift either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from delivery.field_paths import IgnoreRules, Segment, format_path
from delivery.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from delivery.objects import ObjectKey, object_key

# What the server fills in on every object; never drift even if a manifest carries it.
SERVER_METADATA = frozenset(
    {"uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "selfLink", "deletionTimestamp",
     "deletionGracePeriodSeconds"}
)
# Keys that identify an item of a list of objects, in order of preference (Kubernetes merge keys).
MERGE_KEYS = ("name", "mountPath", "devicePath", "containerPort", "port", "ip")


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
    rules = IgnoreRules.of(ignore)
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
    """The amount a Kubernetes quantity (``500m``, ``1Gi``, ``2``, ``1e3``) stands for, or None.

    A boolean is no quantity: its text (``True``) is not one.
    """
    if not isinstance(value, str | int | float):
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
            if len(desired) != len(live) or not all(map(_same_scalar, desired, live)):
                out.append(path)
            return
        if len(desired) != len(live):
            out.append(path)
            return
        for index, want in enumerate(desired):
            _walk(want, live[index], (*path, f"[{index}]"), out, ignored)
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
    rules = IgnoreRules.of(ignore)
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


__all__ = [
    "MERGE_KEYS", "SERVER_METADATA", "ObjectDrift", "compare_objects", "field_differences", "is_managed", "quantity",
]
