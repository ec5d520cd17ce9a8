"""The Automation API wrapper against a recording fake of the CLI boundary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from delivery.errors import NotFound, PermanentError, TransientError
from infra import pulumi_backend
from infra.pulumi_backend import AutomationBackend, find_cli
from infra.stack_values import (
    ConfigItem,
    PulumiCliMissing,
    PulumiCommandFailed,
    StackLocked,
    StackOutput,
    StackTarget,
    has_changes,
)
from infra.stacks import StackRunner
from infra.testing import RecordingBackend, cli_error, locked_error

PASSPHRASE = "correct-horse-battery-staple"
CLIENT_SECRET = "azure-client-secret-value"


def program() -> None:
    """Never run by the fake; identity is what the tests check."""


def target(**overrides) -> StackTarget:
    values = {
        "project": "platform",
        "stack": "dev",
        "passphrase": SecretStr(PASSPHRASE),
        "env": {"ARM_CLIENT_SECRET": SecretStr(CLIENT_SECRET)},
        **overrides,
    }
    return StackTarget(**values)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def runner(backend: RecordingBackend, *, attempts: int = 3) -> tuple[StackRunner, Sleeps]:
    sleeps = Sleeps()
    return StackRunner(backend, attempts=attempts, backoff_seconds=1.0, sleep=sleeps), sleeps


def operations(backend: RecordingBackend) -> list[str]:
    """The calls that change or inspect the stack, without the bookkeeping ones."""
    return [c for c in backend.calls if c in {"preview", "up", "refresh", "preview_refresh"}]


def test_preview_then_up_when_there_are_changes() -> None:
    fake = RecordingBackend(changes={"create": 4}, outputs={"cluster_name": "aks-dev"})
    run, sleeps = runner(fake)

    result = run.apply(target(), program, config={"azure-native:location": ConfigItem(value="westeurope")})

    assert operations(fake) == ["preview", "up"]
    assert fake.calls[:2] == ["open", "config"]  # config is set before anything runs
    assert fake.config["azure-native:location"].value == "westeurope"
    assert fake.programs == [program, program]
    assert result.changed is True
    assert result.change_summary == {"create": 4}
    assert result.resource_changes == {"create": 4}
    assert result.public_outputs() == {"cluster_name": "aks-dev"}
    assert (result.attempts, result.reconciled, sleeps) == (1, False, [])


def test_no_up_when_the_preview_has_no_changes() -> None:
    fake = RecordingBackend(changes={}, resources=6)
    run, _ = runner(fake)

    result = run.apply(target(), program)

    assert operations(fake) == ["preview"]
    assert result.changed is False
    assert result.change_summary == {"same": 6}


def test_reads_and_unchanged_resources_are_not_changes() -> None:
    assert not has_changes({"same": 3, "read": 1})
    assert has_changes({"same": 3, "update": 1})
    assert not has_changes({"update": 0})


def test_locked_stack_is_retried_with_backoff_and_a_new_preview_each_time() -> None:
    fake = RecordingBackend(changes={"update": 1}).fail("up", locked_error(), times=2)
    run, sleeps = runner(fake)

    result = run.apply(target(), program)

    # Each retry reconciles with the state (refresh) and previews again before the next up.
    assert operations(fake) == ["preview", "up", "refresh", "preview", "up", "refresh", "preview", "up"]
    assert result.changed is True and result.attempts == 3 and result.reconciled is True
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 1.5 and 2.0 <= sleeps[1] <= 3.0  # exponential, with jitter


def test_retry_after_a_lock_skips_up_when_the_other_update_already_converged() -> None:
    fake = RecordingBackend(changes={"update": 1}).fail("up", locked_error())
    original_refresh = fake.refresh

    def refresh_sees_it_done() -> dict[str, int]:
        fake.pending = {}  # the concurrent update applied the same change
        return original_refresh()

    fake.refresh = refresh_sees_it_done
    run, _ = runner(fake)

    result = run.apply(target(), program)

    assert operations(fake) == ["preview", "up", "refresh", "preview"]
    assert result.changed is False and result.reconciled is True


def test_lock_that_outlasts_the_attempts_is_transient() -> None:
    fake = RecordingBackend().fail("up", locked_error(), times=5)
    run, sleeps = runner(fake, attempts=3)

    with pytest.raises(StackLocked) as caught:
        run.apply(target(), program)

    assert isinstance(caught.value, TransientError) and caught.value.retryable
    assert "locked" in str(caught.value) and "platform/dev" in str(caught.value)
    assert fake.count("up") == 3 and fake.count("preview") == 3 and len(sleeps) == 2


def test_locked_preview_is_retried_too() -> None:
    fake = RecordingBackend(changes={}).fail("preview", locked_error())
    run, sleeps = runner(fake)

    result = run.apply(target(), program)

    assert operations(fake) == ["preview", "refresh", "preview"]
    assert result.changed is False and len(sleeps) == 1


def test_compilation_error_is_permanent_and_not_retried() -> None:
    fake = RecordingBackend().fail(
        "preview", cli_error("CompilationError", stdout="main.go:3: syntax error: unexpected newline")
    )
    run, sleeps = runner(fake)

    with pytest.raises(PulumiCommandFailed) as caught:
        run.apply(target(), program)

    assert isinstance(caught.value, PermanentError) and not caught.value.retryable
    assert caught.value.reason == "CompilationError"
    assert "syntax error: unexpected newline" in str(caught.value)  # the CLI's message is kept
    assert operations(fake) == ["preview"] and sleeps == []


def test_failed_up_keeps_the_cli_message_with_secrets_masked() -> None:
    fake = RecordingBackend().fail(
        "up",
        cli_error(
            stderr=f"error: authenticating with client secret {CLIENT_SECRET}: AADSTS7000215 invalid client secret",
        ),
    )
    run, sleeps = runner(fake)

    with pytest.raises(PulumiCommandFailed) as caught:
        run.apply(target(), program)

    message = str(caught.value)
    assert "AADSTS7000215 invalid client secret" in message and "pulumi up of platform/dev" in message
    assert CLIENT_SECRET not in message and "***" in message
    assert fake.count("up") == 1 and sleeps == []


def test_missing_stack_is_not_found() -> None:
    fake = RecordingBackend().fail("open", cli_error("StackNotFoundError", stderr="no stack named 'dev' found"))
    run, _ = runner(fake)

    with pytest.raises(NotFound, match="stack not found"):
        run.apply(target(), program)


def test_baseline_without_changes_means_nothing_is_applied() -> None:
    fake = RecordingBackend(changes={})
    fake.current_outputs = {"release_id": StackOutput(value="rel-0")}
    seen = []

    def unstamped() -> None:
        """The program as last applied."""

    def baseline(outputs):
        seen.append(outputs["release_id"].value)
        return unstamped

    run, _ = runner(fake)
    result = run.apply(target(), program, baseline=baseline)

    assert seen == ["rel-0"]
    assert fake.programs == [unstamped]  # the stamped program was not even previewed
    assert result.changed is False


def test_baseline_with_changes_applies_the_new_program() -> None:
    fake = RecordingBackend(changes={"update": 2})
    run, _ = runner(fake)

    def unstamped() -> None:
        """The program as last applied."""

    result = run.apply(target(), program, baseline=lambda outputs: unstamped)

    assert fake.programs == [unstamped, program, program]
    assert operations(fake) == ["preview", "preview", "up"]
    assert result.changed is True and result.change_summary == {"update": 2}


def test_reconcile_first_refreshes_before_the_preview() -> None:
    fake = RecordingBackend(changes={})
    run, _ = runner(fake)

    result = run.apply(target(), program, reconcile_first=True)

    assert operations(fake) == ["refresh", "preview"] and result.reconciled is True


def test_drift_check_reports_changes_the_cli_refused() -> None:
    fake = RecordingBackend()
    run, _ = runner(fake)
    assert run.check_drift(target(), program).drifted is False

    fake.fail("preview_refresh", cli_error(stderr="error: no changes were expected but changes were proposed"))
    report = run.check_drift(target(), program)

    assert report.drifted is True and "no changes were expected" in report.detail


def test_drift_check_retries_a_locked_stack() -> None:
    fake = RecordingBackend().fail("preview_refresh", locked_error())
    run, sleeps = runner(fake)

    assert run.check_drift(target(), program).drifted is False
    assert fake.count("preview_refresh") == 2 and len(sleeps) == 1


def test_secret_outputs_are_held_as_secrets() -> None:
    output = StackOutput(value="apiVersion: v1", secret=True)
    assert isinstance(output.value, SecretStr)
    assert "apiVersion" not in output.model_dump_json()
    fake = RecordingBackend(outputs={"kubeconfig": output, "cluster_name": "aks-dev"})
    result = runner(fake)[0].apply(target(), program)
    assert result.public_outputs() == {"cluster_name": "aks-dev"}
    assert result.secret_output_names() == ["kubeconfig"]
    assert "apiVersion" not in result.model_dump_json()


# --------------------------------------------------------------------------- target and CLI


def test_file_backend_needs_a_passphrase() -> None:
    with pytest.raises(ValidationError, match="passphrase is required"):
        StackTarget(project="platform", stack="dev")
    with pytest.raises(ValidationError, match="passphrase is required"):
        StackTarget(project="platform", stack="dev", backend_url="file:///tmp/state")
    cloud = StackTarget(project="platform", stack="dev", backend_url="https://api.pulumi.com")
    assert cloud.resolved_backend_url() == "https://api.pulumi.com"


def test_default_backend_is_a_folder_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_HOME", str(tmp_path))
    url = target().resolved_backend_url()
    assert url == f"file://{tmp_path / 'pulumi'}"
    assert (tmp_path / "pulumi").is_dir()


def test_bad_backend_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="backend_url"):
        target(backend_url="ftp://example")


def test_missing_cli_on_path_gives_the_products_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi import automation as auto

    def no_download(*args, **kwargs):
        raise AssertionError("the CLI must never be downloaded")

    monkeypatch.setattr(auto.PulumiCommand, "install", no_download)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(PulumiCliMissing) as caught:
        StackRunner(AutomationBackend(), attempts=1).apply(target(backend_url=f"file://{tmp_path}"), program)

    message = str(caught.value)
    assert "The Pulumi CLI was not found" in message and "'pulumi' on PATH" in message
    assert "cli_root" in message and "never downloads" in message
    assert isinstance(caught.value, PermanentError)


def test_missing_cli_under_cli_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PulumiCliMissing) as caught:
        find_cli(str(tmp_path / "pulumi-root"))
    assert str(tmp_path / "pulumi-root" / "bin" / "pulumi") in str(caught.value)


def test_cli_is_looked_up_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "bin" / "pulumi"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho v3.200.0\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    lookups = []
    real_which = pulumi_backend.shutil.which
    monkeypatch.setattr(pulumi_backend.shutil, "which", lambda *a, **k: lookups.append(a) or real_which(*a, **k))
    pulumi_backend._find_cli_cached.cache_clear()

    assert find_cli() == str(binary)
    assert find_cli() == str(binary)
    assert find_cli(str(tmp_path)) == str(binary)  # a configured root is checked directly
    assert len(lookups) == 1
