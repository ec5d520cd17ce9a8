"""Deployment strategies as phases: what Git must hold at each step of a release in one environment.

Every phase is a GitOps commit followed by a sync and a health gate, so Git always says what runs
(the phases are run by :mod:`flows.strategies`):

- ``rolling``: one phase; the objects are updated in place.
- ``blue_green``: Deployments ``<name>-blue`` / ``<name>-green`` (label ``delivery.gitops/slot``).
  Phase ``deploy-<idle>`` adds the new version in the idle slot (the Service still selects the live
  slot) and gates it; phase ``switch-<idle>`` moves the Service selector. The previous slot stays,
  so a rollback is a switch back.
- ``canary``: the stable Deployment carries ``delivery.gitops/track: stable``; phases
  ``canary-<pct>`` add ``<name>-canary`` with ``ceil(replicas * pct / 100)`` replicas (stable and
  everything else in Git unchanged) and gate it; phase ``promote`` makes the new version stable
  and removes the canary.

A first deployment (nothing in Git yet) needs no gradual phases. :func:`plan_phases` is pure;
:func:`plan_promotion` is its task, part of stage 10 (``render_manifest``): it plans from what Git
holds once per attempt.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from pydantic import Field

from blocks.gitops_repo import GitOpsRepo
from delivery.manifest_files import files_for, parse_objects
from delivery.manifests import ManifestSpec
from delivery.models import BlueGreenStrategy, CanaryStrategy, Model, Strategy
from delivery.stages import stage_named
from tasks.rollback import SLOT_LABEL, TRACK_LABEL

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


# --------------------------------------------------------------------------- the task


class PhasePlan(Model):
    """The phases of one promotion attempt and the GitOps revision they start from."""

    base_revision: str | None
    phases: list[Phase]


# Planning the phases is part of stage 10: its run sorts with the render's.
_RENDER = stage_named("render_manifest")


@task(name="plan_phases", task_run_name=f"{_RENDER.number:02d}-plan_phases-{{spec.environment}}", persist_result=True)
def plan_promotion(repo: GitOpsRepo, spec: ManifestSpec, strategy: Strategy, rendered: dict[str, str]) -> PhasePlan:
    """Plan the phases from what Git holds now, once per attempt (persisted with the render's key).

    A run resumed after a crash between two phases finds this plan again instead of planning
    from a Git state its own first phase already changed.
    """
    return PhasePlan(base_revision=repo.resolve(repo.branch), phases=plan_phases(
        strategy, rendered=rendered, current=repo.read_environment(spec.environment, spec.app, ref=repo.branch)))
