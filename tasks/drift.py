"""The drift check of one environment, as a task: compare its live state with Git, reconcile, record.

It reads the desired objects of every app under ``environments/<env>/`` at the GitOps repo's head
(:func:`read_environment_objects`), lists the live managed objects with one label-selector LIST per
kind, and compares them on the fields Git sets (:mod:`delivery.drift_compare`), honouring the
environment's ``ignore`` rules. In ``reconcile`` mode it applies what is missing or changed, prunes
what is extra across the whole environment (:func:`reconcile_drift`; unlike a release's sync,
:func:`tasks.sync.reconcile`, which acts on one app) and checks again; in ``detect`` mode it only
reports. Each check moves the environment's sync state (Synced, OutOfSync, Degraded), stores it with
the report in the ledger database and emits ``DriftDetected`` / ``SyncDegraded`` / ``SyncRecovered``.
A reconcile is also a decision of the release the environment runs: the ledger keeps it as that
release's ``drift-reconciled`` (or ``drift-reconcile-failed``) action by ``system:drift-check``,
naming what drifted, what was re-applied and what was pruned.

Environments with a Pulumi stack also get an infrastructure drift preview, reported like runtime
drift (never reconciled here: that is the release's provisioning stage) and skipped with a reason
when the Pulumi CLI is absent. The ``drift-check`` flow (:mod:`flows.drift`) runs this task per
environment.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from delivery.config import EnvironmentConfig
from delivery.drift import DriftMode, DriftReport, InfrastructureDrift
from delivery.drift_compare import ObjectDrift, compare_objects
from delivery.errors import DeliveryError, PermanentError
from delivery.events import emit
from delivery.field_paths import IgnoreRules
from delivery.ids import new_trace_id
from delivery.labels import RELEASE_ID_ANNOTATION, TRACE_ID_ANNOTATION, managed_selector
from delivery.ledger import DRIFT_RECONCILE_FAILED, DRIFT_RECONCILED, Ledger
from delivery.manifest_files import parse_objects
from delivery.objects import object_key
from delivery.settings import block_ref, block_setting
from delivery.sync_state import next_status
from delivery.sync_state_store import SyncStateStore
from tasks.stage import retry_transient
from tasks.timeline import publish_timeline

ENVIRONMENTS_DIR = "environments"
# How long a check waits for an environment's lock before skipping it (a promotion holds it).
LOCK_WAIT_SECONDS = float(os.environ.get("DELIVERY_DRIFT_LOCK_WAIT_SECONDS", "10"))
# Who reconciles an environment's drift: the product's drift check, not the release.
DRIFT_ACTOR = "system:drift-check"

Emitter = Callable[..., Any]


# --------------------------------------------------------------------------- reading both sides


def read_environment_objects(gitops: Any, environment: str, *, ref: str) -> list[dict[str, Any]]:
    """Parse the manifests of every app under ``environments/<env>/`` at ``ref`` (one tree read).

    Args:
        gitops: the GitOpsRepo block.
        environment: the environment.
        ref: the revision to read.

    Returns:
        The desired objects of all the environment's apps.
    """
    from blocks import git_repository

    prefix = f"{ENVIRONMENTS_DIR}/{environment}/"
    # GitOpsRepo reads one app at a time; the drift check wants every app of the environment,
    # so it reads the environment's tree once from the block's local copy.
    tree = git_repository.read_tree(gitops.local_copy(), prefix, ref=ref)
    by_app: dict[str, dict[str, bytes]] = {}
    for path, data in tree.items():
        app, _, name = path[len(prefix):].partition("/")
        if name:
            by_app.setdefault(app, {})[f"{app}/{name}"] = data
    return [obj for app in sorted(by_app) for obj in parse_objects(by_app[app])]


def list_live_objects(runtime: Any, environment: str, namespace: str,
                      desired: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The live objects the product manages in an environment: one LIST per kind.

    The kinds are the runtime's managed kinds plus any other kind Git holds for the environment.
    """
    kinds = list(dict.fromkeys([*runtime.managed_kinds, *(f"{o['apiVersion']}/{o['kind']}" for o in desired)]))
    return runtime.list_managed(selector=managed_selector(environment=environment), namespace=namespace,
                                kinds=kinds)


def reconcile_drift(runtime: Any, desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]],
              drift: Sequence[ObjectDrift], *, environment: str, namespace: str) -> None:
    """Apply the missing and changed objects; prune the extra ones from what was just listed."""
    wanted = {d.object.identity for d in drift if d.change in ("missing", "changed")}
    to_apply = [dict(obj) for obj in desired if object_key(obj, namespace=namespace).identity in wanted]
    if to_apply:
        runtime.ensure_namespace(namespace)  # someone may have deleted it with everything in it
        runtime.apply(to_apply)
    if any(d.change == "extra" for d in drift):
        runtime.prune([dict(obj) for obj in desired], selector=managed_selector(environment=environment),
                      live=[dict(obj) for obj in live])


