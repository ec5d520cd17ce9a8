"""The product's one error hierarchy.

Blocks translate foreign exceptions (git, httpx, kubernetes, pulumi) into these at their
boundary; tasks retry only :class:`TransientError`.

::

    DeliveryError                     base; ``retryable`` says whether a retry may help
    ├── TransientError                network, 5xx, 429, non-fast-forward push,
    │   │                             Pulumi ConcurrentUpdateError, Kubernetes 409/5xx
    │   └── ConflictError             a write lost a race (stale resourceVersion, rejected push)
    └── PermanentError                retrying cannot help
        ├── InvalidInput              bad parameters or configuration; names the field
        │   └── StackNotFound         a reading command found no stack to read (and created none)
        ├── InvalidTransition         a ReleasePlan move the state machine forbids
        ├── PolicyViolation           a policy gate or branch policy said no
        ├── ApprovalRefused           an approval that may not count (planner, not allowed, late)
        ├── MergeConflict             a pull request that cannot be merged
        ├── CheckFailed               pull request checks failed
        ├── BuildFailed               the pipeline run failed
        ├── HealthCheckFailed         a health gate did not pass
        ├── NotFound                  a thing the caller named does not exist
        └── AuthenticationError       credentials refused (401/403)

A pydantic ``ValidationError`` becomes :class:`InvalidInput` through :func:`invalid_input` only
(:func:`validated` validates and refuses in one call), so that every refusal of bad input reads the
same: ``<context>: <field.path>: <problem>; ...``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class DeliveryError(Exception):
    """Base of every error the product raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or type(self).__name__

    def __str__(self) -> str:
        return self.message


class TransientError(DeliveryError):
    """A failure that may pass: retry with backoff."""

    retryable = True


class ConflictError(TransientError):
    """A write lost a race with another writer; re-read and try again."""


class PermanentError(DeliveryError):
    """A failure that a retry cannot fix."""


class InvalidInput(PermanentError):
    """Bad parameters or configuration. The message names the field."""


class StackNotFound(InvalidInput):
    """No delivery stack (state folder, ``stack.json`` or API) was found; nothing was created looking."""


class InvalidTransition(PermanentError):
    """The ReleasePlan state machine does not allow this move."""


class PolicyViolation(PermanentError):
    """A policy gate or a branch policy refused."""


class ApprovalRefused(PermanentError):
    """An approval that may not count: the planner, someone not allowed, a repeat, or too late."""


class MergeConflict(PermanentError):
    """The pull request cannot be merged without a human."""


class CheckFailed(PermanentError):
    """A pull request check failed."""


class BuildFailed(PermanentError):
    """The pipeline run failed; nothing can be planned from it."""


class HealthCheckFailed(PermanentError):
    """A health gate did not pass."""


class NotFound(PermanentError):
    """Something the caller named does not exist."""


class AuthenticationError(PermanentError):
    """Credentials were refused."""


def is_retryable(exc: BaseException | None) -> bool:
    """Tell whether a retry may help with ``exc``.

    Args:
        exc: any exception, or None.

    Returns:
        True only for :class:`TransientError` and its subclasses.
    """
    return isinstance(exc, DeliveryError) and exc.retryable


def _field_path(under: str, loc: tuple[Any, ...]) -> str:
    # pydantic adds validator names ("function-after[...]") and union tags' wrappers to the location;
    # they name no field the caller wrote. A discriminated union's tag (e.g. "canary") is kept: it helps.
    parts = [str(part) for part in loc if not str(part).startswith(("function-", "tagged-union"))]
    return ".".join([under, *parts] if under else parts)


def invalid_input(error: ValidationError, *, context: str = "", under: str = "", brief: bool = False) -> InvalidInput:
    """Turn pydantic's error into :class:`InvalidInput`, each problem naming its field.

    The message is ``<context>: <path>: <problem>; <path>: <problem>``. A model-level problem has no
    path of its own: its message names the fields itself and stands alone.

    Args:
        error: pydantic's error.
        context: what was being validated, e.g. ``delivery.yaml`` or ``render_manifest: invalid input``.
        under: where the validated value sits in what the caller wrote, prefixed to every path
            (e.g. ``environments.dev.drift``).
        brief: keep the message one sentence (the first problem, the others counted), for a run's
            state message; by default every problem is listed.

    Returns:
        The error to raise (``raise invalid_input(exc) from None``).
    """
    problems = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        path = _field_path(under, tuple(problem["loc"]))
        problems.append(f"{path}: {message}" if path else message)
    if brief and len(problems) > 1:
        more = len(problems) - 1
        text = f"{problems[0]} (and {more} more problem{'s' if more > 1 else ''})"
    else:
        text = "; ".join(problems)
    return InvalidInput(f"{context}: {text}" if context else text)


def validated(model: type[M], data: Any, *, context: str = "", under: str = "") -> M:
    """Validate ``data`` as ``model``, refusing it with :func:`invalid_input`'s message.

    Args:
        model: the pydantic model.
        data: what to validate (a mapping, usually).
        context: what is being validated, as for :func:`invalid_input`.
        under: where it sits in what the caller wrote, as for :func:`invalid_input`.

    Returns:
        The validated model.

    Raises:
        InvalidInput: naming each bad field and what is wrong with it.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc, context=context, under=under) from None
