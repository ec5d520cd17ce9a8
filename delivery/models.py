"""Domain models: what a release carries from commit to running system.

All models reject unknown fields; values are frozen.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from delivery.ids import ARTIFACT_ID_PATTERN, ReleaseId, new_release_id, new_trace_id


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every domain value: unknown fields are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- artifacts


class ArtifactValidation(Model):
    """How an artifact was validated before it reached the product."""

    passed: bool
    validator: str = Field(min_length=1)
    report_url: str = Field(default="", description="A link to the validation report (optional)")

    @field_validator("report_url", mode="before")
    @classmethod
    def _report_url(cls, value: object) -> object:
        return "" if value is None else value  # clients that send null, as the earlier schema allowed


def _none_as_empty(value: object) -> object:
    """Read ``null`` as the empty string: earlier clients sent ``None`` for an absent text field."""
    return "" if value is None else value


class Artifact(Model):
    """One validated file to commit into the application repository.

    Form-friendly: every field is a plain string or object (no type unions), so the Prefect UI's
    Custom run form shows text boxes. Give the file in ``content`` (text) or ``content_base64``
    (binary); ``sha256`` is optional: when given it is verified, when left out it is computed
    from the content and recorded in the request the flow sees.
    """

    artifact_id: str
    path: str = Field(description="Repository-relative POSIX path, e.g. app/service.py")
    content: str = Field(default="", description="The file as text (leave empty when content_base64 is given)")
    content_base64: str = Field(default="", description="The file as base64, for binaries (instead of content)")
    sha256: str = Field(
        default="", pattern=r"^([0-9a-fA-F]{64})?$", validate_default=True,
        description="Hex SHA-256 of the file's bytes: verified when given, computed when left empty",
    )
    validation: ArtifactValidation

    _text = field_validator("content", "content_base64", mode="before")(_none_as_empty)

    @field_validator("artifact_id")
    @classmethod
    def _artifact_id(cls, value: str) -> str:
        if not ARTIFACT_ID_PATTERN.fullmatch(value):  # fullmatch: "$" would accept a final newline
            raise ValueError(f"artifact_id {value!r} is invalid")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value or "\\" in value or "\x00" in value:
            raise ValueError(f"{value!r} is not a POSIX relative path")
        path = PurePosixPath(value)
        if path.is_absolute():
            raise ValueError(f"{value!r} is absolute: artifact paths are repository-relative")
        # Split the text itself: PurePosixPath drops "." and empty parts ("a/./b", "a//b").
        parts = value.split("/")
        if any(part in ("..", ".", "") for part in parts):
            raise ValueError(f"{value!r} escapes the repository or is not a file inside it")
        if any(part.casefold() == ".git" for part in parts):
            raise ValueError(f"{value!r} points into .git")
        return value

    @field_validator("content_base64")
    @classmethod
    def _content_base64(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("content"):
            raise ValueError("give exactly one of content or content_base64, not both")
        if value:
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("is not base64") from None
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str, info: ValidationInfo) -> str:
        if "content" not in info.data or "content_base64" not in info.data:
            return value  # the content was refused already: that error is the one to show
        digest = hashlib.sha256(_bytes(info.data["content"], info.data["content_base64"])).hexdigest()
        if value and value.lower() != digest:
            raise ValueError(f"sha256 mismatch: declared {value}, the content's digest is {digest} "
                             "(leave it empty to compute it)")
        return digest

    @field_validator("validation")
    @classmethod
    def _validation(cls, value: ArtifactValidation) -> ArtifactValidation:
        if not value.passed:
            raise ValueError(f"validation by {value.validator} did not pass")
        return value

    def data(self) -> bytes:
        """Return the artifact's bytes."""
        return _bytes(self.content, self.content_base64)

    @classmethod
    def from_text(
        cls, artifact_id: str, path: str, text: str, *, validator: str = "caller", passed: bool = True
    ) -> Artifact:
        """Build a validated text artifact, computing its digest."""
        return cls(
            artifact_id=artifact_id,
            path=path,
            content=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            validation=ArtifactValidation(passed=passed, validator=validator),
        )


