"""Stage 13a: reconcile an environment's Git revision onto the runtime (compare, apply, prune).

The live objects are listed once per kind and compared with Git; every object Git holds that is
missing or differs is server-side applied, the others are not even re-written (a sync that
changes nothing costs one LIST per kind whatever the object count); every managed object of the
application and environment that Git no longer holds is deleted; nothing without the managed
labels is ever touched. Emits ``GitOpsSynced`` with the revision.

With an :class:`~blocks.argocd_runtime.ArgoCDRuntime`, Argo CD applies and prunes: the stage asks it
to sync the environment's Application at the revision and waits until it is Synced there (an
Application already Synced and Healthy at the revision is not synced again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field

from blocks.argocd_runtime import ArgoAppStatus, ArgoCDRuntime
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import ObjectRef
from blocks.runtime import Runtime, reconciled_by_argocd
from delivery.drift_compare import compare_objects, is_managed
from delivery.errors import DeliveryError, InvalidInput
from delivery.events import EventName, emit
from delivery.field_ownership import dropped_fields
from delivery.labels import APP_LABEL, ENVIRONMENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, managed_selector
from delivery.manifest_files import parse_objects
from delivery.manifests import DeployTarget
from delivery.objects import object_key
from tasks.stage import coerce, stage


class SyncSpec(DeployTarget):
    """Which environment to reconcile, at which GitOps revision."""

    git_revision: str | None = Field(default=None, description="GitOps commit; default: the branch head")
    dry_run: bool = False


class SyncResult(DeployTarget):
    """What a reconciliation did."""

    git_revision: str
    changed: list[ObjectRef] = Field(default_factory=list, description="Created or updated objects")
    unchanged: list[ObjectRef] = Field(default_factory=list)
    pruned: list[ObjectRef] = Field(default_factory=list)
    application: ArgoAppStatus | None = Field(default=None, description="Argo CD: the Application after the sync")
    sync_requested: bool = Field(default=False, description="Argo CD: a sync operation was asked for")

    @property
    def no_op(self) -> bool:
        """True when the runtime already matched Git."""
        return not self.changed and not self.pruned and not self.sync_requested


def desired_objects(repo: GitOpsRepo, target: DeployTarget, git_revision: str) -> list[dict[str, Any]]:
    """The objects Git holds for an environment at a revision, checked to be ours to manage.

    Raises:
        InvalidInput: an object lacks the managed labels or lives outside the environment's namespace.
    """
    files = repo.read_environment(target.environment, target.app, ref=git_revision)
    objects = parse_objects(files)
    wanted = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, APP_LABEL: target.app, ENVIRONMENT_LABEL: target.environment}
    for obj in objects:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        missing = [f"{k}={v}" for k, v in wanted.items() if labels.get(k) != v]
        if missing:
            raise InvalidInput(f"{ObjectRef.of(obj)} in Git at {git_revision[:12]}: metadata.labels lacks "
                               f"{', '.join(missing)}: it could never be pruned")
        if meta.get("namespace") not in (None, target.namespace):
            raise InvalidInput(f"{ObjectRef.of(obj)} in Git: metadata.namespace is not {target.namespace!r}")
    return objects


def reconcile(runtime: Runtime, repo: GitOpsRepo, spec: SyncSpec) -> SyncResult:
    """Compare, apply what differs, and prune (the stage's body, also used by rollbacks).

    Live objects are listed once per kind and compared with Git first, so only objects that are
    missing, differ on a field Git sets, or still hold a field Git dropped are server-side
    applied: a sync that changes nothing costs one LIST per kind whatever the object count.
    With Argo CD, the Application is synced at the revision instead (:func:`sync_application`).

    Returns:
        What changed, what did not, and what was pruned.
    """
    git_revision = spec.git_revision or repo.head()
    if reconciled_by_argocd(runtime):
        return sync_application(runtime, repo, spec, git_revision)
    objects = desired_objects(repo, spec, git_revision)
    selector = managed_selector(app=spec.app, environment=spec.environment)
    kinds = list(dict.fromkeys([*runtime.managed_kinds, *(f"{o['apiVersion']}/{o['kind']}" for o in objects)]))
    live = runtime.list_managed(selector=selector, kinds=kinds)
    stale = objects_to_apply(objects, live, namespace=spec.namespace, manager=runtime.field_manager)
    applied: list[ObjectRef] = []
    if stale:
        # A live object in the namespace proves it exists; with none, it may have been deleted with
        # everything in it, and is made again before the apply.
        if not spec.dry_run and not any(ObjectRef.of(obj).namespace == spec.namespace for obj in live):
            runtime.ensure_namespace(spec.namespace)
        applied = runtime.apply(stale, dry_run=spec.dry_run)
    pruned = runtime.prune(objects, selector=selector, dry_run=spec.dry_run, live=live)
    before = {ObjectRef.of(obj).identity: ObjectRef.of(obj).resource_version for obj in live}
    changed = [ref for ref in applied if before.get(ref.identity) != ref.resource_version]
    unchanged = [ref for ref in applied if before.get(ref.identity) == ref.resource_version]
    untouched = {ObjectRef.of(obj).identity for obj in objects} - {ref.identity for ref in applied}
    unchanged += [ObjectRef.of(obj) for obj in live if ObjectRef.of(obj).identity in untouched]
    return SyncResult(**spec.target().model_dump(), git_revision=git_revision, changed=changed,
                      unchanged=unchanged, pruned=pruned)


def sync_application(runtime: ArgoCDRuntime, repo: GitOpsRepo, spec: SyncSpec, git_revision: str) -> SyncResult:
    """Sync the environment's Argo CD Application at ``git_revision`` and wait until it is Synced there.

    The objects in Git are checked as for a reconcile (managed labels, namespace) before Argo CD is
    asked: what the product could never prune itself is refused the same way.
    """
    desired_objects(repo, spec, git_revision)
    application = runtime.application_for(spec.app, spec.environment)
    requested, status = runtime.sync(application, git_revision, dry_run=spec.dry_run,
                                     equivalent=same_manifests(repo, spec, git_revision))
    return SyncResult(**spec.target().model_dump(), git_revision=git_revision, application=status,
                      sync_requested=requested)


def same_manifests(repo: GitOpsRepo, target: DeployTarget, git_revision: str) -> Callable[[str], bool]:
    """Whether another GitOps revision holds the same files for the app and environment as ``git_revision``.

    Argo CD reports the head of the branch its Application tracks: a promotion of another app or
    environment after the sync moves it without changing this Application's manifests. A revision the
    local copy does not know counts as different.
    """
    wanted = repo.read_environment(target.environment, target.app, ref=git_revision)
    seen: dict[str, bool] = {}

    def equivalent(revision: str) -> bool:
        if revision not in seen:
            try:
                seen[revision] = repo.read_environment(target.environment, target.app, ref=revision) == wanted
            except DeliveryError:
                seen[revision] = False
        return seen[revision]

    return equivalent


def objects_to_apply(desired: list[dict[str, Any]], live: list[dict[str, Any]], *, namespace: str,
                     manager: str) -> list[dict[str, Any]]:
    """The desired objects a server-side apply would change; the others are left alone.

    An object is applied when it is missing or differs on a field Git sets (the drift check's
    comparison, without ignore rules: a sync makes every field Git sets true), when the field
    manager never applied it (the apply takes ownership, so a field Git drops later is removed),
    or when it still holds a field the manager applied and Git no longer sets.

    Args:
        desired: the objects in Git.
        live: the managed objects just listed.
        namespace: the environment's namespace, for manifests that leave it out.
        manager: the runtime's field manager.

    Returns:
        The desired objects to apply, in Git's order.
    """
    differ = {d.object.identity for d in compare_objects(desired, live, namespace=namespace)
              if d.change in ("missing", "changed")}
    live_by_id = {object_key(obj, namespace=namespace).identity: obj for obj in live if is_managed(obj)}
    stale = []
    for obj in desired:
        identity = object_key(obj, namespace=namespace).identity
        current = live_by_id.get(identity)
        if identity in differ or current is None or dropped_fields(obj, current, manager=manager) != []:
            stale.append(obj)
    return stale


@stage("sync_environment")
def sync_environment(runtime: Runtime, repo: GitOpsRepo, spec: SyncSpec | Mapping[str, Any]) -> SyncResult:
    """Reconcile the environment's Git revision onto the runtime; emit ``GitOpsSynced``.

    Args:
        runtime: the environment's runtime.
        repo: the GitOps repository.
        spec: the environment and the revision (default: head).

    Returns:
        The revision synced and what changed; a second sync of the same revision changes nothing.
    """
    spec = coerce(SyncSpec, spec, stage_name="sync_environment")
    result = reconcile(runtime, repo, spec)
    emit(
        EventName.GITOPS_SYNCED,
        release_id=spec.release_id,
        trace_id=spec.trace_id,
        payload={
            "environment": spec.environment,
            "app": spec.app,
            "revision": result.git_revision,
            "changed": [str(ref) for ref in result.changed],
            "unchanged": len(result.unchanged),
            "pruned": [str(ref) for ref in result.pruned],
            "dry_run": spec.dry_run,
            **({"argocd_application": result.application.name, "sync_requested": result.sync_requested}
               if result.application is not None else {}),
        },
        resource={"delivery.environment": spec.environment},
    )
    return result
