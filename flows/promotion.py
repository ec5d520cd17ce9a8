"""The promotion loop: walk the environment path inside the release run.

For each environment up to the request's target: plan (stage 8) -> policy gate and approval
(stage 9, suspending the release run while it waits) -> under the environment's lock: a last
check that no newer build was deployed meanwhile -> infrastructure when configured (stage 11) and
the strategy (render, promote, sync, health; rollback on failure: :mod:`flows.deploy`) -> Deployed,
or Failed. A rejected or failed environment stops the path; later ones are not touched.

Each environment's verdict is a :class:`~delivery.plan.PromotionCause`, decided once where it
happens (a gate, an approver, the health stage, ...), recorded on the transition that settles the
plan and carried in the :class:`EnvironmentOutcome` to the error that stops the path
(:meth:`EnvironmentOutcome.stop_error`); a run that finds a plan already settled reads the cause
back from that transition.

These are plain functions, not subflows: only a top-level run created from a deployment can
suspend, and only it is resubmitted after a crash. Re-entering an environment after a crash, a
resume or a retry reads the plan from the ledger and continues from its state (a plan found
Promoting is deployed again, its stages idempotent), so no transition is written twice.

One promotion per environment at a time (:mod:`tasks.locks`); the lock is never held across an
approval wait, and a resumed run frees the lease its dead process left. A markdown artifact
``release-<id>`` (:mod:`tasks.summary`) summarises each environment's state, revision, approvers and
timings, refreshed as the path moves; the ``environments`` artifact (``tasks/overview.py``) is refreshed with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prefect import get_run_logger, tags
from pydantic import Field

from blocks.gitops_repo import GitOpsRepo
from blocks.loading import load_configured_block
from delivery.approvals import counted_approvers
from delivery.config import DeliveryConfig, EnvironmentConfig, load_config, runtime_refusal
from delivery.errors import (
    ApprovalRefused,
    DeliveryError,
    HealthCheckFailed,
    InvalidInput,
    PermanentError,
    PolicyViolation,
)
from delivery.ledger import Ledger
from delivery.models import BuildResult, Model, ReleaseRequest, utcnow
from delivery.plan import PlanState, PromotionCause, ReleasePlan
from flows.deploy import deploy_environment, finish_rollback, move_plan, rollback_finished, unfinished_rollback
from tasks.approval import POLICY_ACTOR, decide, request_approval, supersede_reason, superseded_by
from tasks.locks import environment_lock
from tasks.overview import refresh_overview
from tasks.plan import plan_release
from tasks.summary import publish_status


class EnvironmentOutcome(Model):
    """Where one environment of the path ended for this release."""

    environment: str
    state: PlanState | None = Field(default=None, description="None: not reached")
    revision: int
    plan_id: str | None = None
    approvers: list[str] = Field(default_factory=list)
    reason: str = ""
    cause: PromotionCause | None = Field(default=None, description="Why it ended so; None: not reached")
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def stop_error(self, remaining: Sequence[str] = ()) -> PermanentError | None:
        """The error that stops the path here (None when the environment was deployed).

        A rejection by a policy (a gate, or a newer build already deployed) raises
        :class:`PolicyViolation`, any other rejection :class:`ApprovalRefused`; a failed health gate
        :class:`HealthCheckFailed`, any other failure :class:`PermanentError`.

        Args:
            remaining: the environments after this one, named as not touched.
        """
        if self.state is PlanState.DEPLOYED:
            return None
        untouched = f"; not touched: {', '.join(remaining)}" if remaining else ""
        message = f"{self.environment}: {self.state.value if self.state else '?'}: {self.reason}{untouched}"
        reason = self.cause.value if self.cause else None
        if self.state is PlanState.REJECTED:
            by_policy = self.cause in (PromotionCause.POLICY, PromotionCause.SUPERSEDED)
            return (PolicyViolation if by_policy else ApprovalRefused)(message, reason=reason)
        if self.cause is PromotionCause.HEALTH_FAILED:
            return HealthCheckFailed(message, reason=reason)
        return PermanentError(message, reason=reason)


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
    path = config.path_to(request.target_environment or None)
    for name in path if request.strategy is not None else ():
        refusal = runtime_refusal(config.environment(name).runtime, request.strategy.name)
        if refusal:
            raise InvalidInput(f"strategy: environment {name!r}: {refusal}")
    return path


def validate_promotion(request: ReleaseRequest) -> DeliveryConfig:
    """Load the configuration and check the request against it; call first in the release flow.

    Raises:
        InvalidInput: bad configuration or request, naming the field.
    """
    config = load_delivery_config()
    check_request(request, config)
    return config


# --------------------------------------------------------------------------- one environment


def _outcome(plan: ReleasePlan, *, started_at: datetime, reason: str = "",
             cause: PromotionCause | None = None) -> EnvironmentOutcome:
    return EnvironmentOutcome(
        environment=plan.environment,
        state=plan.state,
        revision=plan.revision,
        plan_id=plan.plan_id,
        approvers=counted_approvers(plan.approvals),
        reason=reason,
        cause=cause,
        started_at=started_at,
        finished_at=utcnow(),
    )


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
                       trace_id=request.trace_id, artifacts=request.artifact_digests())
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
            plan = decide(plan, PlanState.REJECTED, actor=POLICY_ACTOR, reason=supersede_reason(newer),
                          cause=PromotionCause.SUPERSEDED)
        elif newer is not None:  # re-entered after a crash or a retry while a newer build was deployed
            plan = move_plan(ledger, plan, PlanState.FAILED, supersede_reason(newer), PromotionCause.SUPERSEDED)
        if plan.state is not PlanState.APPROVED and plan.state is not PlanState.PROMOTING:
            return _settled(ledger, plan, started_at)
        if plan.state is PlanState.APPROVED:
            plan = move_plan(ledger, plan, PlanState.PROMOTING, "begin promotion")
        else:
            logger.info("%s: plan %s is Promoting (attempt %s): deploying again", environment, plan.plan_id,
                        plan.attempt)
        try:
            outcome = deploy_environment(
                plan, settings, artifact_ids=[artifact.artifact_id for artifact in request.artifacts], ledger=ledger)
        except DeliveryError as exc:  # before the first commit, or in the rollback itself
            cause = PromotionCause.of_failure(exc)
            failed = _fail(ledger, plan, f"{type(exc).__name__}: {exc}", cause)
            logger.error("%s: promotion failed: %s", environment, exc)
            return _outcome(failed, started_at=started_at, reason=str(exc), cause=cause)
        except Exception as exc:  # an unexpected bug still leaves the plan in a true state
            _fail(ledger, plan, f"unexpected {type(exc).__name__}: {exc}", PromotionCause.DEPLOY_FAILED)
            raise
        if outcome.rolled_back:
            rollback_finished(ledger, plan, revision=outcome.git_revision, message=outcome.message)
            failed = ledger.get_plan(plan.plan_id)
            logger.error("%s: promotion failed and was rolled back: %s", environment, outcome.message)
            return _outcome(failed, started_at=started_at, reason=outcome.message, cause=outcome.cause)
        deployed = move_plan(ledger, ledger.get_plan(plan.plan_id), PlanState.DEPLOYED, "health gates passed",
                             PromotionCause.DEPLOYED)
    logger.info("%s: deployed revision %s of %s", environment, plan.revision, plan.release_id)
    return _outcome(deployed, started_at=started_at, reason="health gates passed", cause=PromotionCause.DEPLOYED)


def _fail(ledger: Ledger, plan: ReleasePlan, reason: str, cause: PromotionCause) -> ReleasePlan:
    """Fail the plan unless a rollback already did."""
    current = ledger.get_plan(plan.plan_id)
    if current.state is not PlanState.PROMOTING:
        return current
    return move_plan(ledger, current, PlanState.FAILED, reason, cause)


def _settled(ledger: Ledger, plan: ReleasePlan, started_at: datetime) -> EnvironmentOutcome:
    """The outcome of a plan that an earlier run, a person or a policy already settled, as its last move says."""
    if plan.state is PlanState.DEPLOYED:
        return _outcome(plan, started_at=started_at, reason="deployed", cause=PromotionCause.DEPLOYED)
    last = ledger.last_transition(plan.plan_id)
    reason, cause = (last.reason, last.cause) if last else ("", None)
    get_run_logger().warning("%s: plan %s %s: %s", plan.environment, plan.plan_id, plan.state.value, reason)
    return _outcome(plan, started_at=started_at, reason=reason, cause=cause)


# --------------------------------------------------------------------------- the path


def deployed_environments(request: ReleaseRequest) -> set[str]:
    """The environments this revision of the release was already deployed to (by an earlier run of its flow run)."""
    return {plan.environment for plan in Ledger().plans(release_id=request.release_id)
            if plan.revision == request.revision and plan.state is PlanState.DEPLOYED}


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
        stop = outcome.stop_error(environments[index + 1:])
        following = environments[index + 1] if index + 1 < len(environments) else None
        progress = (f"Stopped: {stop}" if stop is not None else
                    f"{environment} deployed; promoting {following}" if following else
                    f"Deployed to {', '.join(environments)}")
        publish_status(request.release_id, progress=progress, build=build, trace_id=request.trace_id,
                       artifacts=request.artifact_digests())
        refresh_overview(path=config.path)
        if stop is not None:
            raise stop
    return summary


__all__ = [
    "EnvironmentOutcome",
    "PromotionSummary",
    "check_request",
    "load_delivery_config",
    "promote_environment",
    "promote_path",
    "validate_promotion",
]
