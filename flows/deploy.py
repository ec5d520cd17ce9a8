"""Deploying one approved plan, and keeping its rollback on record so that a resumed run finishes it.

:func:`deploy_environment` gathers the deployment's inputs (the environment's runtime, the GitOps
repository, the app's templates at the built commit, the health settings), provisions the
infrastructure when the environment names a stack (stage 11) and runs the strategy
(:mod:`flows.strategies`: stages 10, 12-14).

A release's own rollback is written to the ledger twice: ``rollback-started`` before its first
outside write (with the plan moved to Failed, its cause kept), ``rolled-back`` after its last
(:mod:`delivery.ledger`). A run resumed in between finishes the rollback
(:func:`finish_rollback`) instead of judging the half-restored environment anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger

from blocks.git_host import GitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.loading import load_configured_block, load_runtime
from blocks.runtime import Runtime
from delivery.approvals import counted_approvers
from delivery.config import EnvironmentConfig, HealthGates
from delivery.errors import DeliveryError, InvalidInput
from delivery.ledger import ROLLBACK_FINISHED, ROLLBACK_STARTED, Ledger
from delivery.plan import PlanState, PromotionCause, ReleasePlan

if TYPE_CHECKING:  # imported where used: the stage modules are heavy
    from delivery.manifests import ManifestSpec
    from flows.strategies import DeploymentOutcome

# Who moves a plan through its promotion and writes its rollbacks.
PROMOTION_ACTOR = "system:promotion"


def move_plan(ledger: Ledger, plan: ReleasePlan, to: PlanState, reason: str,
              cause: PromotionCause | None = None) -> ReleasePlan:
    """Move a plan as the promotion, and keep the move in the ledger.

    Returns:
        The plan as the ledger now holds it.
    """
    moved, record = plan.transition(to, actor=PROMOTION_ACTOR, reason=reason, cause=cause)
    return ledger.save_plan(moved, record)


# --------------------------------------------------------------------------- the deployment


def _image_of(plan: ReleasePlan) -> str:
    images = plan.build.images
    named = [image for image in images if image.repository.rsplit("/", 1)[-1] == plan.app]
    return (named or images)[0].reference


def load_templates(plan: ReleasePlan) -> dict[str, str]:
    """The application's ``deploy/`` templates and values at the built commit, from the git host.

    Raises:
        InvalidInput: the application has no ``deploy/`` templates at that commit, or one is not UTF-8.
    """
    from delivery.manifests import DEPLOY_FOLDER, templates_from_files

    host = load_configured_block("git_host", GitHost)
    templates = templates_from_files(host.read_tree(plan.app, DEPLOY_FOLDER, ref=plan.build.commit))
    if not templates:
        raise InvalidInput(f"app {plan.app!r}: no deploy/ templates at commit {plan.build.commit[:12]}")
    return templates


def _deploy_inputs(
    plan: ReleasePlan, settings: EnvironmentConfig
) -> tuple[Runtime, GitOpsRepo, ManifestSpec, HealthGates]:
    """The runtime, GitOps repository, manifest spec and health gates of a plan's deployment."""
    from delivery.manifests import ManifestSpec

    runtime = load_runtime(settings.runtime, source=f"delivery.yaml environments.{plan.environment}.runtime")
    repo = load_configured_block("gitops_repo", GitOpsRepo)
    spec = ManifestSpec(
        release_id=plan.release_id, trace_id=plan.trace_id, revision=plan.revision, app=plan.app,
        environment=plan.environment, namespace=settings.namespace, image=_image_of(plan),
        templates=load_templates(plan), values=settings.values,
    )
    return runtime, repo, spec, settings.health


