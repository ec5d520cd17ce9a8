"""Stage 13b: health gates after a sync.

The gate waits, within a timeout, until every gated Deployment's rollout is complete (observed
generation, updated and available replicas) or one of them exceeds its progress deadline; then,
optionally, an HTTP probe must answer the expected status. On success the tag
``healthy/<env>/<app>`` moves to the revision (the rollback target). Emits ``HealthChecked``.

With an :class:`~blocks.argocd_runtime.ArgoCDRuntime` the gate is the environment's Argo CD
Application: Synced and Healthy at the revision passes; Degraded, or anything else at the timeout
(e.g. still Progressing), fails with Argo CD's status as the reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field

from blocks.argocd_runtime import ArgoAppStatus
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime, RolloutStatus
from blocks.runtime import Runtime, reconciled_by_argocd
from delivery import provider_timing
from delivery.config import HttpProbe
from delivery.errors import HealthCheckFailed, NotFound, TransientError
from delivery.events import EventName, emit
from delivery.manifests import DeployTarget
from tasks.stage import coerce, stage
from tasks.sync import desired_objects, same_manifests


class HealthSpec(DeployTarget):
    """What to gate, at which GitOps revision, for how long."""

    git_revision: str = Field(min_length=7)
    deployments: list[str] | None = Field(default=None, description="Deployments to gate; default: all in Git")
    timeout_seconds: float = Field(default=120, gt=0, le=3600)
    poll_seconds: float = Field(default=0.5, gt=0, le=30)
    http_probe: HttpProbe | None = None
    mark_healthy: bool = Field(default=True, description="Move healthy/<env>/<app> to the revision on success")


class HealthResult(DeployTarget):
    """The gate's verdict."""

    git_revision: str
    healthy: bool
    rollouts: list[RolloutStatus] = Field(default_factory=list)
    application: ArgoAppStatus | None = Field(default=None, description="Argo CD: the Application's last status")
    probe_status: int | None = None
    message: str
    tagged: bool = False


def _gated(runtime: KubernetesRuntime, repo: GitOpsRepo, spec: HealthSpec) -> list[str]:
    if spec.deployments is not None:
        return list(spec.deployments)
    objects = desired_objects(repo, spec, spec.git_revision)
    return [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment"]


def wait_for_rollouts(
    runtime: KubernetesRuntime, *, namespace: str, names: list[str], timeout_seconds: float, poll_seconds: float
) -> tuple[bool, list[RolloutStatus], str]:
    """Poll rollouts until all are ready, one failed, or the time is up.

    Returns:
        (all ready, the last statuses, a message).
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        statuses: list[RolloutStatus] = []
        missing: list[str] = []
        for name in names:
            try:
                statuses.append(runtime.rollout_status(name=name, namespace=namespace))
            except NotFound:
                missing.append(name)
        failed = [s for s in statuses if s.failed]
        if failed:
            return False, statuses, "; ".join(s.message for s in failed)
        if not missing and all(s.ready for s in statuses):
            return True, statuses, f"{len(statuses)} deployment(s) rolled out"
        if time.monotonic() >= deadline:
            waiting = [s.message for s in statuses if not s.ready] + [f"deployment {n!r} not found" for n in missing]
            return False, statuses, f"not healthy after {timeout_seconds:g}s: " + "; ".join(waiting)
        time.sleep(poll_seconds)


def probe(
    spec: HttpProbe, runtime: Runtime, *, namespace: str, app: str, deadline: float,
    poll_seconds: float,
) -> tuple[bool, int | None, str]:
    """Call the probe until it answers the expected status or the deadline passes."""
    status: int | None = None
    detail = ""
    where = spec.where(namespace, app)
    while True:
        try:
            if spec.url:
                with provider_timing.provider_call("http_probe"):
                    status = httpx.get(spec.url, timeout=5.0).status_code
            else:
                status = runtime.probe_service(service=spec.service or app, namespace=namespace, path=spec.path,
                                               port=spec.port)
            if status == spec.expected_status:
                return True, status, f"probe {where} answered {status}"
            detail = f"answered {status}, expected {spec.expected_status}"
        except (httpx.HTTPError, TransientError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            return False, status, f"probe {where} {detail}"
        time.sleep(poll_seconds)


def evaluate_health(runtime: Runtime, repo: GitOpsRepo, spec: HealthSpec) -> HealthResult:
    """Run the gate without raising (the stage's body); tags the revision healthy on success."""
    started = time.monotonic()
    rollouts: list[RolloutStatus] = []
    application: ArgoAppStatus | None = None
    if reconciled_by_argocd(runtime):
        healthy, application, message = runtime.wait_healthy(
            runtime.application_for(spec.app, spec.environment), spec.git_revision,
            timeout_seconds=spec.timeout_seconds, poll_seconds=spec.poll_seconds,
            equivalent=same_manifests(repo, spec, spec.git_revision))
    else:
        names = _gated(runtime, repo, spec)
        healthy, rollouts, message = wait_for_rollouts(
            runtime, namespace=spec.namespace, names=names, timeout_seconds=spec.timeout_seconds,
            poll_seconds=spec.poll_seconds,
        )
    probe_status = None
    if healthy and spec.http_probe is not None:
        healthy, probe_status, probe_message = probe(
            spec.http_probe, runtime, namespace=spec.namespace, app=spec.app,
            deadline=started + spec.timeout_seconds, poll_seconds=spec.poll_seconds,
        )
        message = f"{message}; {probe_message}"
    tagged = False
    if healthy and spec.mark_healthy:
        repo.tag_healthy(spec.environment, spec.app, spec.git_revision)
        tagged = True
    return HealthResult(**spec.target().model_dump(), git_revision=spec.git_revision, healthy=healthy,
                        rollouts=rollouts, application=application, probe_status=probe_status, message=message,
                        tagged=tagged)


@stage("check_health")
def check_health(runtime: Runtime, repo: GitOpsRepo, spec: HealthSpec | Mapping[str, Any]) -> HealthResult:
    """Gate the environment on its rollouts (and probe); emit ``HealthChecked``.

    Args:
        runtime: the environment's runtime.
        repo: the GitOps repository (its healthy tag moves on success).
        spec: the revision, the Deployments to gate, the timeout and the optional probe.

    Returns:
        The healthy verdict.

    Raises:
        HealthCheckFailed: a rollout failed, timed out, or the probe did not answer as expected.
    """
    spec = coerce(HealthSpec, spec, stage_name="check_health")
    result = evaluate_health(runtime, repo, spec)
    emit(
        EventName.HEALTH_CHECKED,
        release_id=spec.release_id,
        trace_id=spec.trace_id,
        payload={
            "environment": spec.environment,
            "app": spec.app,
            "revision": spec.git_revision,
            "healthy": result.healthy,
            "message": result.message,
            "rollouts": [{"name": r.name, "ready": r.ready, "failed": r.failed, "message": r.message}
                         for r in result.rollouts],
            "probe_status": result.probe_status,
            "tagged": result.tagged,
            **({"argocd_application": result.application.name, "argocd_sync": result.application.sync_status,
                "argocd_health": result.application.health_status} if result.application is not None else {}),
        },
        resource={"delivery.environment": spec.environment},
    )
    if not result.healthy:
        raise HealthCheckFailed(f"{spec.app} in {spec.environment} at {spec.git_revision[:12]}: {result.message}")
    return result
