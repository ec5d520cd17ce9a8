"""What the product writes into git, checked without git: branch names, paths, commit messages.

Every commit the product makes carries a trailer block (``Release-Id: ...``, ``Trace-Id: ...``), so
Git alone tells a release's story; :func:`parse_trailers` reads it back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from delivery.errors import InvalidInput

_TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*): (.*)$")
_BRANCH_BAD = re.compile(r"(^[./-])|(\.\.)|([\s~^:?*\[\\])|(@\{)|(/\.)|(//)|(\.lock$)|([./]$)")


def check_branch(name: str) -> str:
    """Validate a branch name the way ``git check-ref-format --branch`` would, without a process.

    Raises:
        InvalidInput: the name cannot be a branch.
    """
    if not name or len(name) > 200 or _BRANCH_BAD.search(name) or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"branch {name!r} is not a valid git branch name")
    return name


def check_path(path: str) -> str:
    """Validate a file path inside a repository: relative, no ``.``/``..`` parts, nothing under ``.git``.

    Raises:
        InvalidInput: the path would leave the repository or touch its git folder.
    """
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or p.casefold() == ".git" for p in parts):
        raise InvalidInput(f"path {path!r} is not a relative path inside the repository")
    return path


def format_message(message: str, trailers: Sequence[tuple[str, str]]) -> str:
    """Return ``message`` with a trailer block (``Key: value`` lines) appended.

    Raises:
        InvalidInput: a trailer key or value would break the trailer block.
    """
    lines = []
    for key, value in trailers:
        if not _TRAILER_LINE.match(f"{key}: x") or "\n" in str(value) or not str(value).strip():
            raise InvalidInput(f"trailer {key!r}: {value!r} is not a valid one-line trailer")
        lines.append(f"{key}: {value}")
    body = message.strip()
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else body + "\n"


def parse_trailers(message: str) -> dict[str, list[str]]:
    """Read the trailers of a commit message: the ``Key: value`` lines of its last paragraph."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    trailers: dict[str, list[str]] = {}
    for line in paragraphs[-1].splitlines():
        match = _TRAILER_LINE.match(line.strip())
        if not match:
            return {}
        trailers.setdefault(match.group(1), []).append(match.group(2).strip())
    return trailers
