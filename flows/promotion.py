"""The promotion loop: walk the environment path inside the release run.

For each environment up to the request's target: plan (stage 8) -> policy gate and approval
(stage 9, suspending the release run while it waits) -> under the environment's lock: a last
check that no newer build was deployed meanwhile -> infrastructure when configured (stage 11) ->
deploy with the strategy (render, promote, sync, health; rollback on failure) -> Deployed, or
Failed. A rejected or failed environment stops the path; later ones are not touched.

These are plain functions, not subflows: only a top-level run created from a deployment can
suspend, and only it is resubmitted after a crash. Re-entering an environment after a crash, a
resume or a retry reads the plan from the ledger and continues from its state (a plan found
Promoting is deployed again, its stages idempotent), so no transition is written twice.

One promotion per environment at a time (:mod:`flows.locks`); the lock is never held across an
approval wait, and a resumed run frees the lease its dead process left. A markdown artifact
``release-<id>`` summarises each environment's state, revision, approvers and timings, refreshed as
the path moves; the ``environments`` artifact (``tasks/overview.py``) is refreshed with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import get_run_logger, tags
from pydantic import Field

from blocks.git_host import GitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from blocks.loading import load_block, load_configured_block
from delivery.approvals import counted_approvers
from delivery.config import DeliveryConfig, EnvironmentConfig, load_config
from delivery.errors import (
    ApprovalRefused,
    DeliveryError,
    HealthCheckFailed,
    InvalidInput,
    PermanentError,
    PolicyViolation,
)
from delivery.ledger import ROLLBACK_FINISHED, ROLLBACK_STARTED, Ledger
from delivery.models import BuildResult, Model, ReleaseRequest, utcnow
from delivery.overview import format_time as _when
from delivery.overview import markdown_cell as _cell
from delivery.plan import PlanState, ReleasePlan
from flows.locks import environment_lock
from tasks.approval import POLICY_ACTOR, decide, request_approval, supersede_reason, superseded_by
from tasks.overview import refresh_overview
from tasks.plan import plan_release

if TYPE_CHECKING:  # imported where used: the stage modules are heavy
    from tasks.manifest import ManifestSpec
    from tasks.strategies import DeploymentOutcome, HealthSettings

PROMOTION_ACTOR = "system:promotion"
RELEASE_FLOW = "release"


class EnvironmentOutcome(Model):
    """Where one environment of the path ended for this release."""

    environment: str
    state: PlanState | None = Field(default=None, description="None: not reached")
    revision: int
    plan_id: str | None = None
    approvers: list[str] = Field(default_factory=list)
    reason: str = ""
    error_type: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PromotionSummary(Model):
    """The outcome of the whole path."""

    release_id: str
    trace_id: str
    revision: int
    environments: list[EnvironmentOutcome]

    @property
    def deployed(self) -> bool:
        return all(env.state is PlanState.DEPLOYED for env in self.environments)


# --------------------------------------------------------------------------- configuration


def load_delivery_config() -> DeliveryConfig:
    """Read and validate ``delivery.yaml`` from the GitOps repository (the ``gitops_repo`` block).

    Raises:
        InvalidInput: missing or invalid configuration, naming the field.
    """
    return load_config(load_configured_block("gitops_repo", GitOpsRepo).read_config())


def check_request(request: ReleaseRequest, config: DeliveryConfig) -> list[str]:
    """Check a release request against the delivery configuration, before anything is written.

    Args:
        request: the release.
        config: the delivery configuration.

    Returns:
        The environments to walk, in order.

    Raises:
        InvalidInput: unknown target environment (or a strategy the configuration cannot take).
    """
    if request.target_environment and request.target_environment not in config.environments:
        raise InvalidInput(
            f"target_environment: unknown environment {request.target_environment!r}; "
            f"the promotion path is {' -> '.join(config.path)}"
        )
    return config.path_to(request.target_environment or None)


def validate_promotion(request: ReleaseRequest) -> DeliveryConfig:
    """Load the configuration and check the request against it; call first in the release flow.

    Raises:
        InvalidInput: bad configuration or request, naming the field.
    """
    config = load_delivery_config()
    check_request(request, config)
    return config


# --------------------------------------------------------------------------- the deploy steps


def provision_infrastructure(plan: ReleasePlan, settings: EnvironmentConfig) -> None:
    """Stage 11, when the environment names an infrastructure stack."""
    if settings.infrastructure is None:
        return
    from tasks.infrastructure import provision_if_configured

    provision_if_configured(plan, settings)


def _image_of(plan: ReleasePlan) -> str:
    images = plan.build.images
    named = [image for image in images if image.repository.rsplit("/", 1)[-1] == plan.app]
    return (named or images)[0].reference


def load_templates(plan: ReleasePlan) -> dict[str, str]:
    """The application's ``deploy/`` templates and values at the built commit, from the git host.

    Raises:
        InvalidInput: the application has no ``deploy/`` templates at that commit, or one is not UTF-8.
    """
    from tasks.manifest import DEPLOY_FOLDER, templates_from_files

    host = load_configured_block("git_host", GitHost)
    templates = templates_from_files(host.read_tree(plan.app, DEPLOY_FOLDER, ref=plan.build.commit))
    if not templates:
        raise InvalidInput(f"app {plan.app!r}: no deploy/ templates at commit {plan.build.commit[:12]}")
    return templates


def _deploy_inputs(
    plan: ReleasePlan, settings: EnvironmentConfig
) -> tuple[KubernetesRuntime, GitOpsRepo, ManifestSpec, HealthSettings]:
    """The runtime, GitOps repository, manifest spec and health settings of a plan's deployment."""
    from tasks.manifest import ManifestSpec
    from tasks.strategies import HealthSettings

    runtime = load_block(settings.runtime, KubernetesRuntime,
                         source=f"delivery.yaml environments.{plan.environment}.runtime")
    repo = load_configured_block("gitops_repo", GitOpsRepo)
    spec = ManifestSpec(
        release_id=plan.release_id, trace_id=plan.trace_id, revision=plan.revision, app=plan.app,
        environment=plan.environment, namespace=settings.namespace, image=_image_of(plan),
        templates=load_templates(plan), values=settings.values,
    )
    probe = settings.health.http_probe
    health = HealthSettings(
        timeout_seconds=settings.health.timeout_seconds,
        http_probe=probe.model_dump() if probe else None,
    )
    return runtime, repo, spec, health


