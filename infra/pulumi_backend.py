"""The Pulumi CLI boundary: a small protocol, the real Automation API behind it, and the CLI's lookup.

:class:`StackBackend` opens a :class:`StackHandle`, so tests drive the runner with a recording fake
(:mod:`infra.testing`); :class:`AutomationBackend` is the real one over ``pulumi.automation``. The
CLI is looked for once (PATH, or ``<cli_root>/bin/pulumi``) and never downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from infra.stack_values import ConfigItem, Program, PulumiCliMissing, StackOutput, StackTarget

CLI_INSTALL_HINT = "https://www.pulumi.com/docs/iac/download-install/"


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


def default_backend() -> StackBackend:
    """The backend of a runner made without one: the innermost :func:`backend_override`, else the real one."""
    return _override[-1] if _override else AutomationBackend()
