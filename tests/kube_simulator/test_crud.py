"""Create / get / list / replace / delete with the typed clients, metadata and error Status objects."""

from __future__ import annotations

import base64

import httpx
import pytest
from k8s_helpers import api_error, configmap, deployment
from kubernetes import client


def _secret(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"token": "s3cr3t"}}


def _service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }


def _ingress(name: str) -> dict:
    backend = {"service": {"name": name, "port": {"number": 80}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"rules": [{"host": f"{name}.local", "http": {"paths": [path]}}]},
    }


KINDS = {
    "ConfigMap": (lambda name: configmap(name), "v1"),
    "Secret": (_secret, "v1"),
    "Service": (_service, "v1"),
    "Deployment": (lambda name: deployment(name), "apps/v1"),
    "Ingress": (_ingress, "networking.k8s.io/v1"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_full_lifecycle_of_every_namespaced_kind(dyn, ns: str, kind: str) -> None:
    manifest, api_version = KINDS[kind]
    resource = dyn.resources.get(api_version=api_version, kind=kind)
    created = resource.create(body=manifest("one"), namespace=ns)
    meta = created.metadata
    assert (created.kind, created.apiVersion, meta.name, meta.namespace) == (kind, api_version, "one", ns)
    assert meta.uid and meta.creationTimestamp.endswith("Z") and int(meta.resourceVersion) > 0

    fetched = resource.get(name="one", namespace=ns)
    assert fetched.metadata.uid == meta.uid

    body = fetched.to_dict()
    body["metadata"].setdefault("labels", {})["tier"] = "gold"
    del body["metadata"]["resourceVersion"]  # unconditional: the kubelet may write status meanwhile
    replaced = resource.replace(body=body, namespace=ns)
    assert replaced.metadata.labels["tier"] == "gold"
    assert int(replaced.metadata.resourceVersion) > int(meta.resourceVersion)
    assert replaced.metadata.uid == meta.uid and replaced.metadata.creationTimestamp == meta.creationTimestamp

    listed = resource.get(namespace=ns)
    assert listed.kind == f"{kind}List" and [i.metadata.name for i in listed.items] == ["one"]

    deleted = resource.delete(name="one", namespace=ns)
    if kind == "Service":  # like the API server, Services answer with the deleted object
        assert deleted.metadata.uid == meta.uid
    else:
        assert deleted.status == "Success" and deleted.details.uid == meta.uid
    status, body = api_error(lambda: resource.get(name="one", namespace=ns))
    assert status == 404 and body["reason"] == "NotFound"


def test_typed_clients_round_trip(core: client.CoreV1Api, apps: client.AppsV1Api, net, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("api"))
    core.create_namespaced_service(ns, _service("api"))
    core.create_namespaced_config_map(ns, configmap("api-config"))
    core.create_namespaced_secret(ns, _secret("api-secret"))
    net.create_namespaced_ingress(ns, _ingress("api"))
    dep = apps.read_namespaced_deployment("api", ns)
    assert dep.spec.template.spec.containers[0].image == "nginx:1.27"
    assert dep.spec.replicas == 2 and dep.spec.progress_deadline_seconds == 600  # defaulted like the API server
    svc = core.read_namespaced_service("api", ns)
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip and svc.spec.ports[0].target_port == 80
    assert net.read_namespaced_ingress("api", ns).spec.rules[0].host == "api.local"
    secret = core.read_namespaced_secret("api-secret", ns)
    assert base64.b64decode(secret.data["token"]) == b"s3cr3t" and secret.type == "Opaque"
    assert core.read_namespaced_config_map("api-config", ns).data == {"key": "value"}


def test_resource_version_is_a_global_counter(core: client.CoreV1Api, ns: str) -> None:
    versions = [
        int(core.create_namespaced_config_map(ns, configmap(f"c{i}")).metadata.resource_version) for i in range(3)
    ]
    assert versions == sorted(versions) and len(set(versions)) == 3
    listed = core.list_namespaced_config_map(ns)
    assert int(listed.metadata.resource_version) >= versions[-1]


def test_stale_update_is_a_409_conflict_status(core: client.CoreV1Api, ns: str) -> None:
    first = core.create_namespaced_config_map(ns, configmap("cfg"))
    first.data = {"key": "second"}
    core.replace_namespaced_config_map("cfg", ns, first)
    first.data = {"key": "stale"}
    status, body = api_error(lambda: core.replace_namespaced_config_map("cfg", ns, first))
    assert status == 409
    assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "Conflict", 409)
    assert body["details"] == {"name": "cfg", "group": "", "kind": "configmaps"}
    assert core.read_namespaced_config_map("cfg", ns).data == {"key": "second"}


def test_already_exists_and_not_found_statuses(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web"))
    status, body = api_error(lambda: apps.create_namespaced_deployment(ns, deployment("web")))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'deployments.apps "web" already exists'
    status, body = api_error(lambda: apps.read_namespaced_deployment("nope", ns))
    assert (status, body["reason"], body["details"]["kind"]) == (404, "NotFound", "deployments")
    status, body = api_error(lambda: apps.replace_namespaced_deployment("nope", ns, deployment("nope")))
    assert status == 404
    status, body = api_error(lambda: core.delete_namespaced_config_map("nope", ns))
    assert status == 404


def test_create_in_a_missing_namespace_is_refused(core: client.CoreV1Api) -> None:
    status, body = api_error(lambda: core.create_namespaced_config_map("ghost", configmap("c")))
    assert (status, body["reason"]) == (404, "NotFound") and "namespaces" in body["message"]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (configmap("Bad_Name"), "metadata.name"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "name or generateName is required"),
    ],
)
def test_invalid_objects_are_422(core: client.CoreV1Api, ns: str, manifest: dict, message: str) -> None:
    status, body = api_error(lambda: core.create_namespaced_config_map(ns, manifest))
    assert (status, body["reason"]) == (422, "Invalid") and message in body["message"]


