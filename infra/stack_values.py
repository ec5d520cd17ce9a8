"""What a Pulumi stack run takes, gives back and fails with: the stack, its config and outputs, the results.

Plain values shared by the CLI boundary (:mod:`infra.pulumi_backend`), the policy that runs it
(:mod:`infra.stacks`) and the block and stages above them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from delivery.errors import PermanentError, TransientError
from delivery.settings import state_dir

Program = Callable[[], None]
NO_CHANGE_OPS = frozenset({"same", "read", "refresh"})


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