def deploy_environment(plan: ReleasePlan, settings: EnvironmentConfig, *, artifact_ids: list[str],
                       ledger: Ledger) -> DeploymentOutcome:
    """Stages 10-14: infrastructure when configured, then render, promote, sync, health, with the
    strategy's rollback on failure.

    Before a rollback starts the plan is moved to Failed with the failure's cause, and the
    rollback's start is kept (see the module's docstring).

    Args:
        plan: the plan, Promoting.
        settings: the environment's configuration.
        artifact_ids: ``Artifact-Id`` trailers of the promotion commits.
        ledger: where the verdict and the rollback are kept.

    Returns:
        The strategy's outcome (``rolled_back`` with its cause when a phase failed after the first commit).

    Raises:
        DeliveryError: a failure before anything was committed.
    """
    from flows.strategies import deploy_with_strategy

    if settings.infrastructure is not None:
        from tasks.infrastructure import provision_if_configured

        provision_if_configured(plan, settings)
    runtime, repo, spec, health = _deploy_inputs(plan, settings)
    return deploy_with_strategy(
        runtime, repo, spec, strategy=plan.strategy, health=health, artifact_ids=artifact_ids,
        planned_by=plan.planned_by, approved_by=counted_approvers(plan.approvals), attempt=plan.attempt,
        before_rollback=lambda revision, cause, exc: _fail_for_rollback(ledger, plan, revision, cause, exc),
    )


# --------------------------------------------------------------------------- rollbacks that must finish


def _rollback_actions(ledger: Ledger, plan: ReleasePlan, action: str) -> list[dict[str, Any]]:
    return [a for a in ledger.actions(release_id=plan.release_id, action=action)
            if a["detail"].get("plan_id") == plan.plan_id and a["detail"].get("attempt") == plan.attempt]


def unfinished_rollback(ledger: Ledger, plan: ReleasePlan) -> dict[str, Any] | None:
    """The started, never finished rollback of the plan's current attempt (its ledger detail), if any."""
    started = _rollback_actions(ledger, plan, ROLLBACK_STARTED)
    if not started or _rollback_actions(ledger, plan, ROLLBACK_FINISHED):
        return None
    return started[-1]["detail"]


def _fail_for_rollback(ledger: Ledger, plan: ReleasePlan, revision: str, cause: PromotionCause,
                       exc: DeliveryError) -> None:
    """The verdict, kept before the rollback starts: the plan Failed with its cause, the rollback started."""
    move_plan(ledger, ledger.get_plan(plan.plan_id), PlanState.FAILED,
              f"{type(exc).__name__}: {exc}; rolling back to the last healthy revision", cause)
    ledger.record_action(plan.release_id, action=ROLLBACK_STARTED, actor=PROMOTION_ACTOR,
                         reason=f"{plan.environment}: rolling back from {revision[:12]}: {exc}",
                         detail={"plan_id": plan.plan_id, "environment": plan.environment, "attempt": plan.attempt,
                                 "failed_revision": revision, "error": str(exc)})


def rollback_finished(ledger: Ledger, plan: ReleasePlan, *, revision: str, message: str) -> None:
    """Keep the end of the plan's rollback: the environment is back at ``revision``."""
    ledger.record_action(plan.release_id, action=ROLLBACK_FINISHED, actor=PROMOTION_ACTOR,
                         reason=f"{plan.environment}: {message}",
                         detail={"plan_id": plan.plan_id, "environment": plan.environment, "attempt": plan.attempt,
                                 "git_revision": revision})


def finish_rollback(ledger: Ledger, plan: ReleasePlan, settings: EnvironmentConfig, started: dict[str, Any]) -> None:
    """Run a rollback a crash cut short to its end (its completed stage comes back from its stored result)."""
    from flows.strategies import roll_back_attempt

    runtime, repo, spec, health = _deploy_inputs(plan, settings)
    result = roll_back_attempt(runtime, repo, spec, strategy=plan.strategy.name, health=health,
                               attempt=plan.attempt, failed_revision=started["failed_revision"],
                               reason=started["error"], requested_by=plan.planned_by)
    rollback_finished(ledger, plan, revision=result.git_revision, message=f"rolled back: {result.message}")
    get_run_logger().warning("%s: finished the rollback a crash interrupted: %s", plan.environment, result.message)


__all__ = [
    "PROMOTION_ACTOR",
    "deploy_environment",
    "finish_rollback",
    "load_templates",
    "move_plan",
    "rollback_finished",
    "unfinished_rollback",
]
