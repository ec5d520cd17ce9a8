"""Run Pulumi programs through the Automation API, with the product's retries and errors.

The CLI boundary is a small protocol (:class:`StackBackend` opening a :class:`StackHandle`) so
tests drive the wrapper with a recording fake; :class:`AutomationBackend` is the real one over
``pulumi.automation``. :class:`StackRunner` holds the policy:

- preview first and record the change summary; ``up`` only when the preview has changes;
- a locked stack (``ConcurrentUpdateError``) is transient: back off and retry, and before every
  retry reconcile with the state (refresh) and preview again;
- anything else is permanent and keeps the CLI's message (with known secrets masked).

The CLI is looked for once (PATH, or ``<cli_root>/bin/pulumi``) and never downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from delivery.errors import InvalidInput, NotFound, PermanentError, TransientError
from delivery.settings import state_dir

Program = Callable[[], None]
NO_CHANGE_OPS = frozenset({"same", "read", "refresh"})
CLI_INSTALL_HINT = "https://www.pulumi.com/docs/iac/download-install/"


# --------------------------------------------------------------------------- errors


class PulumiCliMissing(PermanentError):
    """The Pulumi CLI is not installed where the product looks for it."""


class PulumiCommandFailed(PermanentError):
    """A Pulumi command failed for a reason a retry cannot fix; the message keeps the CLI's output."""


class StackLocked(TransientError):
    """Another update holds the stack's lock (``ConcurrentUpdateError``)."""


# --------------------------------------------------------------------------- values


class StackTarget(BaseModel):
    """Which stack, where its state lives, and what the CLI needs in its environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    stack: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    backend_url: str | None = Field(default=None, description="Default: file:// under the state folder")
    passphrase: SecretStr | None = None
    cli_root: str | None = None
    env: dict[str, SecretStr] = Field(default_factory=dict, description="Extra CLI environment (credentials)")

    @field_validator("backend_url")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        schemes = ("file://", "https://", "http://", "s3://", "azblob://", "gs://", "postgres://")
        if not value.startswith(schemes):
            raise ValueError(f"backend_url {value!r} must start with one of {', '.join(schemes)}")
        return value

    @model_validator(mode="after")
    def _passphrase_for_files(self) -> StackTarget:
        if (self.backend_url is None or self.backend_url.startswith("file://")) and self.passphrase is None:
            raise ValueError("passphrase is required: a file:// backend encrypts stack secrets with it")
        if self.passphrase is not None and not self.passphrase.get_secret_value():
            raise ValueError("passphrase must not be empty")
        return self

    def resolved_backend_url(self) -> str:
        """The backend URL, defaulting to a ``file://`` folder under the product's state folder."""
        if self.backend_url:
            return self.backend_url
        folder = state_dir() / "pulumi"
        folder.mkdir(parents=True, exist_ok=True)
        return f"file://{folder}"

    def secret_values(self) -> list[str]:
        """Every secret this target carries, for masking CLI output."""
        values = [s.get_secret_value() for s in self.env.values()]
        if self.passphrase is not None:
            values.append(self.passphrase.get_secret_value())
        return [v for v in values if v]


class ConfigItem(BaseModel):
    """One stack config value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str
    secret: bool = False


class StackOutput(BaseModel):
    """One stack output as read from Pulumi; a secret's value is held as a SecretStr."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Any = None
    secret: bool = False

    @model_validator(mode="before")
    @classmethod
    def _hide_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("secret") and not isinstance(data.get("value"), SecretStr):
            value = data.get("value")
            text = value if isinstance(value, str) else json.dumps(value)
            data = {**data, "value": SecretStr(text)}
        return data


class ApplyResult(BaseModel):
    """What an apply did: the preview that decided it, whether ``up`` ran, and the outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    change_summary: dict[str, int]
    changed: bool
    resource_changes: dict[str, int] = Field(default_factory=dict)
    outputs: dict[str, StackOutput] = Field(default_factory=dict)
    attempts: int = 1
    reconciled: bool = False

    def public_outputs(self) -> dict[str, Any]:
        """The outputs that are not secret."""
        return {name: out.value for name, out in self.outputs.items() if not out.secret}

    def secret_output_names(self) -> list[str]:
        return sorted(name for name, out in self.outputs.items() if out.secret)


class StackDriftPreview(BaseModel):
    """The result of a refresh preview that expected no changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drifted: bool
    change_summary: dict[str, int] = Field(default_factory=dict)
    detail: str = ""


def has_changes(summary: Mapping[str, int]) -> bool:
    """Tell whether a change summary proposes anything beyond reads and unchanged resources."""
    return any(count > 0 and op not in NO_CHANGE_OPS for op, count in summary.items())


def normalise_summary(summary: Mapping[Any, int] | None) -> dict[str, int]:
    """Turn Pulumi's ``OpType -> count`` map into plain ``str -> int``."""
    return {str(getattr(op, "value", op)): int(count) for op, count in (summary or {}).items()}


# --------------------------------------------------------------------------- the CLI boundary


class StackHandle(Protocol):
    """The few Automation API calls the wrapper makes on one selected stack."""

    def set_all_config(self, config: Mapping[str, ConfigItem]) -> None: ...

    def preview(self, program: Program) -> Mapping[Any, int]: ...

    def up(self, program: Program) -> tuple[Mapping[Any, int], Mapping[str, StackOutput]]: ...

    def refresh(self) -> Mapping[Any, int]: ...

    def preview_refresh(self, *, expect_no_changes: bool) -> Mapping[Any, int]: ...

    def outputs(self) -> Mapping[str, StackOutput]: ...

    def cancel(self) -> None: ...


