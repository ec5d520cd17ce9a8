"""The wrapper against the real Pulumi CLI and a file:// backend, where the CLI is installed.

These machines have no Pulumi CLI (no registry ships it and the product never downloads it), so
here the test is skipped with a reason that says so; on a machine with ``pulumi`` on PATH (or
``PULUMI_CLI_ROOT`` naming a folder with ``bin/pulumi``) it runs a real preview, up and refresh.
The program declares no cloud resource, so no provider plugin or credentials are needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.pulumi_backend import cli_available
from infra.stack_values import StackTarget
from infra.stacks import StackRunner

CLI_ROOT = os.environ.get("PULUMI_CLI_ROOT") or None

pytestmark = pytest.mark.skipif(
    not cli_available(CLI_ROOT),
    reason="the Pulumi CLI is not installed on this machine (looked for 'pulumi' on PATH and $PULUMI_CLI_ROOT/bin); "
    "the real preview/up/refresh against a file:// backend runs only where it is",
)


def exports_only() -> None:
    import pulumi

    pulumi.export("greeting", "hello")
    pulumi.export("token", pulumi.Output.secret("not-for-logs"))


def test_preview_up_refresh_against_a_file_backend(tmp_path: Path) -> None:
    target = StackTarget(
        project="delivery-cli-test",
        stack="dev",
        backend_url=f"file://{tmp_path / 'state'}",
        passphrase=SecretStr("test-passphrase"),
        cli_root=CLI_ROOT,
    )
    (tmp_path / "state").mkdir()
    runner = StackRunner(attempts=1)

    first = runner.apply(target, exports_only)
    assert first.changed is True and first.change_summary.get("create", 0) >= 1
    assert first.public_outputs() == {"greeting": "hello"}
    assert first.secret_output_names() == ["token"]

    second = runner.apply(target, exports_only)
    assert second.changed is False  # nothing to do: no up

    runner.refresh(target, exports_only)
    assert runner.check_drift(target, exports_only).drifted is False
    assert runner.outputs(target, exports_only)["token"].value.get_secret_value() == "not-for-logs"
