"""Stage 12: commit an environment's desired state to the GitOps repository (promotion).

The rendered objects land in ``environments/<env>/<app>/`` with the release trailers. Content that
Git already holds commits nothing; a push that loses a race is rebased and tried again (by the
block). Emits ``DeploymentPromoted`` with the revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from blocks.gitops_repo import GitOpsRepo
from delivery.events import EventName, emit
from delivery.manifests import DeployTarget, RenderedManifest
from tasks.stage import coerce, stage


class Promotion(DeployTarget):
    """What to write for an environment, and the trail it leaves in Git."""

    files: dict[str, str] = Field(description="file name -> YAML text; the folder will hold exactly these")
    phase: str = Field(default="deploy", pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Strategy phase")
    artifact_ids: list[str] = Field(default_factory=list)
    planned_by: str | None = None
    approved_by: list[str] = Field(default_factory=list)

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.endswith(".yaml") or "/" in name or name.startswith("."):
                raise ValueError(f"file name {name!r} must be a plain *.yaml name")
        return value

    @classmethod
    def of(cls, manifest: RenderedManifest, **options: Any) -> Promotion:
        """The promotion of a rendered manifest as it is."""
        return cls(**manifest.target().model_dump(), files=manifest.files, **options)

    def trailers(self) -> list[tuple[str, str]]:
        """Release-Id, Trace-Id, Artifact-Id, Planned-By, Approved-By, Environment, Phase."""
        out = [("Release-Id", self.release_id), ("Trace-Id", self.trace_id)]
        out += [("Artifact-Id", artifact) for artifact in self.artifact_ids]
        out += [("Planned-By", self.planned_by)] if self.planned_by else []
        out += [("Approved-By", approver) for approver in self.approved_by]
        out += [("Environment", self.environment), ("Delivery-Phase", self.phase)]
        return out


class PromotionResult(DeployTarget):
    """The commit that holds the environment's desired state."""

    git_revision: str = Field(description="The GitOps commit sha")
    created: bool = Field(description="False when Git already held exactly this content")
    phase: str
    files: list[str]


def write_promotion(repo: GitOpsRepo, promotion: Promotion) -> PromotionResult:
    """Commit a promotion (the stage's body, also used by rollbacks).

    Raises:
        ConflictError: the push kept losing races.
        InvalidInput: bad names or trailers.
    """
    message = (f"Promote {promotion.app} to {promotion.environment} ({promotion.phase})\n\n"
               f"Release {promotion.release_id}, revision {promotion.revision}.")
    commit = repo.write_environment(
        promotion.environment, promotion.app, {name: text.encode() for name, text in promotion.files.items()},
        message=message, trailers=promotion.trailers(),
    )
    return PromotionResult(
        **promotion.target().model_dump(), git_revision=commit.sha, created=commit.created,
        phase=promotion.phase, files=sorted(promotion.files),
    )


@stage("promote")
def promote(repo: GitOpsRepo, promotion: Promotion | Mapping[str, Any]) -> PromotionResult:
    """Commit the environment's desired state to the GitOps repository; emit ``DeploymentPromoted``.

    Args:
        repo: the GitOps repository.
        promotion: the files and the release trail.

    Returns:
        The revision that holds the state (``created=False`` when nothing had to be committed).
    """
    promotion = coerce(Promotion, promotion, stage_name="promote")
    result = write_promotion(repo, promotion)
    emit(
        EventName.DEPLOYMENT_PROMOTED,
        release_id=promotion.release_id,
        trace_id=promotion.trace_id,
        payload={
            "environment": promotion.environment,
            "app": promotion.app,
            "revision": result.git_revision,
            "created": result.created,
            "phase": promotion.phase,
            "files": result.files,
        },
        resource={"delivery.environment": promotion.environment},
    )
    return result