def deploy_environment(plan: ReleasePlan, settings: EnvironmentConfig, *, artifact_ids: list[str],
                       before_rollback: Callable[[str, DeliveryError], None]) -> DeploymentOutcome:
    """Stages 10, 12-14: render, promote, sync, health, with the strategy's rollback on failure.

    Returns:
        The strategy's outcome (``rolled_back`` when a phase failed after the first commit).

    Raises:
        DeliveryError: a failure before anything was committed.
    """
    from tasks.strategies import deploy_with_strategy

    runtime, repo, spec, health = _deploy_inputs(plan, settings)
    return deploy_with_strategy(
        runtime, repo, spec, strategy=plan.strategy, health=health, artifact_ids=artifact_ids,
        planned_by=plan.planned_by, approved_by=counted_approvers(plan.approvals), attempt=plan.attempt,
        before_rollback=before_rollback,
    )


# --------------------------------------------------------------------------- rollbacks that must finish

# ROLLBACK_STARTED is written before a rollback's first outside write, ROLLBACK_FINISHED after its
# last (delivery/ledger.py): a run resumed in between finishes the rollback instead of judging the
# half-restored environment anew.


def _rollback_actions(ledger: Ledger, plan: ReleasePlan, action: str) -> list[dict[str, Any]]:
    return [a for a in ledger.actions(release_id=plan.release_id, action=action)
            if a["detail"].get("plan_id") == plan.plan_id and a["detail"].get("attempt") == plan.attempt]


