"""Running a deployment strategy: its phases through the stages, and its rollback.

Render the manifest and plan the phases once per attempt (``render_manifest``, :mod:`tasks.phases`),
then per phase: ``promote`` -> ``sync_environment`` -> ``check_health``; a failure after the first
commit rolls the environment back to its last healthy revision (``roll_back``). This is
orchestration: each stage runs several times per release and environment, so each call gets a
resume key and a run name of its own, numbered from the stage registry (:mod:`delivery.stages`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from blocks.argocd_runtime import refuse_unsupported
from blocks.gitops_repo import GitOpsRepo
from blocks.runtime import Runtime
from delivery.config import HealthGates
from delivery.errors import DeliveryError
from delivery.manifests import ManifestSpec
from delivery.models import Model, RollingStrategy, Strategy
from delivery.plan import PromotionCause
from delivery.stages import stage_named
from tasks.health import HealthSpec, check_health
from tasks.manifest import render_manifest
from tasks.phases import plan_promotion
from tasks.promote import Promotion, promote
from tasks.rollback import RollbackResult, RollbackSpec, roll_back
from tasks.stage import stage_cache_key, stage_environment
from tasks.sync import SyncSpec, sync_environment

# How often the health gates look again: not configurable in delivery.yaml, tests shorten it.
POLL_SECONDS = 0.5


class PhaseOutcome(Model):
    """What one phase did."""

    name: str
    git_revision: str
    committed: bool
    changed: int
    pruned: int
    healthy: bool
    message: str


class DeploymentOutcome(Model):
    """The result of deploying a release into one environment with its strategy."""

    environment: str
    app: str
    strategy: str
    git_revision: str = Field(description="Where the environment's Git state ends (after a rollback: its commit)")
    failed_revision: str | None = Field(default=None, description="The revision abandoned by the rollback")
    healthy: bool
    rolled_back: bool
    cause: PromotionCause = Field(default=PromotionCause.DEPLOYED, description="Why it ended so")
    phases: list[PhaseOutcome] = Field(default_factory=list)
    rollback: RollbackResult | None = None
    message: str = ""


def _keyed(task: Any, phase: str, *situation: str | None, stage: str | None = None) -> Any:
    """The same stage, its resume key extended with the phase and what it acts on.

    A stage runs several times per release and environment (one per phase, and again after a
    rollback and a retry), so the release's ids alone would wrongly reuse an earlier result. The
    key adds the phase and the situation (content digest, revision): a resumed run skips exactly
    what already happened, and anything new runs (every stage is idempotent against Git and the
    cluster anyway).
    """
    stage = stage or task.name
    base = stage_cache_key(stage)
    digest = hashlib.sha256("\0".join(part or "-" for part in situation).encode()).hexdigest()[:16]

    def key(context: Any, parameters: dict[str, Any]) -> str | None:
        value = base(context, parameters)
        return f"{value}-{task.name}-{phase}-{digest}" if value else None

    registered = stage_named(stage)
    label = f"{registered.number:02d}-{task.name}"

    def run_name(parameters: dict[str, Any]) -> str:  # ``13-sync_environment-staging[deploy-blue]``
        environment = stage_environment(parameters) if registered.per_environment else None
        return f"{label}-{environment}[{phase}]" if environment else f"{label}[{phase}]"

    return task.with_options(cache_key_fn=key, task_run_name=run_name)


def roll_back_attempt(
    runtime: Runtime,
    repo: GitOpsRepo,
    spec: ManifestSpec,
    *,
    strategy: str,
    health: HealthGates,
    attempt: int,
    failed_revision: str,
    reason: str,
    requested_by: str | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> RollbackResult:
    """Stage 14 for one promotion attempt, keyed on the attempt and the abandoned revision.

    A rollback that completed comes back from its stored result; one that a crash cut short runs
    again (it is idempotent against Git and the cluster).
    """
    return _keyed(roll_back, "rollback", f"attempt-{attempt}", failed_revision)(runtime, repo, RollbackSpec(
        **spec.target().model_dump(), strategy=strategy, reason=reason, failed_revision=failed_revision,
        requested_by=requested_by, timeout_seconds=health.timeout_seconds, poll_seconds=poll_seconds))


def deploy_with_strategy(
    runtime: Runtime,
    repo: GitOpsRepo,
    spec: ManifestSpec,
    *,
    strategy: Strategy | None = None,
    health: HealthGates | None = None,
    poll_seconds: float = POLL_SECONDS,
    artifact_ids: Sequence[str] = (),
    planned_by: str | None = None,
    approved_by: Sequence[str] = (),
    attempt: int = 1,
    before_rollback: Callable[[str, PromotionCause, DeliveryError], None] | None = None,
) -> DeploymentOutcome:
    """Deploy a release into one environment: render, then per phase promote -> sync -> health.

    A failure after the first commit rolls the environment back to its last healthy revision and
    is reported in the outcome (``healthy=False, rolled_back=True`` and its cause) rather than raised.

    Args:
        runtime: the environment's runtime.
        repo: the GitOps repository.
        spec: templates, environment values, the image by digest and the target.
        strategy: default rolling.
        health: the environment's health gates (delivery.yaml): timeout and the optional HTTP probe,
            probed at the final phase.
        poll_seconds: how often the health gates look again.
        artifact_ids: ``Artifact-Id`` trailers of the promotion commits.
        planned_by: ``Planned-By`` trailer.
        approved_by: ``Approved-By`` trailers.
        attempt: the plan's promotion attempt: a retry after a failure deploys afresh instead of
            reusing the failed attempt's stored results.
        before_rollback: called with the abandoned revision, the failure's cause and the failure
            before the rollback starts, so that the caller can record the verdict first: a run resumed
            after a crash inside the rollback must finish it, not re-judge the rolled-back environment
            healthy.

    Returns:
        The outcome: revision, healthy, rolled_back, its cause, the phases and the rollback.

    Raises:
        InvalidInput: malformed templates or values, or a strategy the runtime cannot run (nothing was
            committed).
        DeliveryError: a failure before anything was committed.
    """
    strategy = strategy or RollingStrategy()
    health = health or HealthGates()
    refuse_unsupported(runtime, strategy.name)  # before anything is rendered or committed
    target = spec.target().model_dump()
    spec_digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    tried = f"attempt-{attempt}"
    manifest = _keyed(render_manifest, "render", spec_digest, tried)(spec)
    planned = _keyed(plan_promotion, "phases", spec_digest, tried, stage="render_manifest")(
        repo, spec, strategy, manifest.files)
    base_revision, phases = planned.base_revision, planned.phases
    outcomes: list[PhaseOutcome] = []
    revision: str | None = None
    try:
        for phase in phases:
            files_digest = hashlib.sha256(json.dumps(phase.files, sort_keys=True).encode()).hexdigest()
            promoted = _keyed(promote, phase.name, tried, base_revision, files_digest)(repo, Promotion(
                **target, files=phase.files, phase=phase.name, artifact_ids=list(artifact_ids),
                planned_by=planned_by, approved_by=list(approved_by)))
            revision = promoted.git_revision
            synced = _keyed(sync_environment, phase.name, tried, revision)(
                runtime, repo, SyncSpec(**target, git_revision=revision))
            checked = _keyed(check_health, phase.name, tried, revision)(runtime, repo, HealthSpec(
                **target, git_revision=revision, deployments=phase.gate, timeout_seconds=health.timeout_seconds,
                poll_seconds=poll_seconds, http_probe=health.http_probe if phase.final else None,
                mark_healthy=phase.final))
            outcomes.append(PhaseOutcome(name=phase.name, git_revision=revision, committed=promoted.created,
                                         changed=len(synced.changed), pruned=len(synced.pruned), healthy=True,
                                         message=checked.message))
    except DeliveryError as exc:
        if revision is None:
            raise
        cause = PromotionCause.of_failure(exc)
        if before_rollback is not None:
            before_rollback(revision, cause, exc)
        rollback = roll_back_attempt(runtime, repo, spec, strategy=strategy.name, health=health, attempt=attempt,
                                     failed_revision=revision, reason=str(exc), requested_by=planned_by,
                                     poll_seconds=poll_seconds)
        return DeploymentOutcome(
            environment=spec.environment, app=spec.app, strategy=strategy.name, git_revision=rollback.git_revision,
            failed_revision=revision, healthy=False, rolled_back=True, cause=cause, phases=outcomes, rollback=rollback,
            message=f"{exc}; rolled back: {rollback.message}",
        )
    return DeploymentOutcome(
        environment=spec.environment, app=spec.app, strategy=strategy.name, git_revision=revision or "",
        healthy=True, rolled_back=False, phases=outcomes, message=f"{len(outcomes)} phase(s) healthy",
    )
