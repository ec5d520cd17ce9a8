"""The field path grammar of drift reports and ``drift.ignore`` rules.

Field paths use dots for map keys, ``["a.b/c"]`` for keys that are not plain words, ``[name]``
for list items matched by name, ``[port=80]`` for items matched by another key and ``[0]`` by
position. Ignore rules use the same syntax, where ``*`` stands for any one key and ``[*]`` for
any list item; a rule also ignores everything below the path it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from delivery.errors import InvalidInput

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

    Args:
        text: the path as written in a report or an ignore rule.

    Returns:
        The segments: map keys as they are, list items as ``[label]``.

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
    """Join segments back into the path syntax (the inverse of :func:`parse_path`).

    Args:
        segments: map keys and ``[label]`` list items.

    Returns:
        The path, e.g. ``metadata.labels["app.kubernetes.io/name"]``.
    """
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
    """Compiled ``drift.ignore`` rules; a rule ignores the path it names and all below it.

    Args:
        rules: the rules as text.

    Raises:
        InvalidInput: a rule is not a field path.
    """

    def __init__(self, rules: Iterable[str] = ()) -> None:
        self.rules = tuple(parse_path(rule) for rule in rules)

    @classmethod
    def of(cls, rules: IgnoreRules | Iterable[str]) -> IgnoreRules:
        """The rules compiled, unless they already are.

        Args:
            rules: compiled rules, or rules as text.

        Returns:
            The compiled rules.
        """
        return rules if isinstance(rules, IgnoreRules) else cls(rules)

    def __call__(self, path: Sequence[Segment]) -> bool:
        """Whether some rule ignores ``path``."""
        return any(len(rule) <= len(path) and all(map(_segment_matches, rule, path)) for rule in self.rules)


def _segment_matches(rule: Segment, actual: Segment) -> bool:
    if rule == "*":
        return not actual.startswith("[")
    if rule == "[*]":
        return actual.startswith("[")
    return rule == actual


__all__ = ["IgnoreRules", "Segment", "format_path", "parse_path"]
