"""Field ownership (``metadata.managedFields``) and server-side apply.

Objects are flattened into leaf paths (``f:spec``, ``f:containers``, ``k:{"name":"web"}``, ``f:image``);
lists with a merge key are addressed item by item, other lists are owned as a whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .patch import clone, merge_key, strategic_merge

Path = tuple[str, ...]
_SERVER_METADATA = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}
_MISSING = object()


class ApplyConflict(Exception):
    """Fields the apply would change are owned by other managers."""

    def __init__(self, conflicts: list[tuple[str, Path]]):
        self.conflicts = conflicts
        described = "; ".join(f'conflict with "{manager}": {dotted(path)}' for manager, path in conflicts)
        count = len(conflicts)
        super().__init__(f"Apply failed with {count} conflict{'s' if count != 1 else ''}: {described}")


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f".{part[2:]}" if part.startswith("f:") else f"[{part[2:]}]"
    return out


def _field_names(path: Path) -> tuple[str, ...]:
    return tuple(p[2:] for p in path if p.startswith("f:"))


def flatten(obj: dict | None, *, status: bool | None = None) -> dict[Path, object]:
    """Leaf paths of an object. ``status``: None = everything, True = status only, False = all but status."""
    out: dict[Path, object] = {}
    if not obj:
        return out
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if status is not None and (key == "status") != status:
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _SERVER_METADATA}
            if not value:
                continue
        _walk(value, (f"f:{key}",), out)
    return out


def _walk(value: object, path: Path, out: dict[Path, object]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, f"f:{key}"), out)
        return
    key = merge_key(_field_names(path)) if isinstance(value, list) else None
    if key and value and all(isinstance(item, dict) and key in item for item in value):
        for item in value:
            item_path = (*path, "k:" + json.dumps({key: item[key]}, separators=(",", ":")))
            _walk(item, item_path, out)
        return
    out[path] = value


def to_fields_v1(paths: set[Path]) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
            if part.startswith("k:"):
                node.setdefault(".", {})
    return tree


def from_fields_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for part, child in tree.items():
        if part == ".":
            continue
        children = {k: v for k, v in child.items() if k != "."} if isinstance(child, dict) else {}
        if children:
            paths |= from_fields_v1(children, (*prefix, part))
        else:
            paths.add((*prefix, part))
    return paths


@dataclass
class Owner:
    manager: str
    operation: str
    api_version: str
    time: str
    subresource: str | None
    paths: set[Path]

    @classmethod
    def parse(cls, entry: dict) -> Owner:
        return cls(
            manager=entry.get("manager", ""),
            operation=entry.get("operation", "Update"),
            api_version=entry.get("apiVersion", ""),
            time=entry.get("time", ""),
            subresource=entry.get("subresource"),
            paths=from_fields_v1(entry.get("fieldsV1") or {}),
        )

    def render(self) -> dict:
        entry = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.paths),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _owners(obj: dict | None) -> list[Owner]:
    entries = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    return [Owner.parse(e) for e in entries if isinstance(e, dict)]


def _render(owners: list[Owner]) -> list[dict]:
    return [o.render() for o in owners if o.paths]


def record_update(
    old: dict | None, new: dict, *, manager: str, api_version: str, now: str, subresource: str | None, status: bool
) -> list[dict]:
    """managedFields after a non-apply write: the writer owns what it changed, others lose it."""
    scope = True if subresource == "status" else (False if status else None)
    old_flat, new_flat = flatten(old, status=scope), flatten(new, status=scope)
    changed = {p for p, v in new_flat.items() if old_flat.get(p, _MISSING) != v}
    removed = old_flat.keys() - new_flat.keys()
    owners = _owners(old)
    mine = None
    for owner in owners:
        owner.paths -= removed
        if owner.manager == manager and owner.operation == "Update" and owner.subresource == subresource:
            mine = owner
        else:
            owner.paths -= changed
    if changed:
        if mine is None:
            mine = Owner(manager, "Update", api_version, now, subresource, set())
            owners.append(mine)
        mine.paths |= changed
        mine.time, mine.api_version = now, api_version
    return _render(owners)


def server_side_apply(
    old: dict | None, config: dict, *, manager: str, force: bool, api_version: str, now: str, scope: bool | None
) -> tuple[dict, list[dict]]:
    """Merge an applied configuration into ``old``; returns the new object and its managedFields.

    Fields this manager applied before and no longer applies are removed unless someone else owns
    them; fields owned by other managers with a different value conflict unless ``force``. ``scope``
    limits ownership to status (True), everything but status (False) or everything (None).
    """
    applied = flatten(config, status=scope)
    current = flatten(old, status=scope)
    owners = _owners(old)
    mine = next((o for o in owners if o.manager == manager and o.operation == "Apply" and not o.subresource), None)
    conflicts: list[tuple[str, Path]] = []
    for owner in owners:
        if owner is mine or owner.subresource:
            continue
        for path in sorted(owner.paths & applied.keys()):
            if current.get(path, _MISSING) != applied[path]:
                conflicts.append((owner.manager, path))
                if force:
                    owner.paths.discard(path)
    if conflicts and not force:
        raise ApplyConflict(conflicts)

    others: set[Path] = set().union(*(o.paths for o in owners if o is not mine))
    still_owned = others | applied.keys()
    orphaned = (mine.paths if mine else set()) - still_owned
    result = clone(old) if old else {}
    # Deepest first, and an item's key field after its other fields (the key finds the item).
    for path in sorted(orphaned, key=lambda p: (len(p), not _is_item_key(p)), reverse=True):
        if _is_item_key(path) and any(p[: len(path) - 1] == path[:-1] for p in still_owned):
            continue
        _remove(result, path)
    result = strategic_merge(result, _without_server_metadata(config))
    if mine is None:
        mine = Owner(manager, "Apply", api_version, now, None, set())
        owners.append(mine)
    mine.paths, mine.time, mine.api_version = set(applied), now, api_version
    return result, _render(owners)


def _without_server_metadata(config: dict) -> dict:
    out = dict(config)
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k not in _SERVER_METADATA - {"name"}}
    return out


def _is_item_key(path: Path) -> bool:
    if len(path) < 2 or not path[-2].startswith("k:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _remove(obj: dict, path: Path) -> None:
    """Remove a leaf and prune the containers it leaves empty."""
    trail: list[tuple[object, object]] = []
    node: object = obj
    for part in path:
        if part.startswith("f:") and isinstance(node, dict) and part[2:] in node:
            trail.append((node, part[2:]))
            node = node[part[2:]]
        elif part.startswith("k:") and isinstance(node, list):
            wanted = json.loads(part[2:])
            index = next(
                (
                    i
                    for i, item in enumerate(node)
                    if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())
                ),
                None,
            )
            if index is None:
                return
            trail.append((node, index))
            node = node[index]
        else:
            return
    for depth, (container, key) in enumerate(reversed(trail)):
        if depth > 0 and container[key] not in ({}, []):  # type: ignore[index]
            break
        del container[key]  # type: ignore[arg-type]
