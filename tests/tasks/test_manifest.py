"""render_manifest: the sample app's templates + values -> labelled, digest-pinned, deterministic objects."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from support.runtime import APP, FAIL, IMAGE_V1, SAMPLE_DEPLOY

from delivery.errors import InvalidInput
from delivery.labels import (
    APP_LABEL,
    ENVIRONMENT_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RELEASE_ID_ANNOTATION,
    TRACE_ID_ANNOTATION,
)
from delivery.manifests import ManifestSpec, render, templates_from_dir
from tasks.manifest import render_manifest

TEMPLATES = templates_from_dir(SAMPLE_DEPLOY)


def spec(**overrides: Any) -> dict[str, Any]:
    base = {"release_id": "rel-m-1", "trace_id": "a" * 32, "app": APP, "environment": "staging",
            "namespace": "staging", "image": IMAGE_V1, "templates": TEMPLATES, "values": {}}
    return {**base, **overrides}


def test_the_sample_app_renders_to_labelled_digest_pinned_objects() -> None:
    manifest = render(ManifestSpec(**spec(values={"replicas": 3, **FAIL})))
    objects = manifest.objects()
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "sample-app-config"), ("Service", APP), ("Deployment", APP), ("Ingress", APP)]
    assert list(manifest.files) == ["configmap-sample-app-config.yaml", "service-sample-app.yaml",
                                    "deployment-sample-app.yaml", "ingress-sample-app.yaml"]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "staging"
        assert meta["labels"][MANAGED_BY_LABEL] == MANAGED_BY_VALUE
        assert meta["labels"][APP_LABEL] == APP and meta["labels"][ENVIRONMENT_LABEL] == "staging"
        assert meta["annotations"] == {RELEASE_ID_ANNOTATION: "rel-m-1", TRACE_ID_ANNOTATION: "a" * 32}
    deployment = objects[2]
    assert deployment["spec"]["replicas"] == 3  # the environment's value over the default 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V1
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"simulator.delivery.gitops/fail": "true"}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    assert objects[0]["data"]["ENVIRONMENT"] == "staging"
    assert objects[3]["spec"]["rules"][0]["host"] == "sample-app.staging.localtest.me"


def test_rendering_is_byte_for_byte_deterministic() -> None:
    first = render(ManifestSpec(**spec(values={"config": {"B": "2", "A": "1"}})))
    shuffled = dict(reversed(list(TEMPLATES.items())))
    second = render(ManifestSpec(**spec(templates=shuffled, values={"config": {"A": "1", "B": "2"}})))
    assert first.files == second.files and first.digest == second.digest
    for text in first.files.values():
        assert text == yaml.safe_dump(yaml.safe_load(text), sort_keys=True, default_flow_style=False, width=4096)


def test_ingress_can_be_disabled_by_values() -> None:
    manifest = render(ManifestSpec(**spec(values={"ingress": {"enabled": False}})))
    assert "ingress-sample-app.yaml" not in manifest.files


def broken(name: str, old: str, new: str) -> dict[str, str]:
    assert old in TEMPLATES[name]
    return {**TEMPLATES, name: TEMPLATES[name].replace(old, new)}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"image": "registry/app:latest"}, ["image", "not pinned by digest"]),
        ({"app": "Bad_App"}, ["app"]),
        ({"namespace": "UPPER"}, ["namespace"]),
        ({"templates": {"values.yaml": "a: 1\n"}}, ["templates", "no *.yaml.j2"]),
        ({"unknown": 1}, ["unknown", "Extra inputs"]),
        ({"values": {"replicas": "three"}}, ["deploy/deployment.yaml.j2", "spec.replicas", "'three'"]),
        ({"values": {"containerPort": 0}}, ["deploy/deployment.yaml.j2", "containerPort"]),
        ({"values": {"resources": "big"}}, ["deploy/deployment.yaml.j2", "resources"]),
        ({"values": {"podAnnotations": {"x": True}}}, ["deploy/deployment.yaml.j2", "annotations"]),
        ({"values": {"servicePort": "http"}}, ["deploy/service.yaml.j2", "spec.ports[0].port"]),
        ({"templates": broken("deployment.yaml.j2", "values.replicas", "values.replica")},
         ["deploy/deployment.yaml.j2 line 6", "values.replica is not defined"]),
        ({"templates": broken("deployment.yaml.j2", "values.replicas", "values.resources.gpus")},
         ["deploy/deployment.yaml.j2", "values.resources.gpus is not defined"]),
        ({"templates": broken("service.yaml.j2", "{{ app }}", "{{ app ")},
         ["deploy/service.yaml.j2 line", "template syntax error"]),
        ({"templates": broken("service.yaml.j2", "type: ClusterIP", "type: : ClusterIP")},
         ["deploy/service.yaml.j2", "not valid YAML"]),
        ({"templates": {**TEMPLATES, "values.yaml": "replicas: [\n"}}, ["deploy/values.yaml line", "not valid YAML"]),
        ({"templates": {**TEMPLATES, "values.yaml": "- 1\n"}}, ["deploy/values.yaml", "must be a mapping"]),
        ({"templates": broken("service.yaml.j2", "name: {{ app }}\n", "name: {{ app }}\n  namespace: other\n")},
         ["deploy/service.yaml.j2", "metadata.namespace"]),
        ({"templates": {**TEMPLATES, "extra.yaml.j2": TEMPLATES["service.yaml.j2"]}},
         ["deploy/service.yaml.j2", "metadata.name", "also rendered by deploy/extra.yaml.j2"]),
        ({"templates": {**TEMPLATES, "extra.yaml.j2": "just text\n"}}, ["deploy/extra.yaml.j2", "Kubernetes object"]),
        ({"templates": broken("deployment.yaml.j2", "image: {{ image }}", "image: nginx:latest")},
         ["deploy/deployment.yaml.j2", "containers[0].image", "digest"]),
    ],
)
def test_malformed_input_is_refused_naming_the_file_and_field(overrides: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        render_manifest.fn(spec(**overrides))
    for fragment in expected:
        assert fragment in str(caught.value)


def test_the_stage_renders_in_a_flow_and_a_second_run_gives_the_same_bytes(prefect_server: str) -> None:
    from prefect import flow

    release_id = f"rel-m-{uuid.uuid4().hex[:8]}"

    @flow
    def twice() -> tuple:
        first = render_manifest(ManifestSpec(**spec(release_id=release_id)))
        second = render_manifest.fn(ManifestSpec(**spec(release_id=release_id)))
        return first, second

    first, second = twice()
    assert first.files == second.files and first.digest == second.digest
    assert first.release_id == release_id and first.environment == "staging"


def test_every_environment_of_the_example_gitops_config_renders() -> None:
    from support.runtime import ROOT

    from delivery.config import load_config

    config = load_config((ROOT / "examples" / "gitops" / "delivery.yaml").read_bytes())
    for name in config.path:
        settings = config.environment(name)
        manifest = render(ManifestSpec(**spec(environment=name, namespace=settings.namespace,
                                              values=settings.values)))
        deployment = yaml.safe_load(manifest.files[f"deployment-{APP}.yaml"])
        assert deployment["spec"]["replicas"] == settings.values["replicas"]
        assert deployment["metadata"]["namespace"] == settings.namespace
