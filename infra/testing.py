"""A recording fake of the Pulumi CLI boundary, for tests and demos on machines without the CLI.

:class:`RecordingBackend` implements :class:`infra.pulumi_backend.StackBackend`. It keeps a tiny model of
one stack: the changes the next preview proposes (``pending``), and the outputs an ``up``
produces. Failures are scripted per operation with :meth:`RecordingBackend.fail`, using the
Automation API's own exception types (see :func:`cli_error`), so the wrapper's translation is
exercised exactly as with the real CLI. Every call is appended to ``calls``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Any

from infra.stack_values import ConfigItem, Program, StackOutput, StackTarget


def cli_error(kind: str = "CommandError", *, stderr: str = "", stdout: str = "", code: int = 255) -> Exception:
    """An exception of ``pulumi.automation.errors`` as the Automation API raises it.

    Args:
        kind: the class name, e.g. ``ConcurrentUpdateError`` or ``CompilationError``.
        stderr: the CLI's stderr.
        stdout: the CLI's stdout.
        code: the exit code.
    """
    from pulumi.automation import errors
    from pulumi.automation._cmd import CommandResult

    return getattr(errors, kind)(CommandResult(stdout=stdout, stderr=stderr, code=code))


def locked_error() -> Exception:
    """What a locked stack raises on a ``file://`` backend."""
    return cli_error(
        "ConcurrentUpdateError",
        stderr="error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
        "or delete the lock file with `pulumi cancel`.",
    )


class RecordingBackend:
    """A fake :class:`~infra.pulumi_backend.StackBackend` recording every call.

    Args:
        changes: what the first preview proposes (operation -> count), e.g. ``{"create": 5}``.
        outputs: the outputs an ``up`` produces: name -> value, or ``StackOutput`` for secrets.
        resources: how many resources an unchanged preview reports as ``same``.
    """

    def __init__(
        self,
        *,
        changes: Mapping[str, int] | None = None,
        outputs: Mapping[str, Any] | None = None,
        resources: int = 5,
    ) -> None:
        self.pending: dict[str, int] = dict(changes if changes is not None else {"create": resources})
        self.planned_outputs = {
            name: value if isinstance(value, StackOutput) else StackOutput(value=value)
            for name, value in (outputs or {}).items()
        }
        self.current_outputs: dict[str, StackOutput] = {}
        self.resources = resources
        self.calls: list[str] = []
        self.programs: list[Program] = []
        self.targets: list[StackTarget] = []
        self.config: dict[str, ConfigItem] = {}
        self._failures: dict[str, deque[Exception]] = defaultdict(deque)

    def fail(self, operation: str, error: Exception, *, times: int = 1) -> RecordingBackend:
        """Make the next ``times`` calls of ``operation`` (open, preview, up, refresh...) raise ``error``."""
        self._failures[operation].extend([error] * times)
        return self

    def propose(self, changes: Mapping[str, int]) -> RecordingBackend:
        """Make the next previews propose ``changes`` (as if the program or the cloud changed)."""
        self.pending = dict(changes)
        return self

    def count(self, operation: str) -> int:
        return self.calls.count(operation)

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        if self._failures[operation]:
            raise self._failures[operation].popleft()

    def _summary(self) -> dict[str, int]:
        return dict(self.pending) if self.pending else {"same": self.resources}

    def open(self, target: StackTarget, program: Program) -> RecordingBackend:
        self.targets.append(target)
        self._call("open")
        return self

    # StackHandle
    def set_all_config(self, config: Mapping[str, ConfigItem]) -> None:
        self._call("config")
        self.config.update(config)

    def preview(self, program: Program) -> dict[str, int]:
        self.programs.append(program)
        self._call("preview")
        return self._summary()

    def up(self, program: Program) -> tuple[dict[str, int], dict[str, StackOutput]]:
        self.programs.append(program)
        self._call("up")
        applied = dict(self.pending)
        self.pending = {}
        self.current_outputs = dict(self.planned_outputs)
        return applied, dict(self.current_outputs)

    def refresh(self) -> dict[str, int]:
        self._call("refresh")
        return {"same": self.resources}

    def preview_refresh(self, *, expect_no_changes: bool) -> dict[str, int]:
        self._call("preview_refresh")
        return {"same": self.resources}

    def outputs(self) -> dict[str, StackOutput]:
        self._call("outputs")
        return dict(self.current_outputs)

    def cancel(self) -> None:
        self._call("cancel")