def check_infrastructure(stack_ref: str | None, *, load_stack: Callable[[str], Any] | None = None
                         ) -> InfrastructureDrift | None:
    """Preview the environment's Pulumi stack for drift (a refresh expecting no changes).

    Args:
        stack_ref: the environment's ``infrastructure`` block reference, or None.
        load_stack: loads the PulumiStack block (default: from the Prefect server).

    Returns:
        None without a stack; else what the preview found, or why it was skipped (no Pulumi CLI).
    """
    if not stack_ref:
        return None
    from infra.stack_values import NO_CHANGE_OPS, PulumiCliMissing

    try:
        result = (load_stack or load_any_block)(stack_ref).check_drift()
    except PulumiCliMissing as exc:
        return InfrastructureDrift(stack=stack_ref, checked=False, skipped_reason=str(exc))
    except DeliveryError as exc:  # reported, so the runtime's drift is still checked and recorded
        return InfrastructureDrift(stack=stack_ref, checked=False,
                                   skipped_reason=f"the drift preview failed ({type(exc).__name__}): {exc}")
    changes = tuple(f"{op}: {count}" for op, count in sorted(result.change_summary.items())
                    if op not in NO_CHANGE_OPS and count)
    if result.drifted and not changes:
        changes = (result.detail or "the refresh preview expected no changes and found some",)
    return InfrastructureDrift(stack=stack_ref, checked=True, changes=changes)


# --------------------------------------------------------------------------- one environment


def _release_ids(objects: Sequence[Mapping[str, Any]], environment: str) -> tuple[str, str]:
    """The release and trace that put the environment's current state in Git, for the events."""
    pairs = Counter(
        (annotations.get(RELEASE_ID_ANNOTATION), annotations.get(TRACE_ID_ANNOTATION))
        for annotations in ((obj.get("metadata") or {}).get("annotations") or {} for obj in objects)
        if annotations.get(RELEASE_ID_ANNOTATION) and annotations.get(TRACE_ID_ANNOTATION)
    )
    if pairs:
        return pairs.most_common(1)[0][0]
    return f"drift-{environment}", new_trace_id()


def record_reconcile(ledger: Ledger, release_id: str, report: DriftReport) -> None:
    """Keep a reconcile in the ledger as an action of the release the environment runs, with what it did."""
    applied = [str(d) for d in report.drift if d.change in ("missing", "changed")]
    pruned = [str(d) for d in report.drift if d.change == "extra"]
    if report.reconcile_error:
        outcome = f"reconcile failed: {report.reconcile_error}"
    elif report.remaining:
        outcome = f"{len(report.remaining)} drifted object(s) left: " + "; ".join(str(d) for d in report.remaining)
    else:
        outcome = "reconciled"
    reason = (f"{report.environment}: drift from GitOps revision {(report.revision or '?')[:12]} {outcome}; "
              f"re-applied {'; '.join(applied) or 'nothing'}; pruned {'; '.join(pruned) or 'nothing'}")
    ledger.record_action(
        release_id, action=DRIFT_RECONCILED if report.reconciled else DRIFT_RECONCILE_FAILED, actor=DRIFT_ACTOR,
        reason=reason[:4000],
        detail={"environment": report.environment, "revision": report.revision, "applied": applied,
                "pruned": pruned, "remaining": [str(d) for d in report.remaining], "error": report.reconcile_error,
                "state": report.status.state.value if report.status else None})


