"""Build settings: how an application is tested, packaged and imaged.

They live in the application repository as ``delivery-build.yaml`` and are the one input of the
pipeline generator. Unknown keys, a missing test command and a path that leaves the checkout are
refused with :class:`~delivery.errors.InvalidInput` naming the field.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from delivery.errors import InvalidInput, validated

BUILD_SETTINGS_FILE = "delivery-build.yaml"


def checkout_path(value: str) -> str:
    """Check that ``value`` is a relative POSIX path that stays inside the checkout.

    Args:
        value: a path as written in the settings.

    Returns:
        The path, normalised (no ``./`` segments, no trailing slash; ``.`` for the root).

    Raises:
        ValueError: the path is absolute, climbs out with ``..``, or points into ``.git``.
    """
    if not value or "\\" in value or "\x00" in value:
        raise ValueError(f"{value!r} is not a relative POSIX path")
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~"):
        raise ValueError(f"{value!r} is absolute: paths are relative to the checkout")
    if ".." in path.parts:
        raise ValueError(f"{value!r} escapes the checkout")
    parts = [part for part in path.parts if part != "."]
    if parts and parts[0] == ".git":
        raise ValueError(f"{value!r} points into .git")
    return "/".join(parts) or "."


CheckoutPath = Annotated[str, AfterValidator(checkout_path), Field(description="Relative to the checkout")]
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestSettings(_Settings):
    """The test job: one shell command that writes JUnit XML."""

    __test__ = False  # not a pytest class

    command: str = Field(min_length=1, description="Shell command, run from working_directory")
    working_directory: CheckoutPath = "."
    junit: CheckoutPath = Field(default="test-results/junit.xml", description="The JUnit XML the command writes")
    timeout_minutes: int = Field(default=10, ge=1, le=360)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the test command is empty")
        return value.strip()



class PackageSettings(_Settings):
    """The Python package: built as a wheel from ``path`` and published to the package feed."""

    name: str = Field(pattern=NAME_PATTERN)
    path: CheckoutPath = "."
    timeout_minutes: int = Field(default=10, ge=1, le=360)



class ImageSettings(_Settings):
    """The container image: the files under ``context`` copied to ``workdir``, pushed by digest."""

    repository: str = Field(pattern=r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
    context: CheckoutPath = "."
    workdir: str = Field(default="/app", pattern=r"^/[A-Za-z0-9._/-]*$")
    command: list[str] = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_minutes: int = Field(default=10, ge=1, le=360)



class PipelineSettings(_Settings):
    """Where the generated pipeline lives and what triggers it."""

    path: CheckoutPath = "azure-pipelines.yml"
    trigger: list[str] = Field(default_factory=lambda: ["main"], min_length=1)
    vm_image: str = "ubuntu-latest"
    python: str = "python"



class BuildSettings(_Settings):
    """The whole ``delivery-build.yaml``."""

    app: str = Field(pattern=NAME_PATTERN)
    test: TestSettings
    package: PackageSettings | None = None
    image: ImageSettings | None = None
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)


def parse_build_settings(text: str | bytes, *, source: str = BUILD_SETTINGS_FILE) -> BuildSettings:
    """Parse and validate build settings.

    Args:
        text: the YAML document.
        source: a name for messages, e.g. ``sample-app:delivery-build.yaml``.

    Returns:
        The validated settings.

    Raises:
        InvalidInput: not YAML, not a mapping, or invalid; the message names each bad field.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    return validated(BuildSettings, data, context=source)
