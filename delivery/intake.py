"""Intake of a release request: what a caller sent becomes a :class:`ReleaseRequest` or one clear refusal.

The Prefect UI's form and the REST API check a request against its JSON schema only; what the
schema cannot say (a path escaping the repository, a wrong digest, artifacts and a source both
given) is refused here, as one sentence naming the field, e.g.
``artifacts.0.path: '../x' escapes the repository or is not a file inside it``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from delivery.errors import InvalidInput, invalid_input
from delivery.models import ReleaseRequest

# The fields a caller may leave out that a release run derives from itself (see :func:`with_ids`).
ID_FIELDS = ("release_id", "trace_id")


def with_ids(value: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """The request's JSON with each id it leaves out (absent, null or empty, as a form sends it) taken from ``ids``.

    An id given is kept as given.
    """
    body = dict(value)
    for field in ID_FIELDS:
        if body.get(field) in (None, "") and ids.get(field):
            body[field] = ids[field]
    return body


def parse_request(value: ReleaseRequest | Mapping[str, Any], *, ids: Mapping[str, str] | None = None) -> ReleaseRequest:
    """Validate what a caller sent (a mapping from JSON, or a request already built) as a release request.

    Args:
        value: the flow's ``request`` parameter as it arrived.
        ids: ``release_id`` and ``trace_id`` for a request that leaves them out (the release run
            derives them from itself, so that every start of the run gets the same); without them
            a left-out id is generated afresh.

    Returns:
        The request, digests computed where they were left out.

    Raises:
        InvalidInput: one sentence naming the field at fault.
    """
    if isinstance(value, ReleaseRequest):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInput(f"request: expected a ReleaseRequest object, got {type(value).__name__}")
    try:
        return ReleaseRequest.model_validate(with_ids(value, ids or {}))
    except ValidationError as exc:
        raise invalid_input(exc, brief=True) from None


def refusal_message(exc: BaseException) -> str:
    """The state message of a refused run: ``<Error>: <one sentence>`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"
