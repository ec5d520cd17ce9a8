"""Deployment strategies: the phases a release goes through in one environment, and running them.

Every phase is a GitOps commit followed by a sync and a health gate, so Git always says what runs:

- ``rolling``: one phase; the objects are updated in place.
- ``blue_green``: Deployments ``<name>-blue`` / ``<name>-green`` (label ``delivery.gitops/slot``).
  Phase ``deploy-<idle>`` adds the new version in the idle slot (the Service still selects the live
  slot) and gates it; phase ``switch-<idle>`` moves the Service selector. The previous slot stays,
  so a rollback is a switch back.
- ``canary``: the stable Deployment carries ``delivery.gitops/track: stable``; phases
  ``canary-<pct>`` add ``<name>-canary`` with ``ceil(replicas * pct / 100)`` replicas (stable and
  everything else in Git unchanged) and gate it; phase ``promote`` makes the new version stable
  and removes the canary.

A first deployment (nothing in Git yet) needs no gradual phases. On failure the environment is
rolled back to its last healthy revision (:mod:`tasks.rollback`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefect import task
from pydantic import Field

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery.errors import DeliveryError
from delivery.manifest_files import files_for, parse_objects
from delivery.manifests import ManifestSpec
from delivery.models import BlueGreenStrategy, CanaryStrategy, Model, RollingStrategy, Strategy
from delivery.stages import stage_named
from tasks.health import HealthSpec, HttpProbeSpec, check_health
from tasks.manifest import render_manifest
from tasks.promote import Promotion, promote
from tasks.rollback import SLOT_LABEL, TRACK_LABEL, RollbackResult, RollbackSpec, roll_back
from tasks.stage import stage_cache_key, stage_environment
from tasks.sync import SyncSpec, sync_environment

SLOTS = ("blue", "green")


class Phase(Model):
    """One step of a strategy: what Git must hold, which Deployments gate it."""

    name: str
    files: dict[str, str]
    gate: list[str] = Field(description="Deployments whose rollout gates the phase")
    final: bool = Field(description="The last phase: its success marks the revision healthy")
    description: str


# --------------------------------------------------------------------------- object helpers


def _name(obj: Mapping[str, Any]) -> str:
    return obj["metadata"]["name"]


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (obj["kind"], _name(obj))


def _deployments(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(obj) for obj in objects if obj["kind"] == "Deployment"]


def _labelled(deployment: Mapping[str, Any], labels: Mapping[str, str], *, name: str | None = None,
              replicas: int | None = None) -> dict[str, Any]:
    """A copy of a Deployment with extra selector/pod labels (and a new name or replica count)."""
    out = copy.deepcopy(dict(deployment))
    meta = out.setdefault("metadata", {})
    if name is not None:
        meta["name"] = name
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    spec = out.setdefault("spec", {})
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **labels}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    if replicas is not None:
        spec["replicas"] = replicas
    return out


def _selecting(service: Mapping[str, Any], slot: str) -> dict[str, Any]:
    out = copy.deepcopy(dict(service))
    spec = out.setdefault("spec", {})
    if spec.get("selector"):
        spec["selector"] = {**spec["selector"], SLOT_LABEL: slot}
    return out


def live_slot(objects: Sequence[Mapping[str, Any]]) -> str | None:
    """The slot the Services select, or None when no Service selects a slot."""
    for obj in objects:
        if obj["kind"] == "Service":
            slot = ((obj.get("spec") or {}).get("selector") or {}).get(SLOT_LABEL)
            if slot in SLOTS:
                return slot
    return None


# --------------------------------------------------------------------------- planning (pure)


def plan_phases(
    strategy: Strategy, *, rendered: Mapping[str, str], current: Mapping[str, bytes | str]
) -> list[Phase]:
    """Plan the phases of a release in one environment.

    Args:
        strategy: rolling, blue_green or canary (with its steps).
        rendered: the new manifest's files (:func:`tasks.manifest.render_manifest`).
        current: what Git holds for the environment now.

    Returns:
        The phases in order; the last one is ``final``.
    """
    new = parse_objects(rendered)
    cur = parse_objects(current)
    if isinstance(strategy, BlueGreenStrategy):
        return _blue_green(new, cur)
    if isinstance(strategy, CanaryStrategy):
        return _canary(new, cur, strategy.steps)
    files = files_for(new)
    return [Phase(name="deploy", files=files, gate=[_name(d) for d in _deployments(new)], final=True,
                  description="update in place")]


def _blue_green(new: list[dict[str, Any]], cur: list[dict[str, Any]]) -> list[Phase]:
    live = live_slot(cur)
    idle = "blue" if live in (None, "green") else "green"

    def in_slot(objects: list[dict[str, Any]], slot: str) -> list[dict[str, Any]]:
        out = []
        for obj in objects:
            if obj["kind"] == "Deployment":
                out.append(_labelled(obj, {SLOT_LABEL: slot}, name=f"{_name(obj)}-{slot}"))
            elif obj["kind"] == "Service":
                out.append(_selecting(obj, slot))
            else:
                out.append(obj)
        return out

    target = in_slot(new, idle)
    idle_deployments = _deployments(target)
    gate = [_name(d) for d in idle_deployments]
    if live is None:
        return [Phase(name=f"deploy-{idle}", files=files_for(target), gate=gate, final=True,
                      description=f"first deployment, into slot {idle}")]
    live_deployments = [d for d in _deployments(cur) if (d["metadata"].get("labels") or {}).get(SLOT_LABEL) == live]
    cur_keys = {_key(obj) for obj in cur}
    idle_names = {_name(d) for d in idle_deployments}
    staged = [obj for obj in cur if not (obj["kind"] == "Deployment" and _name(obj) in idle_names)]
    staged += idle_deployments + [o for o in target if o["kind"] != "Deployment" and _key(o) not in cur_keys]
    switched = target + live_deployments
    return [
        Phase(name=f"deploy-{idle}", files=files_for(staged), gate=gate, final=False,
              description=f"new version in idle slot {idle}; Service still on {live}"),
        Phase(name=f"switch-{idle}", files=files_for(switched), gate=gate, final=True,
              description=f"Service switched from {live} to {idle}"),
    ]


def _canary(new: list[dict[str, Any]], cur: list[dict[str, Any]], steps: list[int]) -> list[Phase]:
    stable = [(_labelled(o, {TRACK_LABEL: "stable"}) if o["kind"] == "Deployment" else o) for o in new]
    stable_names = [_name(d) for d in _deployments(stable)]
    live_stable = {_name(d) for d in _deployments(cur)
                   if (d["metadata"].get("labels") or {}).get(TRACK_LABEL) == "stable"}
    final = Phase(name="promote", files=files_for(stable), gate=stable_names, final=True,
                  description="new version made stable, canary removed")
    if not live_stable & set(stable_names):
        return [final.model_copy(update={"name": "deploy", "description": "first deployment, no stable to protect"})]
    cur_keys = {_key(obj) for obj in cur}
    kept = [obj for obj in cur if not (obj["kind"] == "Deployment" and _name(obj).endswith("-canary"))]
    added = [o for o in stable if o["kind"] != "Deployment" and _key(o) not in cur_keys]
    phases = []
    for percent in steps:
        canaries = []
        for deployment in _deployments(new):
            total = int((deployment.get("spec") or {}).get("replicas", 1))
            share = max(1, math.ceil(total * percent / 100))
            canaries.append(_labelled(deployment, {TRACK_LABEL: "canary"}, name=f"{_name(deployment)}-canary",
                                      replicas=share))
        phases.append(Phase(name=f"canary-{percent}", files=files_for(kept + added + canaries),
                            gate=[_name(c) for c in canaries], final=False,
                            description=f"canary at {percent}% of replicas; stable unchanged"))
    return [*phases, final]


# --------------------------------------------------------------------------- running


class HealthSettings(Model):
    """How long and how a phase is gated."""

    timeout_seconds: float = Field(default=120, gt=0, le=3600)
    poll_seconds: float = Field(default=0.5, gt=0, le=30)
    http_probe: HttpProbeSpec | None = Field(default=None, description="Probed at the final phase")


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
    phases: list[PhaseOutcome] = Field(default_factory=list)
    rollback: RollbackResult | None = None
    message: str = ""


class PhasePlan(Model):
    """The phases of one promotion attempt and the GitOps revision they start from."""

    base_revision: str | None
    phases: list[Phase]


@task(name="plan_phases", task_run_name="10-plan_phases-{spec.environment}", persist_result=True)
def plan_promotion(repo: GitOpsRepo, spec: ManifestSpec, strategy: Strategy, rendered: dict[str, str]) -> PhasePlan:
    """Plan the phases from what Git holds now, once per attempt (persisted with the render's key).

    A run resumed after a crash between two phases finds this plan again instead of planning
    from a Git state its own first phase already changed.
    """
    return PhasePlan(base_revision=repo.resolve(repo.branch), phases=plan_phases(
        strategy, rendered=rendered, current=repo.read_environment(spec.environment, spec.app, ref=repo.branch)))


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
    runtime: KubernetesRuntime,
    repo: GitOpsRepo,
    spec: ManifestSpec,
    *,
    strategy: str,
    health: HealthSettings,
    attempt: int,
    failed_revision: str,
    reason: str,
    requested_by: str | None = None,
) -> RollbackResult:
    """Stage 14 for one promotion attempt, keyed on the attempt and the abandoned revision.

    A rollback that completed comes back from its stored result; one that a crash cut short runs
    again (it is idempotent against Git and the cluster).
    """
    return _keyed(roll_back, "rollback", f"attempt-{attempt}", failed_revision)(runtime, repo, RollbackSpec(
        **spec.target().model_dump(), strategy=strategy, reason=reason, failed_revision=failed_revision,
        requested_by=requested_by, timeout_seconds=health.timeout_seconds, poll_seconds=health.poll_seconds))


def deploy_with_strategy(
    runtime: KubernetesRuntime,
    repo: GitOpsRepo,
    spec: ManifestSpec,
    *,
    strategy: Strategy | None = None,
    health: HealthSettings | None = None,
    artifact_ids: Sequence[str] = (),
    planned_by: str | None = None,
    approved_by: Sequence[str] = (),
    attempt: int = 1,
    before_rollback: Callable[[str, DeliveryError], None] | None = None,
) -> DeploymentOutcome:
    """Deploy a release into one environment: render, then per phase promote -> sync -> health.

    A failure after the first commit rolls the environment back to its last healthy revision and
    is reported in the outcome (``healthy=False, rolled_back=True``) rather than raised.

    Args:
        runtime: the environment's runtime.
        repo: the GitOps repository.
        spec: templates, environment values, the image by digest and the target.
        strategy: default rolling.
        health: gate timeout, poll interval and the optional HTTP probe.
        artifact_ids: ``Artifact-Id`` trailers of the promotion commits.
        planned_by: ``Planned-By`` trailer.
        approved_by: ``Approved-By`` trailers.
        attempt: the plan's promotion attempt: a retry after a failure deploys afresh instead of
            reusing the failed attempt's stored results.
        before_rollback: called with the abandoned revision and the failure before the rollback
            starts, so that the caller can record the verdict first: a run resumed after a crash
            inside the rollback must finish it, not re-judge the rolled-back environment healthy.

    Returns:
        The outcome: revision, healthy, rolled_back, the phases and the rollback.

    Raises:
        InvalidInput: malformed templates or values (nothing was committed).
        DeliveryError: a failure before anything was committed.
    """
    strategy = strategy or RollingStrategy()
    health = health or HealthSettings()
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
                poll_seconds=health.poll_seconds, http_probe=health.http_probe if phase.final else None,
                mark_healthy=phase.final))
            outcomes.append(PhaseOutcome(name=phase.name, git_revision=revision, committed=promoted.created,
                                         changed=len(synced.changed), pruned=len(synced.pruned), healthy=True,
                                         message=checked.message))
    except DeliveryError as exc:
        if revision is None:
            raise
        if before_rollback is not None:
            before_rollback(revision, exc)
        rollback = roll_back_attempt(runtime, repo, spec, strategy=strategy.name, health=health, attempt=attempt,
                                     failed_revision=revision, reason=str(exc), requested_by=planned_by)
        return DeploymentOutcome(
            environment=spec.environment, app=spec.app, strategy=strategy.name, git_revision=rollback.git_revision,
            failed_revision=revision, healthy=False, rolled_back=True, phases=outcomes, rollback=rollback,
            message=f"{exc}; rolled back: {rollback.message}",
        )
    return DeploymentOutcome(
        environment=spec.environment, app=spec.app, strategy=strategy.name, git_revision=revision or "",
        healthy=True, rolled_back=False, phases=outcomes, message=f"{len(outcomes)} phase(s) healthy",
    )