def unfinished_rollback(ledger: Ledger, plan: ReleasePlan) -> dict[str, Any] | None:
    """The started, never finished rollback of the plan's current attempt (its ledger detail), if any."""
    started = _rollback_actions(ledger, plan, ROLLBACK_STARTED)
    if not started or _rollback_actions(ledger, plan, ROLLBACK_FINISHED):
        return None
    return started[-1]["detail"]


def _fail_for_rollback(ledger: Ledger, plan: ReleasePlan, revision: str, exc: DeliveryError) -> None:
    """The verdict, kept before the rollback starts: the plan Failed, the rollback started."""
    _move(ledger, ledger.get_plan(plan.plan_id), PlanState.FAILED,
          f"{type(exc).__name__}: {exc}; rolling back to the last healthy revision")
    ledger.record_action(plan.release_id, action=ROLLBACK_STARTED, actor=PROMOTION_ACTOR,
                         reason=f"{plan.environment}: rolling back from {revision[:12]}: {exc}",
                         detail={"plan_id": plan.plan_id, "environment": plan.environment, "attempt": plan.attempt,
                                 "failed_revision": revision, "error": str(exc)})


def _rollback_finished(ledger: Ledger, plan: ReleasePlan, *, revision: str, message: str) -> None:
    ledger.record_action(plan.release_id, action=ROLLBACK_FINISHED, actor=PROMOTION_ACTOR,
                         reason=f"{plan.environment}: {message}",
                         detail={"plan_id": plan.plan_id, "environment": plan.environment, "attempt": plan.attempt,
                                 "git_revision": revision})


def finish_rollback(ledger: Ledger, plan: ReleasePlan, settings: EnvironmentConfig, started: dict[str, Any]) -> None:
    """Run a rollback a crash cut short to its end (its completed stage comes back from its stored result)."""
    from tasks.strategies import roll_back_attempt

    runtime, repo, spec, health = _deploy_inputs(plan, settings)
    result = roll_back_attempt(runtime, repo, spec, strategy=plan.strategy.name, health=health,
                               attempt=plan.attempt, failed_revision=started["failed_revision"],
                               reason=started["error"], requested_by=plan.planned_by)
    _rollback_finished(ledger, plan, revision=result.git_revision, message=f"rolled back: {result.message}")
    get_run_logger().warning("%s: finished the rollback a crash interrupted: %s", plan.environment, result.message)


def _move(ledger: Ledger, plan: ReleasePlan, to: PlanState, reason: str) -> ReleasePlan:
    moved, record = plan.transition(to, actor=PROMOTION_ACTOR, reason=reason)
    return ledger.save_plan(moved, record)


def _outcome(plan: ReleasePlan, *, started_at: datetime, reason: str = "", error_type: str | None = None):
    return EnvironmentOutcome(
        environment=plan.environment,
        state=plan.state,
        revision=plan.revision,
        plan_id=plan.plan_id,
        approvers=counted_approvers(plan.approvals),
        reason=reason,
        error_type=error_type,
        started_at=started_at,
        finished_at=utcnow(),
    )


def _last_reason(ledger: Ledger, plan: ReleasePlan) -> tuple[str, str | None]:
    last = ledger.last_transition(plan.plan_id)
    if last is None:
        return "", None
    if last.to_state is PlanState.REJECTED:
        return last.reason, PolicyViolation.__name__ if last.actor == POLICY_ACTOR else ApprovalRefused.__name__
    if last.to_state is PlanState.FAILED:
        return last.reason, last.reason.split(":", 1)[0] if ":" in last.reason else None
    return last.reason, None


