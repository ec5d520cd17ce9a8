"""Label and field selectors, parsed once per request into predicates over objects."""

from __future__ import annotations

import re
from collections.abc import Callable

Predicate = Callable[[dict], bool]

_SET_OP = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_OP = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*$")


class SelectorError(ValueError):
    """The selector text cannot be parsed."""


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _label_requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if match := _SET_OP.match(text):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_OP.match(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")


def label_selector(text: str | None) -> Predicate | None:
    """Compile a label selector (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``)."""
    if not text:
        return None
    requirements = [_label_requirement(part) for part in _split_requirements(text)]

    def matches(obj: dict) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _field_value(obj: dict, path: str) -> str:
    current: object = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def field_selector(text: str | None) -> Predicate | None:
    """Compile a field selector over dotted paths (``metadata.name=web,metadata.namespace!=x``)."""
    if not text:
        return None
    requirements = []
    for part in _split_requirements(text):
        match = _EQ_OP.match(part)
        if not match:
            raise SelectorError(f"invalid field selector: {part.strip()!r}")
        path, op, value = match.groups()
        requirements.append((path, op == "!=", value))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, path) == value) != negate for path, negate, value in requirements)

    return matches


def exact_field(text: str | None, path: str) -> str | None:
    """The value a field selector pins ``path`` to with ``=``, if any (lets the store use its index)."""
    if not text:
        return None
    for part in _split_requirements(text):
        match = _EQ_OP.match(part)
        if match and match.group(1) == path and match.group(2) != "!=":
            return match.group(3)
    return None
