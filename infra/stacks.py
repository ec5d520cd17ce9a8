"""Run Pulumi programs through the Automation API, with the product's retries and errors.

:class:`StackRunner` holds the policy over the CLI boundary of :mod:`infra.pulumi_backend`:

- preview first and record the change summary; ``up`` only when the preview has changes;
- a locked stack (``ConcurrentUpdateError``) is transient: back off and retry, and before every
  retry reconcile with the state (refresh) and preview again;
- anything else is permanent and keeps the CLI's message (with known secrets masked).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from delivery.errors import InvalidInput, NotFound, PermanentError, TransientError
from infra.pulumi_backend import CLI_INSTALL_HINT, StackBackend, StackHandle, default_backend
from infra.stack_values import (
    ApplyResult,
    ConfigItem,
    Program,
    PulumiCliMissing,
    PulumiCommandFailed,
    StackDriftPreview,
    StackLocked,
    StackOutput,
    StackTarget,
    has_changes,
    normalise_summary,
)


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def translate(exc: BaseException, *, action: str, target: StackTarget) -> Exception:
    """Translate what the Automation API raised into the product's hierarchy.

    Args:
        exc: the foreign exception.
        action: what was being done (``preview``, ``up``...), for the message.
        target: the stack, for the message and the secrets to mask.

    Returns:
        A :class:`StackLocked` (transient) or a permanent error keeping the CLI's message.
    """
    from pulumi.automation import errors as auto_errors

    where = f"pulumi {action} of {target.project}/{target.stack}"
    text = _mask(str(exc), target.secret_values())
    if isinstance(exc, auto_errors.ConcurrentUpdateError):
        return StackLocked(f"{where}: the stack is locked by another update: {text}")
    if isinstance(exc, auto_errors.StackNotFoundError):
        return NotFound(f"{where}: stack not found: {text}")
    if isinstance(exc, auto_errors.CompilationError | auto_errors.InlineSourceRuntimeError):
        return PulumiCommandFailed(f"{where}: the program failed: {text}", reason=type(exc).__name__)
    if isinstance(exc, auto_errors.CommandError):
        return PulumiCommandFailed(f"{where} failed: {text}", reason=type(exc).__name__)
    if isinstance(exc, FileNotFoundError) and "pulumi" in str(exc):
        return PulumiCliMissing(f"{where}: the Pulumi CLI could not be run ({text}); install it ({CLI_INSTALL_HINT})")
    if isinstance(exc, InvalidInput | PermanentError | TransientError):
        return exc  # type: ignore[return-value]
    return PulumiCommandFailed(f"{where} failed: {type(exc).__name__}: {text}", reason=type(exc).__name__)


class StackRunner:
    """Apply, refresh and drift-check one stack with the product's policy (see the module docstring).

    Args:
        backend: the CLI boundary; default the real Automation API.
        attempts: tries for an operation that meets a locked stack.
        backoff_seconds: first wait; doubles each retry, with up to 50% jitter.
        sleep: how to wait (tests record instead of sleeping).
    """

    def __init__(
        self,
        backend: StackBackend | None = None,
        *,
        attempts: int = 3,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise InvalidInput("attempts must be at least 1")
        self.backend: StackBackend = backend or default_backend()
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.sleep = sleep

    def _delay(self, attempt: int) -> float:
        base = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return base * (1 + random.uniform(0, 0.5))

    def _open(self, target: StackTarget, program: Program, config: Mapping[str, ConfigItem]) -> StackHandle:
        try:
            handle = self.backend.open(target, program)
            handle.set_all_config(config)
        except Exception as exc:
            raise translate(exc, action="stack select", target=target) from None
        return handle

    def apply(
        self,
        target: StackTarget,
        program: Program,
        *,
        config: Mapping[str, ConfigItem] | None = None,
        baseline: Callable[[Mapping[str, StackOutput]], Program | None] | None = None,
        reconcile_first: bool = False,
    ) -> ApplyResult:
        """Preview, then ``up`` only when there are changes; retry a locked stack after re-previewing.

        Args:
            target: the stack.
            program: the inline program to converge to.
            config: stack config to set first.
            baseline: given the current outputs, the program as it would be if nothing but bookkeeping
                (such as the release stamp) changed; when its preview has no changes, nothing is applied.
            reconcile_first: refresh before the first preview (a previous attempt failed).

        Returns:
            The change summary, whether ``up`` ran, and the outputs.

        Raises:
            StackLocked: the stack stayed locked through every attempt (transient).
            PulumiCommandFailed: any other failure, with the CLI's message.
        """
        handle = self._open(target, program, config or {})
        attempts, action, reconciled = 0, "refresh", False  # a failure is named by the step it failed in

        def converge() -> ApplyResult:
            nonlocal attempts, action, reconciled
            attempts, action = attempts + 1, "refresh"
            if reconcile_first or attempts > 1:
                handle.refresh()
                reconciled = True
            action = "preview"
            if baseline is not None:
                unstamped = baseline(handle.outputs())
                if unstamped is not None:
                    summary = normalise_summary(handle.preview(unstamped))
                    if not has_changes(summary):
                        return self._unchanged(handle, summary, attempts, reconciled)
            summary = normalise_summary(handle.preview(program))
            if not has_changes(summary):
                return self._unchanged(handle, summary, attempts, reconciled)
            action = "up"
            changes, outputs = handle.up(program)
            return ApplyResult(
                change_summary=summary,
                changed=True,
                resource_changes=normalise_summary(changes),
                outputs=dict(outputs),
                attempts=attempts,
                reconciled=reconciled,
            )

        return self._with_retries(target, lambda: action, converge)

    @staticmethod
    def _unchanged(handle: StackHandle, summary: dict[str, int], attempt: int, reconciled: bool) -> ApplyResult:
        return ApplyResult(
            change_summary=summary,
            changed=False,
            outputs=dict(handle.outputs()),
            attempts=attempt,
            reconciled=reconciled,
        )

    def _with_retries(self, target: StackTarget, action: str | Callable[[], str], call: Callable[[], Any]) -> Any:
        """Call ``call``, again after a backoff while the stack is locked; ``action`` names what failed."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                error = translate(exc, action=action() if callable(action) else action, target=target)
                if not isinstance(error, StackLocked) or attempt == self.attempts:
                    raise error from None  # the foreign exception holds unmasked CLI output
                self.sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def preview(
        self, target: StackTarget, program: Program, *, config: Mapping[str, ConfigItem] | None = None
    ) -> dict[str, int]:
        """Preview only and return the change summary."""
        handle = self._open(target, program, config or {})
        return normalise_summary(self._with_retries(target, "preview", lambda: handle.preview(program)))

    def refresh(self, target: StackTarget, program: Program) -> dict[str, int]:
        """Refresh the state from the cloud and return the resource changes it recorded."""
        handle = self._open(target, program, {})
        return normalise_summary(self._with_retries(target, "refresh", handle.refresh))

    def outputs(self, target: StackTarget, program: Program) -> dict[str, StackOutput]:
        """Read the stack's current outputs (secrets included, flagged as such)."""
        handle = self._open(target, program, {})
        return dict(self._with_retries(target, "stack output", handle.outputs))

    def cancel(self, target: StackTarget, program: Program) -> None:
        """Release a lock left by a crashed update. Only for an operator who knows no update is running."""
        handle = self._open(target, program, {})
        self._with_retries(target, "cancel", handle.cancel)

    def check_drift(self, target: StackTarget, program: Program) -> StackDriftPreview:
        """Preview a refresh expecting no changes; changes (or the CLI refusing) mean drift."""
        from pulumi.automation import errors as auto_errors

        handle = self._open(target, program, {})

        def call() -> StackDriftPreview:
            try:
                summary = normalise_summary(handle.preview_refresh(expect_no_changes=True))
            except auto_errors.ConcurrentUpdateError:
                raise
            except auto_errors.CommandError as exc:
                detail = _mask(str(exc), target.secret_values())
                if "no changes were expected" in detail.lower():
                    return StackDriftPreview(drifted=True, detail=detail)
                raise
            return StackDriftPreview(drifted=has_changes(summary), change_summary=summary)

        return self._with_retries(target, "preview --refresh", call)
