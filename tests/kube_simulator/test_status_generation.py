"""generation moves only with spec; the status subresource is kept apart from the main resource; dryRun."""

from __future__ import annotations

import httpx
import pytest
from k8s_helpers import api_error, configmap, deployment
from kubernetes import client

from kube_simulator import KubernetesSimulator


@pytest.fixture
def sim() -> KubernetesSimulator:
    # Without the kubelet loop, status changes only through the API calls of these tests.
    with KubernetesSimulator(kubelet=False) as simulator:
        yield simulator


def test_generation_moves_only_on_spec_changes(apps: client.AppsV1Api, ns: str) -> None:
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    assert created.metadata.generation == 1
    labelled = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"extra": "1"}}})
    assert labelled.metadata.generation == 1
    annotated = apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {"note": "x"}}})
    assert annotated.metadata.generation == 1
    status = apps.patch_namespaced_deployment_status("web", ns, {"status": {"replicas": 5}})
    assert status.metadata.generation == 1 and status.status.replicas == 5
    scaled = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2
    same = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert same.metadata.generation == 2 and same.metadata.resource_version == scaled.metadata.resource_version
    body = apps.read_namespaced_deployment("web", ns)
    body.spec.template.spec.containers[0].image = "nginx:2"
    assert apps.replace_namespaced_deployment("web", ns, body).metadata.generation == 3


def test_kinds_without_spec_have_no_generation(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, configmap("cfg"))
    assert created.metadata.generation is None


def test_writes_to_the_main_resource_ignore_status(apps: client.AppsV1Api, ns: str) -> None:
    manifest = deployment("web")
    manifest["status"] = {"replicas": 9, "readyReplicas": 9}
    created = apps.create_namespaced_deployment(ns, manifest)
    assert not created.status.ready_replicas
    apps.patch_namespaced_deployment_status("web", ns, {"status": {"replicas": 1}})
    patched = apps.patch_namespaced_deployment("web", ns, {"status": {"replicas": 42}, "spec": {"replicas": 4}})
    assert patched.status.replicas == 1 and patched.spec.replicas == 4
    body = apps.read_namespaced_deployment("web", ns)
    body.status.replicas = 77
    assert apps.replace_namespaced_deployment("web", ns, body).status.replicas == 1


def test_writes_to_status_ignore_spec_and_metadata(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    body = apps.read_namespaced_deployment("web", ns)
    body.spec.replicas = 10
    body.metadata.labels["sneaky"] = "yes"
    body.status.replicas = 2
    written = apps.replace_namespaced_deployment_status("web", ns, body)
    assert written.status.replicas == 2 and written.spec.replicas == 2
    assert "sneaky" not in written.metadata.labels and written.metadata.generation == 1
    read = apps.read_namespaced_deployment_status("web", ns)
    assert read.status.replicas == 2
    owners = {(e.manager, e.subresource) for e in read.metadata.managed_fields}
    assert any(sub == "status" for _, sub in owners)


def test_status_subresource_exists_only_where_discovery_says(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, configmap("cfg"))

    host = core.api_client.configuration.host
    with httpx.Client(base_url=host) as http:
        assert http.get(f"/api/v1/namespaces/{ns}/configmaps/cfg/status").status_code == 404
        assert http.delete(f"/api/v1/namespaces/{ns}/services/cfg/status").status_code == 405


def test_dry_run_create_replace_patch_apply_delete(
    apps: client.AppsV1Api, core: client.CoreV1Api, dyn, ns: str
) -> None:
    preview = core.create_namespaced_config_map(ns, configmap("cfg"), dry_run="All")
    assert preview.metadata.name == "cfg" and preview.metadata.uid
    assert api_error(lambda: core.read_namespaced_config_map("cfg", ns))[0] == 404

    real = core.create_namespaced_config_map(ns, configmap("cfg"))
    changed = configmap("cfg", data={"key": "dry"})
    assert core.replace_namespaced_config_map("cfg", ns, changed, dry_run="All").data == {"key": "dry"}
    assert core.patch_namespaced_config_map("cfg", ns, {"data": {"key": "p"}}, dry_run="All").data == {"key": "p"}
    resource = dyn.resources.get(api_version="v1", kind="ConfigMap")
    applied = resource.server_side_apply(
        body=configmap("cfg", data={"key": "a"}), namespace=ns, field_manager="g", dry_run="All", force_conflicts=True
    )
    assert applied.data.key == "a"
    core.delete_namespaced_config_map("cfg", ns, dry_run="All")
    after = core.read_namespaced_config_map("cfg", ns)
    assert after.data == {"key": "value"} and after.metadata.resource_version == real.metadata.resource_version

    fresh = resource.server_side_apply(body=configmap("new"), namespace=ns, field_manager="g", dry_run="All")
    assert fresh.metadata.name == "new"
    assert api_error(lambda: core.read_namespaced_config_map("new", ns))[0] == 404
    assert api_error(lambda: core.create_namespaced_config_map(ns, configmap("x"), dry_run="Some"))[0] == 400


def test_dynamic_client_status_subresource_and_ingress_generation(dyn, ns: str) -> None:
    ingresses = dyn.resources.get(api_version="networking.k8s.io/v1", kind="Ingress")
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {"defaultBackend": backend},
    }
    created = ingresses.create(body=manifest, namespace=ns)
    assert created.metadata.generation == 1 and created.status.loadBalancer is not None
    lb = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}
    written = ingresses.status.patch(name="web", namespace=ns, body=lb, content_type="application/merge-patch+json")
    assert written.status.loadBalancer.ingress[0].ip == "10.0.0.1" and written.metadata.generation == 1
    moved = ingresses.patch(
        name="web",
        namespace=ns,
        body={"spec": {"ingressClassName": "nginx"}, "status": {"loadBalancer": {}}},
        content_type="application/merge-patch+json",
    )
    assert moved.metadata.generation == 2 and moved.status.loadBalancer.ingress[0].ip == "10.0.0.1"
