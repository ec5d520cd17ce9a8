"""The ``PulumiStack`` block: one environment's infrastructure stack, run through the Automation API.

The block holds where the stack lives (project, stack, backend URL), its secrets (the passphrase
that encrypts stack secrets, the Azure service principal) and where the Pulumi CLI is. Its methods
run a program against the stack with :class:`infra.stacks.StackRunner`, so Pulumi's failures
arrive as :mod:`delivery.errors` (a locked stack is transient, the rest permanent).

Credentials reach the CLI only as environment variables (``ARM_*``), never as stack config, so
nothing secret is written to ``Pulumi.<stack>.yaml`` or shown in a preview.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from delivery.errors import validated
from delivery.provider_timing import timed_provider
from infra.pulumi_backend import StackBackend
from infra.stack_values import ApplyResult, ConfigItem, Program, StackDriftPreview, StackOutput, StackTarget
from infra.stacks import StackRunner

_AZURE_ENV = {
    "azure_client_id": "ARM_CLIENT_ID",
    "azure_client_secret": "ARM_CLIENT_SECRET",
    "azure_tenant_id": "ARM_TENANT_ID",
    "azure_subscription_id": "ARM_SUBSCRIPTION_ID",
}


def _no_program() -> None:
    """Refresh, outputs and drift checks read state only; the inline workspace still wants a program."""


@timed_provider
class PulumiStack(Block):
    """An infrastructure stack of an environment, run with the Pulumi Automation API.

    Attributes:
        project: the Pulumi project name.
        stack: the stack name, usually the environment.
        backend_url: where state lives; default a ``file://`` folder under the product's state folder.
        passphrase: encrypts the stack's secrets (passphrase secrets provider).
        azure_client_id, azure_client_secret, azure_tenant_id, azure_subscription_id: the service
            principal the azure-native provider uses (passed as ``ARM_*`` variables).
        cli_root: a folder holding ``bin/pulumi``; default: ``pulumi`` on PATH.
        location: the Azure region (``azure-native:location``).
        platform: settings of the environment's platform (see ``infra.platform.PlatformSpec``).
        config: extra non-secret stack config.
        lock_attempts, lock_backoff_seconds: how long to wait out a stack locked by another update.
    """

    _block_type_name = "Pulumi Stack"
    _block_type_slug = "pulumi-stack"
    _description = "An environment's infrastructure stack, run with the Pulumi Automation API (no CLI download)."

    project: str = Field(default="gitops-delivery-platform", description="The Pulumi project name")
    stack: str = Field(description="Stack name, e.g. the environment")
    backend_url: str | None = Field(default=None, description="file://, https://app.pulumi.com, azblob://...")
    passphrase: SecretStr | None = Field(default=None, description="Encrypts stack secrets")
    azure_client_id: SecretStr | None = Field(default=None, description="Service principal id (ARM_CLIENT_ID)")
    azure_client_secret: SecretStr | None = Field(default=None, description="Service principal secret "
                                                                            "(ARM_CLIENT_SECRET)")
    azure_tenant_id: SecretStr | None = Field(default=None, description="Azure tenant (ARM_TENANT_ID)")
    azure_subscription_id: SecretStr | None = Field(default=None, description="Azure subscription "
                                                                              "(ARM_SUBSCRIPTION_ID)")
    cli_root: str | None = Field(default=None, description="Folder holding bin/pulumi; default: PATH")
    location: str = Field(default="westeurope", description="The Azure region (azure-native:location)")
    platform: dict[str, Any] = Field(default_factory=dict, description="infra.platform.PlatformSpec settings")
    config: dict[str, str] = Field(default_factory=dict, description="Extra non-secret stack config")
    lock_attempts: int = Field(default=3, ge=1, le=20, description="Tries when another update holds the stack lock")
    lock_backoff_seconds: float = Field(default=2.0, ge=0, description="First wait between those tries")

    _backend: StackBackend | None = PrivateAttr(default=None)
    _sleep: Callable[[float], None] | None = PrivateAttr(default=None)

    def use_backend(self, backend: StackBackend, *, sleep: Callable[[float], None] | None = None) -> PulumiStack:
        """Run through another CLI boundary (tests use a recording fake); returns the block itself."""
        self._backend = backend
        self._sleep = sleep
        return self

    def target(self) -> StackTarget:
        """The stack as the runner sees it.

        Raises:
            InvalidInput: a setting is malformed; the message names the field.
        """
        env = {name: value for field, name in _AZURE_ENV.items() if (value := getattr(self, field)) is not None}
        fields = {"project": self.project, "stack": self.stack, "backend_url": self.backend_url,
                  "passphrase": self.passphrase, "cli_root": self.cli_root, "env": env}
        return validated(StackTarget, fields, under="PulumiStack")

    def stack_config(self) -> dict[str, ConfigItem]:
        """Non-secret stack config: the Azure region plus the block's extra entries."""
        return {
            "azure-native:location": ConfigItem(value=self.location),
            **{key: ConfigItem(value=value) for key, value in self.config.items()},
        }

    def runner(self) -> StackRunner:
        kwargs: dict[str, Any] = {"attempts": self.lock_attempts, "backoff_seconds": self.lock_backoff_seconds}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        return StackRunner(self._backend, **kwargs)

    def apply(
        self,
        program: Program,
        *,
        baseline: Callable[[Mapping[str, StackOutput]], Program | None] | None = None,
        reconcile_first: bool = False,
    ) -> ApplyResult:
        """Converge the stack to ``program``: preview, then ``up`` only when there are changes.

        Args:
            program: the inline Pulumi program.
            baseline: see :meth:`infra.stacks.StackRunner.apply`.
            reconcile_first: refresh before previewing (a previous attempt failed).
        """
        return self.runner().apply(
            self.target(), program, config=self.stack_config(), baseline=baseline, reconcile_first=reconcile_first
        )

    def preview(self, program: Program) -> dict[str, int]:
        """Preview ``program`` and return the change summary (operation -> count)."""
        return self.runner().preview(self.target(), program, config=self.stack_config())

    def refresh(self) -> dict[str, int]:
        """Refresh the stack's state from Azure."""
        return self.runner().refresh(self.target(), _no_program)

    def check_drift(self) -> StackDriftPreview:
        """Preview a refresh expecting no changes: does Azure still match the stack's state?"""
        return self.runner().check_drift(self.target(), _no_program)

    def cancel_update(self) -> None:
        """Remove the lock a crashed update left (``pulumi cancel``); never called automatically."""
        self.runner().cancel(self.target(), _no_program)

    def outputs(self) -> dict[str, StackOutput]:
        """The stack's outputs; secret ones hold a SecretStr."""
        return self.runner().outputs(self.target(), _no_program)

    def secret_output(self, name: str) -> SecretStr | None:
        """One secret output (such as ``kubeconfig``), or None when the stack has none by that name."""
        output = self.outputs().get(name)
        if output is None or output.value is None:
            return None
        value = output.value
        return value if isinstance(value, SecretStr) else SecretStr(str(value))