def _bytes(content: str, content_base64: str) -> bytes:
    return base64.b64decode(content_base64, validate=True) if content_base64 else content.encode()


SOURCE_REF_PATTERN = r"^([A-Za-z0-9._][A-Za-z0-9._/-]{0,199})?$"


class ReleaseSource(Model):
    """What already exists in the application repository, released instead of inline artifacts."""

    ref: str = Field(
        default="", pattern=SOURCE_REF_PATTERN,
        description="A branch, tag or commit sha of the application repository; the commit it names is built",
    )

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if ".." in value or value.endswith((".lock", "/", ".")) or "//" in value:
            raise ValueError(f"{value!r} is not a branch, tag or commit name")
        return value


# --------------------------------------------------------------------------- strategies


class RollingStrategy(Model):
    """Update in place; rollback re-applies the last healthy revision."""

    name: Literal["rolling"] = "rolling"


class BlueGreenStrategy(Model):
    """Deploy the idle slot, gate it, switch the Service; rollback switches back."""

    name: Literal["blue_green"] = "blue_green"


class CanaryStrategy(Model):
    """Shift a share of replicas step by step, gated at each step; abort removes the canary."""

    name: Literal["canary"] = "canary"
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [10, 50, 100])

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if not value or value != sorted(set(value)) or value[-1] != 100:
            raise ValueError("canary steps must be increasing percentages ending at 100")
        return value


Strategy = Annotated[RollingStrategy | BlueGreenStrategy | CanaryStrategy, Field(discriminator="name")]
STRATEGY_NAMES = ("rolling", "blue_green", "canary")


# --------------------------------------------------------------------------- the request


def release_run_name(release_id: str, revision: int = 1) -> str:
    """The name of a release's flow run: its release id, ``-r<revision>`` after the first revision.

    The client names the run so when it creates it, and the flow renames a run created without it
    (the Prefect UI's form gives a random name) as soon as it starts.
    """
    return release_id if revision <= 1 else f"{release_id}-r{revision}"