def check_environment(
    environment: str,
    config: EnvironmentConfig,
    *,
    gitops: Any,
    runtime: Any,
    revision: str,
    store: SyncStateStore,
    emitter: Emitter | None = emit,
    load_stack: Callable[[str], Any] | None = None,
    on_release: Callable[[str], None] | None = None,
    ledger: Ledger | None = None,
) -> DriftReport:
    """Compare one environment with Git, reconcile it when its mode says so, and record the outcome.

    Args:
        environment: the environment's name.
        config: its settings from delivery.yaml.
        gitops: the GitOpsRepo block.
        runtime: the environment's runtime block.
        revision: the GitOps commit to compare with.
        store: where sync states live.
        emitter: emits the drift events (None: emit nothing).
        load_stack: loads the environment's PulumiStack block (default: from the Prefect server).
        on_release: called with the release the environment runs after its drift events (the drift
            flow republishes that release's timeline).
        ledger: where a reconcile is kept as an action of that release (default: the configured ledger).

    Returns:
        The report, with the environment's new sync status.
    """
    settings = config.drift
    rules = IgnoreRules(settings.ignore)
    namespace = config.namespace
    desired = read_environment_objects(gitops, environment, ref=revision)
    live = list_live_objects(runtime, environment, namespace, desired)
    drift = compare_objects(desired, live, namespace=namespace, ignore=rules)
    remaining, reconciled, error = drift, False, None
    if drift and settings.mode is DriftMode.RECONCILE:
        try:
            reconcile_drift(runtime, desired, live, drift, environment=environment, namespace=namespace)
            remaining = compare_objects(desired, list_live_objects(runtime, environment, namespace, desired),
                                        namespace=namespace, ignore=rules)
            reconciled = not remaining
        except DeliveryError as exc:
            if not isinstance(exc, PermanentError):
                raise  # transient: the task retries the whole check
            error = str(exc)
    infrastructure = check_infrastructure(config.infrastructure, load_stack=load_stack)
    infra_found = 1 if infrastructure and infrastructure.drifted else 0
    report = DriftReport(
        environment=environment, revision=revision, mode=settings.mode, desired_objects=len(desired),
        live_objects=len(live), drift=tuple(drift), reconciled=reconciled, remaining=tuple(remaining),
        reconcile_error=error, infrastructure=infrastructure,
    )
    previous = store.get(environment)
    status, events = next_status(
        previous, environment=environment, revision=revision, found=len(drift) + infra_found,
        remaining=len(remaining) + infra_found, reconcile_error=error, degraded_after=settings.degraded_after,
        detail="; ".join(report.summary().splitlines()[:5]) if report.drifted else "",
    )
    report = report.model_copy(update={"status": status})
    store.record(report, status)
    release_id, trace_id = _release_ids(desired, environment)
    if drift and settings.mode is DriftMode.RECONCILE:
        record_reconcile(ledger or Ledger(), release_id, report)
    if emitter is not None and events:
        payload = {
            "environment": environment, "state": status.state.value, "reason": status.reason,
            "message": status.message, "revision": revision, "mode": settings.mode.value,
            "consecutive_drift": status.consecutive_drift, "degraded_after": settings.degraded_after,
            "drift": [str(d) for d in drift[:50]], "reconciled": reconciled,
        }
        for name in events:
            emitter(name, release_id=release_id, trace_id=trace_id, payload=payload,
                    resource={"delivery.environment": environment, "delivery.sync-state": status.state.value})
        if release_id and on_release is not None:
            on_release(release_id)
    return report


# --------------------------------------------------------------------------- Prefect


def load_any_block(ref: str, source: str | None = None) -> Any:
    """Load the saved block ``ref`` whatever its type (``source`` says where the reference is set)."""
    from prefect.blocks.core import Block

    from blocks.loading import load_block

    return load_block(ref, Block, source=source)


@task(name="check_environment_drift", retries=2, retry_delay_seconds=[1, 5], retry_jitter_factor=0.5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def check_environment_drift(environment: str, config: EnvironmentConfig, revision: str) -> dict[str, Any]:
    """One environment's drift check as a task (see :func:`check_environment`); returns the report as JSON.

    It holds the environment's lock (``delivery-env-<env>``, the one promotions hold) while it
    compares and reconciles, so a promotion half-way between its Git commit and its sync is not
    taken for drift. When a promotion holds the lock, the environment is skipped this round.
    """
    from prefect.concurrency.sync import concurrency

    from blocks.runtime import reconciled_by_argocd
    from tasks.locks import ensure_environment_lock

    logger = get_run_logger()
    lock = ensure_environment_lock(environment)
    acquired = False
    try:
        with concurrency(lock, occupy=1, timeout_seconds=LOCK_WAIT_SECONDS, strict=True):
            acquired = True
            gitops = load_any_block(block_ref("gitops_repo"), block_setting("gitops_repo"))
            # a promotion that held the lock while this check waited has committed since: compare with
            # what Git holds now, never with the revision seen before the wait (that would undo it)
            revision = gitops.head()
            runtime = load_any_block(config.runtime, f"delivery.yaml environments.{environment}.runtime")
            if reconciled_by_argocd(runtime):
                reason = (f"Argo CD reconciles this environment ({config.runtime}): its own comparison with Git "
                          "(OutOfSync) and self-heal apply, not the product's drift check")
                logger.info("%s: skipped: %s", environment, reason)
                return {"environment": environment, "revision": revision, "skipped_reason": reason}
            ledger = Ledger()
            report = check_environment(
                environment, config, gitops=gitops, runtime=runtime,
                revision=revision, store=SyncStateStore(ledger.engine), on_release=publish_timeline, ledger=ledger,
            )
    except TimeoutError:
        if acquired:
            raise
        reason = f"a promotion holds {lock}; the environment is checked next time"
        logger.info("%s: skipped: %s", environment, reason)
        return {"environment": environment, "revision": revision, "skipped_reason": reason}
    status = report.status
    logger.info("%s: %s (%s) %s", environment, status.state.value, status.reason, status.message)
    for line in report.summary().splitlines() if report.drifted else ():
        logger.warning("%s: %s", environment, line)
    return report.model_dump(mode="json")


__all__ = ["DRIFT_ACTOR", "check_environment", "check_environment_drift", "load_any_block", "read_environment_objects",
           "reconcile_drift", "record_reconcile"]
