"""Patches: JSON merge patch, strategic merge patch by list key, JSON patch, preconditions."""

from __future__ import annotations

import pytest
from k8s_helpers import api_error, configmap, deployment
from kubernetes import client

from kube_simulator.patch import PatchError, json_merge_patch, strategic_merge


def _two_containers() -> dict:
    manifest = deployment("web")
    pod = manifest["spec"]["template"]["spec"]
    pod["containers"] = [
        {
            "name": "web",
            "image": "web:1",
            "args": ["--a", "--b"],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"name": "http", "containerPort": 8080}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
        },
        {"name": "sidecar", "image": "proxy:1"},
    ]
    pod["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]
    return manifest


def test_strategic_merge_merges_containers_env_ports_and_volumes_by_key(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _two_containers())
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "web:2",
                            "args": ["--c"],
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 9090, "name": "metrics"}],
                        }
                    ],
                    "volumes": [{"name": "cfg", "configMap": {"name": "cfg-v2"}}],
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment("web", ns, patch)
    web, sidecar = patched.spec.template.spec.containers
    assert (web.image, sidecar.name, sidecar.image) == ("web:2", "sidecar", "proxy:1")
    assert [(e.name, e.value) for e in web.env] == [("A", "1"), ("B", "20"), ("C", "3")]
    assert [(p.name, p.container_port) for p in web.ports] == [("http", 8080), ("metrics", 9090)]
    assert web.args == ["--c"]  # lists without a merge key are replaced
    assert web.volume_mounts[0].mount_path == "/etc/cfg"
    volumes = {v.name: v for v in patched.spec.template.spec.volumes}
    assert volumes["cfg"].config_map.name == "cfg-v2" and volumes["tmp"].empty_dir is not None
    assert patched.metadata.generation == 2


def test_strategic_merge_patch_delete_directive(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _two_containers())
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "web", "env": [{"name": "A", "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment("web", ns, patch)
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["web"] and [e.name for e in containers[0].env] == ["B"]


def test_strategic_merge_null_deletes_and_metadata_merges(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, configmap("cfg", {"a": "1", "b": "2"}, {"x": "1", "y": "2"}))
    patched = core.patch_namespaced_config_map(
        "cfg", ns, {"metadata": {"labels": {"b": None, "c": "3"}}, "data": {"y": None}}
    )
    assert patched.metadata.labels == {"a": "1", "c": "3"} and patched.data == {"x": "1"}


def test_service_ports_merge_by_port(core: client.CoreV1Api, ns: str) -> None:
    service = {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]}}
    core.create_namespaced_service(ns, service)
    patched = core.patch_namespaced_service("svc", ns, {"spec": {"ports": [{"name": "https", "port": 443}]}})
    assert sorted(p.port for p in patched.spec.ports) == [80, 443]


def test_json_merge_patch_replaces_lists(dyn, apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _two_containers())
    resource = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "only:1"}]}}}}
    patched = resource.patch(name="web", namespace=ns, body=patch, content_type="application/merge-patch+json")
    assert [c.name for c in patched.spec.template.spec.containers] == ["only"]


def test_json_patch(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=1))
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/extra", "value": "yes"},
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "web"},
    ]
    patched = apps.patch_namespaced_deployment("web", ns, ops)
    assert patched.spec.replicas == 4 and patched.metadata.labels["extra"] == "yes"
    status, _ = api_error(
        lambda: apps.patch_namespaced_deployment("web", ns, [{"op": "test", "path": "/spec/replicas", "value": 1}])
    )
    assert status == 422


def test_patch_with_stale_resource_version_conflicts(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, configmap("cfg"))
    core.patch_namespaced_config_map("cfg", ns, {"data": {"key": "2"}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"key": "3"}}
    status, body = api_error(lambda: core.patch_namespaced_config_map("cfg", ns, stale))
    assert (status, body["reason"]) == (409, "Conflict")


def test_patch_of_missing_object_is_404_and_unknown_media_type_is_415(dyn, core: client.CoreV1Api, ns: str) -> None:
    assert api_error(lambda: core.patch_namespaced_config_map("ghost", ns, {"data": {}}))[0] == 404
    core.create_namespaced_config_map(ns, configmap("cfg"))
    resource = dyn.resources.get(api_version="v1", kind="ConfigMap")
    status, body = api_error(
        lambda: resource.patch(name="cfg", namespace=ns, body={"data": {}}, content_type="application/weird+json")
    )
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_merge_functions_directly() -> None:
    assert json_merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    merged = strategic_merge(
        {"spec": {"conditions": [{"type": "A", "status": "True"}]}},
        {"spec": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}},
    )
    assert merged == {"spec": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}}
    replaced = strategic_merge({"containers": [{"name": "a"}]}, {"containers": [{"name": "b"}, {"$patch": "replace"}]})
    assert replaced == {"containers": [{"name": "b"}]}
    with pytest.raises(PatchError, match="merged by 'name'"):
        strategic_merge({"containers": [{"name": "a"}]}, {"containers": [{"image": "x"}]})