class ReleaseRequest(Model):
    """The release flow's one parameter: what to deliver, where, how, and who asks."""

    # Left out (the UI's form): a release run derives both from itself, the same on every start of it
    # (flows/release.py run_ids); elsewhere they are generated.
    release_id: ReleaseId = Field(
        default_factory=new_release_id,
        description="Leave empty: the run takes rel-<date>-<8 hex> from its own id",
    )
    trace_id: str = Field(
        default_factory=new_trace_id, pattern=r"^[A-Za-z0-9-]{8,64}$",
        description="Leave empty: the run's id is the trace id",
    )
    app: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$", description="Application name")
    artifacts: list[Artifact] = Field(
        default_factory=list, description="Files to commit and release; or leave empty and give source.ref"
    )
    source: ReleaseSource = Field(
        default_factory=ReleaseSource, description="Release an existing branch or commit instead of artifacts"
    )
    target_environment: str = Field(
        default="", description="Walk the promotion path up to this environment; empty: the whole path"
    )
    strategy: Strategy | None = Field(default=None, description="Default: the environment's")
    requested_by: str = Field(min_length=1, description="The planner, e.g. agent:release-manager")
    revision: int = Field(default=1, ge=1)
    signature: str = Field(
        default="", max_length=8000,
        description="The planner's signed request (`delivery identity sign request`): required when the path "
                    "passes an environment whose approvals are signed",
    )

    _target = field_validator("target_environment", mode="before")(_none_as_empty)

    @field_validator("requested_by")
    @classmethod
    def _requested_by(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("requested_by must name an identity")
        return value.strip()

    @model_validator(mode="after")
    def _what(self) -> ReleaseRequest:
        # A model-level error has no location: the message names the fields.
        if bool(self.artifacts) == bool(self.source.ref):
            given = "both were given" if self.artifacts else "neither was given"
            raise ValueError(f"artifacts, source.ref: give exactly one of artifacts or source.ref ({given})")
        return self

    @model_validator(mode="after")
    def _unique_artifacts(self) -> ReleaseRequest:
        # A model-level error has no location: the message names the field (artifacts.<n>.artifact_id).
        seen_ids: dict[str, int] = {}
        seen_paths: dict[str, int] = {}
        for index, artifact in enumerate(self.artifacts):
            if artifact.artifact_id in seen_ids:
                raise ValueError(f"artifacts.{index}.artifact_id: duplicate artifact_id {artifact.artifact_id!r} "
                                 f"(also artifacts.{seen_ids[artifact.artifact_id]})")
            if artifact.path in seen_paths:
                raise ValueError(f"artifacts.{index}.path: two artifacts write the same path {artifact.path!r} "
                                 f"(also artifacts.{seen_paths[artifact.path]})")
            seen_ids[artifact.artifact_id] = index
            seen_paths[artifact.path] = index
        return self

    @property
    def branch(self) -> str:
        """The feature branch the artifacts are committed to."""
        return f"release/{self.release_id}"

    def artifact_digests(self) -> dict[str, str]:
        """Each artifact's sha256 (hex; computed when the request left it out) by artifact id.

        What the release records: the commit's ``Artifact-Sha256`` trailers, the ``CommitCreated``
        event and the release summary.
        """
        return {artifact.artifact_id: artifact.sha256 for artifact in self.artifacts}


# --------------------------------------------------------------------------- stage results


class CommitInfo(Model):
    """A commit the product wrote (or found already written)."""

    repository: str
    branch: str
    sha: str
    parent: str | None = None
    trailers: dict[str, list[str]] = Field(default_factory=dict)
    created: bool = Field(description="False when an identical commit was found instead")


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


class CheckResult(Model):
    """One pull-request check: a branch policy, a configured command or the policy gate."""

    name: str
    kind: Literal["branch_policy", "command", "policy_gate", "remote"] = "command"
    status: CheckStatus
    summary: str = ""
    log: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.PASSED


class PullRequestStatus(StrEnum):
    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class PullRequest(Model):
    """A pull request as the product tracks it, whatever the host."""

    number: int
    repository: str
    source_branch: str
    target_branch: str
    title: str
    description: str = ""
    status: PullRequestStatus = PullRequestStatus.OPEN
    head_sha: str
    merge_sha: str | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    url: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def checks_passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


class MergeInfo(Model):
    """The result of merging a pull request."""

    pull_request: int
    merge_sha: str
    target_branch: str
    created: bool


class BuildStatus(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TestCounts(Model):
    __test__ = False  # not a pytest class

    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0


class PublishedPackage(Model):
    name: str
    version: str
    location: str


class PublishedImage(Model):
    repository: str
    tag: str
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")

    @property
    def reference(self) -> str:
        """The immutable reference later stages deploy: ``repository@digest``."""
        return f"{self.repository}@{self.digest}"


class BuildResult(Model):
    """What a pipeline run produced."""

    status: BuildStatus
    commit: str
    run_id: str
    tests: TestCounts = Field(default_factory=TestCounts)
    packages: list[PublishedPackage] = Field(default_factory=list)
    images: list[PublishedImage] = Field(default_factory=list)
    logs_url: str | None = None
    reason: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is BuildStatus.SUCCEEDED


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Approval(Model):
    """One approver's decision on a plan, and whether it counted."""

    approver: str
    decision: Decision
    comment: str = ""
    at: datetime = Field(default_factory=utcnow)
    counted: bool = True
    refused_reason: str | None = None
    key_fingerprint: str | None = Field(default=None, description="The registered key that signed it (SHA256:...)")
    signature_digest: str | None = Field(default=None, description="sha256 of the signature, to refuse a replay")
