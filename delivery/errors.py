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
"""

from __future__ import annotations


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
