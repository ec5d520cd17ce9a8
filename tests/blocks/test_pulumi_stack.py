"""The PulumiStack block: settings, secrets, and its calls through the CLI boundary."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from blocks.pulumi_stack import PulumiStack
from delivery.errors import InvalidInput, PermanentError
from infra.stack_values import PulumiCliMissing, StackLocked, StackOutput
from infra.testing import RecordingBackend, locked_error

PASSPHRASE = "block-passphrase-7f3a"
CLIENT_SECRET = "block-client-secret-91bd"


def make_block(**overrides) -> PulumiStack:
    values = {
        "stack": "dev",
        "passphrase": SecretStr(PASSPHRASE),
        "azure_client_id": SecretStr("client-id"),
        "azure_client_secret": SecretStr(CLIENT_SECRET),
        "azure_tenant_id": SecretStr("tenant-id"),
        "azure_subscription_id": SecretStr("subscription-id"),
        "location": "northeurope",
        **overrides,
    }
    return PulumiStack(**values)


def test_credentials_reach_the_cli_as_environment_only() -> None:
    block = make_block(config={"platform:owner": "team-a"})
    target = block.target()

    assert {k: v.get_secret_value() for k, v in target.env.items()} == {
        "ARM_CLIENT_ID": "client-id",
        "ARM_CLIENT_SECRET": CLIENT_SECRET,
        "ARM_TENANT_ID": "tenant-id",
        "ARM_SUBSCRIPTION_ID": "subscription-id",
    }
    config = {k: (v.value, v.secret) for k, v in block.stack_config().items()}
    assert config == {"azure-native:location": ("northeurope", False), "platform:owner": ("team-a", False)}
    assert CLIENT_SECRET not in repr(block) and PASSPHRASE not in repr(block)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"stack": "dev env"}, "PulumiStack.stack:"),
        ({"project": ""}, "PulumiStack.project:"),
        ({"backend_url": "ftp://state"}, "PulumiStack.backend_url:"),
        ({"passphrase": None}, "passphrase is required"),
    ],
)
def test_bad_settings_are_invalid_input_naming_the_field(overrides: dict, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        make_block(**overrides).target()
    assert expected in str(caught.value)


def test_apply_runs_through_the_attached_backend_with_the_blocks_lock_policy() -> None:
    fake = RecordingBackend(changes={"create": 5}, outputs={"cluster_name": "aks-dev"}).fail("up", locked_error())
    sleeps: list[float] = []
    block = make_block(lock_attempts=2, lock_backoff_seconds=0.5).use_backend(fake, sleep=sleeps.append)

    result = block.apply(lambda: None)

    assert result.changed is True and result.attempts == 2
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.75
    assert fake.targets[0].stack == "dev" and fake.config["azure-native:location"].value == "northeurope"

    fake.fail("up", locked_error(), times=2).propose({"update": 1})
    with pytest.raises(StackLocked):
        block.apply(lambda: None)


def test_secret_output_and_drift_check() -> None:
    fake = RecordingBackend()
    fake.current_outputs = {"kubeconfig": StackOutput(value="apiVersion: v1", secret=True)}
    block = make_block().use_backend(fake)

    kubeconfig = block.secret_output("kubeconfig")

    assert isinstance(kubeconfig, SecretStr) and kubeconfig.get_secret_value() == "apiVersion: v1"
    assert block.secret_output("missing") is None
    assert block.check_drift().drifted is False
    assert block.refresh() == {"same": 5}
    assert fake.count("cancel") == 0  # a lock is never cancelled behind the operator's back
    block.cancel_update()
    assert fake.count("cancel") == 1


def test_without_a_cli_the_block_says_so(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    block = make_block(backend_url=f"file://{tmp_path}")
    with pytest.raises(PulumiCliMissing, match="The Pulumi CLI was not found") as caught:
        block.preview(lambda: None)
    assert isinstance(caught.value, PermanentError)


def test_saved_block_keeps_its_secrets_out_of_the_api(prefect_server: str) -> None:
    block = make_block(stack="saved-dev")
    block.save("test-saved-dev", overwrite=True)

    loaded = PulumiStack.load("test-saved-dev")
    assert loaded.passphrase is not None and loaded.passphrase.get_secret_value() == PASSPHRASE
    assert loaded.azure_client_secret.get_secret_value() == CLIENT_SECRET
    assert loaded.location == "northeurope"

    listing = httpx.post(f"{prefect_server}/block_documents/filter", json={"limit": 200})
    listing.raise_for_status()
    assert "test-saved-dev" in listing.text
    assert PASSPHRASE not in listing.text and CLIENT_SECRET not in listing.text
