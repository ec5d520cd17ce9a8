"""Which fields Git dropped since the last server-side apply, read from ``metadata.managedFields``.

The drift comparison (:mod:`delivery.drift_compare`) sees only the fields Git sets; a field Git
no longer sets is invisible to it, yet the next server-side apply would remove it. The sync stage
asks :func:`dropped_fields` whether an object needs that apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from delivery.field_paths import Segment, format_path


def dropped_fields(desired: Mapping[str, Any], live: Mapping[str, Any], *, manager: str) -> list[str] | None:
    """The fields ``manager`` last server-side applied to ``live`` that ``desired`` no longer sets.

    The drift comparison sees only the fields Git sets, so a field Git dropped is invisible to it;
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
        elif isinstance(child, Mapping):  # a child owning only "." (itself) adds nothing
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


__all__ = ["dropped_fields"]