class StackBackend(Protocol):
    """Opens (selects or creates) a stack; the real one runs the Pulumi CLI."""

    def open(self, target: StackTarget, program: Program) -> StackHandle: ...


@functools.lru_cache(maxsize=16)
def _find_cli_cached(cli_root: str | None, path_env: str) -> str | None:
    if cli_root:
        candidate = Path(cli_root).expanduser() / "bin" / "pulumi"
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which("pulumi", path=path_env)


def find_cli(cli_root: str | None = None) -> str:
    """Locate the Pulumi CLI once per location; never download it.

    Args:
        cli_root: a folder holding ``bin/pulumi``; None looks on PATH.

    Returns:
        The path of the ``pulumi`` executable.

    Raises:
        PulumiCliMissing: with where it looked and how to fix it.
    """
    found = _find_cli_cached(cli_root, os.environ.get("PATH", ""))
    if found:
        return found
    _find_cli_cached.cache_clear()  # a miss is not remembered: an installation made later must be seen
    where = f"{Path(cli_root).expanduser() / 'bin' / 'pulumi'} (cli_root)" if cli_root else "'pulumi' on PATH"
    raise PulumiCliMissing(
        f"The Pulumi CLI was not found: looked for {where}. Install it ({CLI_INSTALL_HINT}) and put it on PATH "
        "or set the PulumiStack block's cli_root to the folder holding bin/pulumi; "
        "gitops-delivery never downloads it."
    )


def cli_available(cli_root: str | None = None) -> bool:
    """Tell whether :func:`find_cli` would succeed."""
    try:
        find_cli(cli_root)
    except PulumiCliMissing:
        return False
    return True


class AutomationHandle:
    """:class:`StackHandle` over a ``pulumi.automation.Stack``."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack

    def set_all_config(self, config: Mapping[str, ConfigItem]) -> None:
        from pulumi import automation as auto

        if config:
            self._stack.set_all_config({k: auto.ConfigValue(v.value, secret=v.secret) for k, v in config.items()})

    def preview(self, program: Program) -> Mapping[Any, int]:
        return self._stack.preview(diff=True, program=program).change_summary

    def up(self, program: Program) -> tuple[Mapping[Any, int], Mapping[str, StackOutput]]:
        result = self._stack.up(program=program, show_secrets=False, suppress_outputs=True)
        outputs = {name: StackOutput(value=o.value, secret=o.secret) for name, o in result.outputs.items()}
        return result.summary.resource_changes or {}, outputs

    def refresh(self) -> Mapping[Any, int]:
        return self._stack.refresh().summary.resource_changes or {}

    def preview_refresh(self, *, expect_no_changes: bool) -> Mapping[Any, int]:
        return self._stack.preview_refresh(expect_no_changes=expect_no_changes).change_summary

    def outputs(self) -> Mapping[str, StackOutput]:
        return {name: StackOutput(value=o.value, secret=o.secret) for name, o in self._stack.outputs().items()}

    def cancel(self) -> None:
        self._stack.cancel()


@functools.lru_cache(maxsize=8)
def _command(root: str | None) -> Any:
    """One ``PulumiCommand`` per CLI location: building it runs ``pulumi version``."""
    from pulumi import automation as auto

    return auto.PulumiCommand(root=root)


class AutomationBackend:
    """The real :class:`StackBackend`: ``pulumi.automation`` with a local workspace."""

    def open(self, target: StackTarget, program: Program) -> AutomationHandle:
        from pulumi import automation as auto

        cli = find_cli(target.cli_root)
        backend_url = target.resolved_backend_url()
        env = {"PULUMI_SKIP_UPDATE_CHECK": "true", **{k: v.get_secret_value() for k, v in target.env.items()}}
        secrets_provider = None
        if target.passphrase is not None:
            env["PULUMI_CONFIG_PASSPHRASE"] = target.passphrase.get_secret_value()
            secrets_provider = "passphrase"
        # PulumiCommand wants the folder above bin/; a CLI found elsewhere on PATH is run by name.
        root = target.cli_root or (str(Path(cli).parent.parent) if Path(cli).parent.name == "bin" else None)
        command = _command(root)
        opts = auto.LocalWorkspaceOptions(
            project_settings=auto.ProjectSettings(
                name=target.project, runtime="python", backend=auto.ProjectBackend(url=backend_url)
            ),
            env_vars=env,
            secrets_provider=secrets_provider,
            pulumi_command=command,
        )
        stack = auto.create_or_select_stack(
            stack_name=target.stack, project_name=target.project, program=program, opts=opts
        )
        return AutomationHandle(stack)


_override: list[StackBackend] = []


@contextlib.contextmanager
def backend_override(backend: StackBackend) -> Iterator[StackBackend]:
    """Route every :class:`StackRunner` made without an explicit backend to ``backend`` while open.

    For tests and demos that run whole flows (which load saved blocks) on machines without the CLI.
    """
    _override.append(backend)
    try:
        yield backend
    finally:
        _override.remove(backend)


# --------------------------------------------------------------------------- the policy


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
        self.backend: StackBackend = backend or (_override[-1] if _override else AutomationBackend())
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