def promote_environment(
    request: ReleaseRequest, build: BuildResult, environment: str, settings: EnvironmentConfig
) -> EnvironmentOutcome:
    """Plan, approve and deploy one environment, inside the release run.

    Args:
        request: the release.
        build: the succeeded build to deploy.
        environment: the environment's name.
        settings: the environment's configuration.

    Returns:
        The environment's outcome: Deployed, Failed, or Rejected.
    """
    logger = get_run_logger()
    started_at = utcnow()
    ledger = Ledger()
    plan = plan_release(request, build, environment, request.strategy or settings.strategy)
    if (ledger.find_plan(plan.plan_id) or plan).state is PlanState.PENDING_APPROVAL:  # not yet decided
        waits = "waiting for approval" if settings.approval.required else "policy gates next"
        publish_status(request.release_id, ledger, progress=f"{environment}: planned, {waits}", build=build,
                       trace_id=request.trace_id)
    plan = request_approval(plan, settings)
    if plan.state is PlanState.FAILED and (started := unfinished_rollback(ledger, plan)) is not None:
        with environment_lock(environment, release_id=plan.release_id, ledger=ledger):
            finish_rollback(ledger, plan, settings, started)
    if plan.state in (PlanState.REJECTED, PlanState.FAILED, PlanState.DEPLOYED):
        return _settled(ledger, plan, started_at)

    with environment_lock(environment, release_id=plan.release_id, ledger=ledger):
        plan = ledger.get_plan(plan.plan_id)  # a cancel or a newer release may have moved on meanwhile
        newer = superseded_by(plan, ledger) if plan.state in (PlanState.APPROVED, PlanState.PROMOTING) else None
        if newer is not None and plan.state is PlanState.APPROVED:
            plan = decide(plan, PlanState.REJECTED, actor=POLICY_ACTOR, reason=supersede_reason(newer))
        elif newer is not None:  # re-entered after a crash or a retry while a newer build was deployed
            plan = _move(ledger, plan, PlanState.FAILED, supersede_reason(newer))
        if plan.state is not PlanState.APPROVED and plan.state is not PlanState.PROMOTING:
            return _settled(ledger, plan, started_at)
        if plan.state is PlanState.APPROVED:
            plan = _move(ledger, plan, PlanState.PROMOTING, "begin promotion")
        else:
            logger.info("%s: plan %s is Promoting (attempt %s): deploying again", environment, plan.plan_id,
                        plan.attempt)
        try:
            provision_infrastructure(plan, settings)
            outcome = deploy_environment(
                plan, settings, artifact_ids=[artifact.artifact_id for artifact in request.artifacts],
                before_rollback=lambda revision, exc: _fail_for_rollback(ledger, plan, revision, exc))
        except DeliveryError as exc:  # before the first commit, or in the rollback itself
            failed = _fail(ledger, plan, f"{type(exc).__name__}: {exc}")
            logger.error("%s: promotion failed: %s", environment, exc)
            return _outcome(failed, started_at=started_at, reason=str(exc), error_type=type(exc).__name__)
        except Exception as exc:  # an unexpected bug still leaves the plan in a true state
            _fail(ledger, plan, f"unexpected {type(exc).__name__}: {exc}")
            raise
        if outcome.rolled_back:
            _rollback_finished(ledger, plan, revision=outcome.git_revision, message=outcome.message)
            failed = ledger.get_plan(plan.plan_id)
            logger.error("%s: promotion failed and was rolled back: %s", environment, outcome.message)
            _, error_type = _last_reason(ledger, failed)
            return _outcome(failed, started_at=started_at, reason=outcome.message, error_type=error_type)
        deployed = _move(ledger, ledger.get_plan(plan.plan_id), PlanState.DEPLOYED, "health gates passed")
    logger.info("%s: deployed revision %s of %s", environment, plan.revision, plan.release_id)
    return _outcome(deployed, started_at=started_at, reason="health gates passed")


def _fail(ledger: Ledger, plan: ReleasePlan, reason: str) -> ReleasePlan:
    """Fail the plan unless a rollback already did."""
    current = ledger.get_plan(plan.plan_id)
    return _move(ledger, current, PlanState.FAILED, reason) if current.state is PlanState.PROMOTING else current


