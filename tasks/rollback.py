"""Stage 14: roll an environment back to its last healthy revision.

The folder ``environments/<env>/<app>/`` is restored to what the tag ``healthy/<env>/<app>`` holds
(a forward commit, like ``git revert``), then synced. What that means per strategy follows from the
revision: ``rolling`` re-applies the previous objects; ``blue_green`` switches the Service back to
the previous slot; ``canary`` prunes the canary while the stable Deployment, unchanged in Git, is
not even re-written. With no healthy revision yet, the application is removed from the environment.
With an :class:`~blocks.argocd_runtime.ArgoCDRuntime` the restoring commit is synced by Argo CD
(prune on) and the Application, not each rollout, must be Synced and Healthy there.
Emits ``RollbackCompleted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from blocks.argocd_runtime import ArgoAppStatus
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import ObjectRef, RolloutStatus
from blocks.runtime import Runtime, reconciled_by_argocd
from delivery.events import EventName, emit
from delivery.manifest_files import parse_objects
from delivery.manifests import DeployTarget
from tasks.health import wait_for_rollouts
from tasks.stage import coerce, stage
from tasks.sync import SyncSpec, reconcile, same_manifests

SLOT_LABEL = "delivery.gitops/slot"
TRACK_LABEL = "delivery.gitops/track"


class RollbackSpec(DeployTarget):
    """Which environment to roll back, and why."""

    strategy: Literal["rolling", "blue_green", "canary"] = "rolling"
    reason: str = Field(default="", max_length=2000)
    failed_revision: str | None = Field(default=None, description="The GitOps revision being abandoned")
    requested_by: str | None = None
    wait: bool = Field(default=True, description="Wait for the restored rollouts")
    timeout_seconds: float = Field(default=120, gt=0, le=3600)
    poll_seconds: float = Field(default=0.5, gt=0, le=30)


class RollbackResult(DeployTarget):
    """Where the environment is after the rollback."""

    strategy: str
    git_revision: str = Field(description="The GitOps commit that restores the healthy state")
    restored_from: str | None = Field(description="The healthy revision restored (None: nothing was healthy)")
    committed: bool
    changed: list[ObjectRef] = Field(default_factory=list)
    pruned: list[ObjectRef] = Field(default_factory=list)
    rollouts: list[RolloutStatus] = Field(default_factory=list)
    application: ArgoAppStatus | None = Field(default=None, description="Argo CD: the Application's last status")
    healthy: bool
    message: str


def describe(strategy: str, files: Mapping[str, bytes | str], pruned: list[ObjectRef]) -> str:
    """Say in words what the rollback meant for the strategy."""
    objects = parse_objects(files)
    if strategy == "blue_green":
        slots = sorted({(o.get("spec") or {}).get("selector", {}).get(SLOT_LABEL) for o in objects
                        if o["kind"] == "Service"} - {None})
        return f"Service switched back to slot {', '.join(slots)}" if slots else "no slot was live before"
    if strategy == "canary":
        canaries = [str(ref) for ref in pruned if ref.kind == "Deployment" and ref.name.endswith("-canary")]
        return f"canary removed ({', '.join(canaries) or 'none live'}); stable untouched"
    return f"restored {len(objects)} object(s) of the last healthy revision"


def restore_healthy(runtime: Runtime, repo: GitOpsRepo, spec: RollbackSpec) -> RollbackResult:
    """Restore and sync the last healthy revision (the stage's body)."""
    healthy = repo.healthy_revision(spec.environment, spec.app)
    files = repo.read_environment(spec.environment, spec.app, ref=healthy) if healthy else {}
    trailers = [("Release-Id", spec.release_id), ("Trace-Id", spec.trace_id), ("Environment", spec.environment),
                ("Delivery-Phase", "rollback"), ("Restores", healthy or "nothing")]
    if spec.failed_revision:
        trailers.append(("Abandons", spec.failed_revision))
    if spec.requested_by:
        trailers.append(("Requested-By", spec.requested_by))
    target = f"healthy revision {healthy[:12]}" if healthy else "no healthy revision (removing the application)"
    reason = f"\n\n{spec.reason.strip()}" if spec.reason.strip() else ""
    commit = repo.write_environment(
        spec.environment, spec.app, files,
        message=f"Roll back {spec.app} in {spec.environment} to {target}{reason}", trailers=trailers,
    )
    synced = reconcile(runtime, repo, SyncSpec(**spec.target().model_dump(), git_revision=commit.sha))
    names = [o["metadata"]["name"] for o in parse_objects(files) if o["kind"] == "Deployment"]
    healthy_now, rollouts, message = True, [], "nothing to wait for"
    application = synced.application
    if spec.wait and files and reconciled_by_argocd(runtime):
        healthy_now, application, message = runtime.wait_healthy(
            runtime.application_for(spec.app, spec.environment), commit.sha, timeout_seconds=spec.timeout_seconds,
            poll_seconds=spec.poll_seconds, equivalent=same_manifests(repo, spec, commit.sha))
    elif spec.wait and names and not reconciled_by_argocd(runtime):
        healthy_now, rollouts, message = wait_for_rollouts(
            runtime, namespace=spec.namespace, names=names, timeout_seconds=spec.timeout_seconds,
            poll_seconds=spec.poll_seconds,
        )
    return RollbackResult(
        **spec.target().model_dump(), strategy=spec.strategy, git_revision=commit.sha, restored_from=healthy,
        committed=commit.created, changed=synced.changed, pruned=synced.pruned, rollouts=rollouts,
        application=application, healthy=healthy_now,
        message=f"{describe(spec.strategy, files, synced.pruned)}; {message}",
    )


@stage("roll_back")
def roll_back(runtime: Runtime, repo: GitOpsRepo, spec: RollbackSpec | Mapping[str, Any]) -> RollbackResult:
    """Return an environment to its last healthy revision; emit ``RollbackCompleted``.

    Args:
        runtime: the environment's runtime.
        repo: the GitOps repository.
        spec: the environment, the strategy in use and the reason.

    Returns:
        The restoring revision, what the sync changed and pruned, and whether the restored
        rollouts are healthy. A second rollback commits and changes nothing.
    """
    spec = coerce(RollbackSpec, spec, stage_name="roll_back")
    result = restore_healthy(runtime, repo, spec)
    emit(
        EventName.ROLLBACK_COMPLETED,
        release_id=spec.release_id,
        trace_id=spec.trace_id,
        payload={
            "environment": spec.environment,
            "app": spec.app,
            "strategy": spec.strategy,
            "revision": result.git_revision,
            "restored_from": result.restored_from,
            "abandoned": spec.failed_revision,
            "reason": spec.reason,
            "healthy": result.healthy,
            "message": result.message,
        },
        resource={"delivery.environment": spec.environment},
    )
    return result
