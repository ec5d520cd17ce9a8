"""Identifiers: release, trace and artifact ids, and the rules they follow."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

# A release id becomes a git branch (release/<id>), a Prefect tag and a Kubernetes annotation
# value, so it keeps to the characters all three accept.
RELEASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ARTIFACT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def new_release_id() -> str:
    """Return a fresh release id such as ``rel-20261127-1a2b3c4d``."""
    return f"rel-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def new_trace_id() -> str:
    """Return a fresh trace id (32 hex digits, the W3C trace-id size)."""
    return secrets.token_hex(16)


def check_release_id(value: str) -> str:
    """Validate a release id.

    Args:
        value: the candidate id.

    Returns:
        The id unchanged.

    Raises:
        ValueError: when the id cannot serve as a branch name, tag and annotation.
    """
    if not RELEASE_ID_PATTERN.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        raise ValueError(
            f"release_id {value!r} is invalid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' and not ending in '.' or '.lock'"
        )
    return value


# A model field holding a release id: checked by check_release_id wherever one is read.
ReleaseId = Annotated[str, AfterValidator(check_release_id)]


def normalise_identity(identity: str) -> str:
    """Fold an identity for comparison: case and all whitespace are ignored."""
    return "".join(identity.split()).casefold()
