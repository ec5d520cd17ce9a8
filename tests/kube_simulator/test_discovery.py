"""Discovery: what the official clients ask for before any request, and the kubeconfig."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client, config
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from kube_simulator import KubernetesSimulator

KINDS = [
    ("v1", "Namespace", "namespaces", False),
    ("v1", "ConfigMap", "configmaps", True),
    ("v1", "Secret", "secrets", True),
    ("v1", "Service", "services", True),
    ("apps/v1", "Deployment", "deployments", True),
    ("networking.k8s.io/v1", "Ingress", "ingresses", True),
]


def test_version_and_api_groups(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().major == "1"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert set(groups) == {"apps", "networking.k8s.io"}
    assert groups["apps"].preferred_version.group_version == "apps/v1"
    assert client.AppsApi(api).get_api_group().name == "apps"


def test_resource_lists_name_kinds_verbs_and_status_subresources(api: client.ApiClient) -> None:
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    apps = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    net = {r.name: r for r in client.NetworkingV1Api(api).get_api_resources().resources}
    assert core["namespaces"].namespaced is False and core["configmaps"].namespaced is True
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(apps["deployments"].verbs)
    assert apps["deployments/status"].kind == "Deployment"
    assert net["ingresses"].kind == "Ingress" and "ingresses/status" in net
    assert "configmaps/status" not in core


@pytest.mark.parametrize(("api_version", "kind", "plural", "namespaced"), KINDS)
def test_dynamic_client_discovers_every_kind(dyn, api_version: str, kind: str, plural: str, namespaced: bool) -> None:
    resource = dyn.resources.get(api_version=api_version, kind=kind)
    assert (resource.name, resource.namespaced) == (plural, namespaced)
    listed = resource.get()
    assert listed.kind == f"{kind}List" and listed.apiVersion == api_version


def test_dynamic_client_knows_the_status_subresource_and_rejects_unknown_kinds(dyn) -> None:
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert "status" in deployments.subresources
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="v1", kind="Pod")


def test_unknown_paths_answer_a_404_status(sim: KubernetesSimulator) -> None:
    unknown = [
        "/apis/batch/v1",
        "/apis/nope",
        "/api/v2",
        "/api/v1/pods",
        "/apis/apps/v1/namespaces/x/deployments/a/scale",
    ]
    with httpx.Client(base_url=sim.url) as http:
        responses = {path: http.get(path) for path in unknown}
    for path, response in responses.items():
        assert response.status_code == 404, path
        assert response.json()["kind"] == "Status" and response.json()["reason"] == "NotFound"


def test_kubeconfig_loads_with_the_standard_loader(sim: KubernetesSimulator, tmp_path) -> None:
    path = sim.write_kubeconfig(tmp_path / "nested" / "config")
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "simulator" and active["context"]["namespace"] == "default"
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == sim.url
    with client.ApiClient(configuration) as api:
        names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_request_count_counts_http_requests(sim: KubernetesSimulator, core: client.CoreV1Api) -> None:
    sim.reset_request_count()
    assert sim.request_count == 0
    for _ in range(3):
        core.list_namespace()
    core.list_namespaced_config_map("default")
    assert sim.request_count == 4


def test_stop_and_start_again_keeps_the_url_and_the_objects(tmp_path) -> None:
    sim = KubernetesSimulator(ready_delay=0)
    url = sim.start()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        client.CoreV1Api(api).create_namespaced_config_map("default", {"metadata": {"name": "kept"}})
    sim.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/version", timeout=2)
    try:
        assert sim.start() == url
        with config.new_client_from_config(config_file=str(kubeconfig)) as api:
            assert client.CoreV1Api(api).read_namespaced_config_map("kept", "default").metadata.name == "kept"
        assert sim.request_count == 2
    finally:
        sim.stop()
    sim.stop()  # idempotent