def _settled(ledger: Ledger, plan: ReleasePlan, started_at: datetime) -> EnvironmentOutcome:
    """The outcome of a plan that an earlier run, a person or a policy already settled."""
    if plan.state is PlanState.DEPLOYED:
        return _outcome(plan, started_at=started_at, reason="deployed")
    reason, error_type = _last_reason(ledger, plan)
    get_run_logger().warning("%s: plan %s %s: %s", plan.environment, plan.plan_id, plan.state.value, reason)
    return _outcome(plan, started_at=started_at, reason=reason, error_type=error_type)


# --------------------------------------------------------------------------- the path


def artifact_key(release_id: str) -> str:
    """The markdown artifact's key for a release (lowercase letters, digits and dashes)."""
    return "release-" + re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")


def _ui_links(release_id: str, trace_id: str | None, flow_run_id: UUID | None) -> list[str]:
    from delivery.events import release_events_link, trace_events_link, ui_base_url

    ui = ui_base_url()
    links = []
    if ui and flow_run_id:
        links.append(f"[release run]({ui}/runs/flow-run/{flow_run_id})")
    if events := release_events_link(release_id, ui):
        links.append(f"[release events]({events})")
    if trace_id and (traced := trace_events_link(trace_id, ui)):
        links.append(f"[trace events]({traced})")
    return links


def render_status(release_id: str, ledger: Ledger, *, progress: str = "", build: BuildResult | None = None,
                  trace_id: str | None = None, flow_run_id: UUID | None = None) -> str:
    """The markdown of a release's summary artifact, from the ledger and what the run knows.

    Where the release is (``progress``), its trace id and links (the release run, the Event feed
    filtered to the release and to its trace), the images by digest; then per environment the
    latest revision's plan: state, attempt, approvers, when it started and last moved, the last
    reason; then the operations done to the release from outside its run.
    """
    plans = ledger.latest_plans(release_id)
    trace = trace_id or (plans[0].trace_id if plans else None)
    build = build or (plans[0].build if plans else None)
    lines = [f"# Release `{release_id}`", ""]
    if progress:
        lines += [f"**{_cell(progress)}**", ""]
    lines += [f"Trace: `{trace or '-'}`", ""]
    links = _ui_links(release_id, trace, flow_run_id)
    if links:
        lines += [" · ".join(links), ""]
    if build is not None and build.images:
        lines += ["Images: " + ", ".join(f"`{image.reference}`" for image in build.images), ""]
    lines += ["| environment | state | revision | attempt | approvers | started | last change | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for plan in plans:
        last = ledger.last_transition(plan.plan_id)
        lines.append(f"| {plan.environment} | {plan.state.value} | {plan.revision} | {plan.attempt} | "
                     f"{', '.join(counted_approvers(plan.approvals)) or '-'} | {_when(plan.created_at)} | "
                     f"{_when(last.at if last else plan.updated_at)} | {_cell(last.reason if last else '')} |")
    if not plans:
        lines.append("| - | not planned yet | | | | | | |")
    actions = ledger.actions(release_id=release_id)
    if actions:
        lines += ["", "| when | operation | by | reason |", "|---|---|---|---|"]
        lines += [f"| {_when(a['at'])} | {a['action']} | {a['actor']} | {_cell(a['reason'])} |" for a in actions]
    return "\n".join(lines) + "\n"


def release_run_id(release_id: str) -> UUID | None:
    """The release's run: the current flow run when it is the release run, else its newest release run.

    Without any release run (a flow that calls :func:`promote_path` itself), the current flow run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context and context.flow_run and context.flow.name == RELEASE_FLOW and not context.flow_run.parent_task_run_id:
        return context.flow_run.id
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RELEASE_FLOW])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"release:{release_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    if runs:
        return runs[0].id
    return context.flow_run.id if context and context.flow_run else None  # a flow that promotes by itself


def deployed_environments(request: ReleaseRequest) -> set[str]:
    """The environments this revision of the release was already deployed to (by an earlier run of its flow run)."""
    return {plan.environment for plan in Ledger().plans(release_id=request.release_id)
            if plan.revision == request.revision and plan.state is PlanState.DEPLOYED}


def publish_status(release_id: str, ledger: Ledger | None = None, *, progress: str = "",
                   build: BuildResult | None = None, trace_id: str | None = None) -> None:
    """Refresh the release's summary artifact (``release-<id>``, one key per release) on the release run,
    and its timeline (``timeline-<id>``, :mod:`flows.timeline`).

    The artifact is attached to the release's run even when another flow (recovery, retry, cancel)
    refreshes it, so the release run's Artifacts tab holds the release's summary.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    run_id = release_run_id(release_id)
    markdown = render_status(release_id, ledger or Ledger(), progress=progress, build=build, trace_id=trace_id,
                             flow_run_id=run_id)
    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(key=artifact_key(release_id), type="markdown", data=markdown,
                                              description=f"Summary of release {release_id}", flow_run_id=run_id))
    from flows.timeline import publish_timeline

    publish_timeline(release_id, ledger)