def test_deployment_validation(apps: client.AppsV1Api, ns: str) -> None:
    broken = deployment("web")
    broken["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    status, body = api_error(lambda: apps.create_namespaced_deployment(ns, broken))
    assert status == 422 and "selector" in body["message"]
    wrong_kind = {**deployment("web"), "kind": "ConfigMap"}
    status, _ = api_error(lambda: apps.create_namespaced_deployment(ns, wrong_kind))
    assert status == 400


def test_generate_name(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "job-"}, "data": {}})
    assert created.metadata.name.startswith("job-") and len(created.metadata.name) > len("job-")


def test_service_cluster_ip_is_kept_across_replace(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_service(ns, _service("svc"))
    body = _service("svc")
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    body["spec"]["ports"][0]["port"] = 8080
    replaced = core.replace_namespaced_service("svc", ns, body)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip and replaced.spec.ports[0].port == 8080


def test_namespace_delete_cascades(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    core.create_namespace({"metadata": {"name": "keep"}})
    apps.create_namespaced_deployment(ns, deployment("web"))
    core.create_namespaced_config_map(ns, configmap("cfg"))
    core.create_namespaced_config_map("keep", configmap("cfg"))
    result = core.delete_namespace(ns, propagation_policy="Foreground")
    assert result["status"] == "Success"
    assert api_error(lambda: core.read_namespace(ns))[0] == 404
    assert apps.list_deployment_for_all_namespaces().items == []
    remaining = core.list_config_map_for_all_namespaces().items
    assert [(c.metadata.namespace, c.metadata.name) for c in remaining] == [("keep", "cfg")]
    core.create_namespace({"metadata": {"name": ns}})
    assert core.list_namespaced_config_map(ns).items == []


def test_namespace_carries_phase_and_name_label(core: client.CoreV1Api, ns: str) -> None:
    namespace = core.read_namespace(ns)
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels["kubernetes.io/metadata.name"] == ns


def test_delete_precondition_and_collection(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, configmap("a", {"group": "x"}))
    core.create_namespaced_config_map(ns, configmap("b", {"group": "x"}))
    core.create_namespaced_config_map(ns, configmap("c", {"group": "y"}))
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    assert api_error(lambda: core.delete_namespaced_config_map("a", ns, body=stale))[0] == 409
    fresh = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=created.metadata.uid))
    core.delete_namespaced_config_map("a", ns, body=fresh)
    core.delete_collection_namespaced_config_map(ns, label_selector="group=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c"]


def test_labels_must_be_strings_and_malformed_bodies_are_refused(sim, ns: str) -> None:
    url = f"{sim.url}/api/v1/namespaces/{ns}/configmaps"
    bad = configmap("cfg")
    bad["metadata"]["labels"] = {"replicas": 3}  # the typed client would refuse this before sending it
    http = httpx.Client()
    response = http.post(url, json=bad)
    assert response.status_code == 422 and "metadata.labels" in response.json()["message"]
    response = http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"
    response = http.post(url, content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    http.close()
