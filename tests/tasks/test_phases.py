"""Planning a strategy's phases (pure): what Git must hold at each step."""

from __future__ import annotations

from typing import Any

from support.runtime import APP, IMAGE_V1, IMAGE_V2

from delivery.manifest_files import parse_objects
from delivery.manifests import render
from delivery.models import BlueGreenStrategy, CanaryStrategy, RollingStrategy
from tasks.phases import plan_phases
from tasks.rollback import SLOT_LABEL, TRACK_LABEL


def image_of(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def rendered(image: str = IMAGE_V1, **values: Any) -> dict[str, str]:
    from support.runtime import SAMPLE_DEPLOY

    from delivery.manifests import ManifestSpec, templates_from_dir

    return render(ManifestSpec(release_id="rel-p", trace_id="t" * 32, app=APP, environment="dev", namespace="dev",
                               image=image, templates=templates_from_dir(SAMPLE_DEPLOY),
                               values={"replicas": 4, **values})).files


def objects_of(files: dict[str, str]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in parse_objects(files)}


def test_rolling_is_one_phase_in_place() -> None:
    (phase,) = plan_phases(RollingStrategy(), rendered=rendered(), current={})
    assert phase.final and phase.gate == [APP] and phase.files == rendered()


def test_blue_green_deploys_the_idle_slot_then_switches_the_service() -> None:
    (first,) = plan_phases(BlueGreenStrategy(), rendered=rendered(), current={})
    assert first.name == "deploy-blue" and first.final and first.gate == [f"{APP}-blue"]
    live_files = {name: text.encode() for name, text in first.files.items()}
    staged, switched = plan_phases(BlueGreenStrategy(), rendered=rendered(IMAGE_V2), current=live_files)
    assert (staged.name, switched.name) == ("deploy-green", "switch-green")
    staged_objects, switched_objects = objects_of(staged.files), objects_of(switched.files)
    assert staged_objects[("Service", APP)]["spec"]["selector"][SLOT_LABEL] == "blue"
    assert staged.files[f"deployment-{APP}-blue.yaml"] == first.files[f"deployment-{APP}-blue.yaml"]
    green = staged_objects[("Deployment", f"{APP}-green")]
    assert image_of(green) == IMAGE_V2 and green["spec"]["selector"]["matchLabels"][SLOT_LABEL] == "green"
    assert switched_objects[("Service", APP)]["spec"]["selector"][SLOT_LABEL] == "green"
    assert switched.files[f"deployment-{APP}-blue.yaml"] == first.files[f"deployment-{APP}-blue.yaml"]
    assert switched.final and not staged.final and staged.gate == switched.gate == [f"{APP}-green"]


def test_canary_steps_take_a_share_of_replicas_and_leave_stable_alone() -> None:
    (first,) = plan_phases(CanaryStrategy(), rendered=rendered(), current={})
    assert first.name == "deploy"
    stable = objects_of(first.files)[("Deployment", APP)]
    assert stable["spec"]["selector"]["matchLabels"][TRACK_LABEL] == "stable"
    current = {name: text.encode() for name, text in first.files.items()}
    phases = plan_phases(CanaryStrategy(steps=[10, 50, 100]), rendered=rendered(IMAGE_V2), current=current)
    assert [p.name for p in phases] == ["canary-10", "canary-50", "canary-100", "promote"]
    for phase, replicas in zip(phases[:3], [1, 2, 4], strict=True):
        canary = objects_of(phase.files)[("Deployment", f"{APP}-canary")]
        assert canary["spec"]["replicas"] == replicas and image_of(canary) == IMAGE_V2
        assert canary["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] == "canary"
        assert {n: t for n, t in phase.files.items() if "canary" not in n} == first.files
        assert phase.gate == [f"{APP}-canary"] and not phase.final
    promoted = objects_of(phases[-1].files)
    assert image_of(promoted[("Deployment", APP)]) == IMAGE_V2 and ("Deployment", f"{APP}-canary") not in promoted