def _stop_error(outcome: EnvironmentOutcome, remaining: list[str]) -> PermanentError:
    untouched = f"; not touched: {', '.join(remaining)}" if remaining else ""
    message = f"{outcome.environment}: {outcome.state.value if outcome.state else '?'}: {outcome.reason}{untouched}"
    if outcome.state is PlanState.REJECTED:
        return PolicyViolation(message) if outcome.error_type == "PolicyViolation" else ApprovalRefused(message)
    if outcome.error_type == HealthCheckFailed.__name__:
        return HealthCheckFailed(message)
    return PermanentError(message, reason=outcome.error_type)


def promote_path(
    request: ReleaseRequest, build: BuildResult, config: DeliveryConfig | None = None, *,
    deployed_before: set[str] | None = None,
) -> PromotionSummary:
    """Promote a built release along the path up to its target environment (inside the release run).

    Args:
        request: the release.
        build: the build result (must have succeeded).
        config: the delivery configuration; default: read from the GitOps repository.
        deployed_before: the environments an earlier run of this flow run deployed (their status is not
            published again); default: :func:`deployed_environments`.

    Returns:
        The summary, every environment Deployed.

    Raises:
        InvalidInput: bad configuration or request (nothing planned).
        PolicyViolation, ApprovalRefused: an environment was rejected; the path stopped there.
        HealthCheckFailed, PermanentError: an environment failed (after rollback); the path stopped.
    """
    config = config or load_delivery_config()
    environments = check_request(request, config)
    outcomes = [EnvironmentOutcome(environment=env, revision=request.revision) for env in environments]
    summary = PromotionSummary(
        release_id=request.release_id, trace_id=request.trace_id, revision=request.revision, environments=outcomes
    )
    if deployed_before is None:
        deployed_before = deployed_environments(request)
    for index, environment in enumerate(environments):
        with tags(f"environment:{environment}"):
            outcome = promote_environment(request, build, environment, config.environment(environment))
        outcomes[index] = outcome
        summary = summary.model_copy(update={"environments": list(outcomes)})
        if environment in deployed_before and outcome.state is PlanState.DEPLOYED:
            continue  # deployed by an earlier run of this flow run (before an approval wait): published then
        stop = _stop_error(outcome, environments[index + 1:]) if outcome.state is not PlanState.DEPLOYED else None
        following = environments[index + 1] if index + 1 < len(environments) else None
        progress = (f"Stopped: {stop}" if stop is not None else
                    f"{environment} deployed; promoting {following}" if following else
                    f"Deployed to {', '.join(environments)}")
        publish_status(request.release_id, progress=progress, build=build, trace_id=request.trace_id)
        refresh_overview(path=config.path)
        if stop is not None:
            raise stop
    return summary


__all__ = [
    "EnvironmentOutcome",
    "PromotionSummary",
    "artifact_key",
    "check_request",
    "load_delivery_config",
    "promote_environment",
    "promote_path",
    "publish_status",
    "render_status",
    "validate_promotion",
]
