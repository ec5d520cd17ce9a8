"""Server-side apply: creation, field ownership in managedFields, removal of dropped fields, conflicts."""

from __future__ import annotations

import pytest
from k8s_helpers import api_error, configmap, deployment, wait_for
from kubernetes import client

APPLY = "application/apply-patch+yaml"


@pytest.fixture
def configmaps(dyn):
    return dyn.resources.get(api_version="v1", kind="ConfigMap")


@pytest.fixture
def deployments(dyn):
    return dyn.resources.get(api_version="apps/v1", kind="Deployment")


def _owners(obj) -> dict[tuple[str, str], dict]:
    return {(e["manager"], e["operation"]): e for e in obj.to_dict()["metadata"].get("managedFields", [])}


def test_apply_creates_a_missing_object_and_records_the_manager(deployments, ns: str) -> None:
    applied = deployments.server_side_apply(body=deployment("web"), name="web", namespace=ns, field_manager="gitops")
    assert applied.metadata.generation == 1 and applied.metadata.uid
    owners = _owners(applied)
    entry = owners[("gitops", "Apply")]
    assert entry["apiVersion"] == "apps/v1" and entry["fieldsType"] == "FieldsV1"
    fields = entry["fieldsV1"]
    assert "f:replicas" in fields["f:spec"] and "f:labels" in fields["f:metadata"]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert {"f:image", "f:name", "."} <= set(container)
    assert "f:progressDeadlineSeconds" not in fields["f:spec"]  # defaults are owned by nobody


def test_apply_with_the_typed_client_returns_201_then_200(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    cfg = configmap("cfg")
    first, first_code, _ = core.patch_namespaced_config_map_with_http_info(
        "cfg", ns, cfg, field_manager="gitops", _content_type=APPLY
    )
    second, second_code, _ = core.patch_namespaced_config_map_with_http_info(
        "cfg", ns, cfg, field_manager="gitops", _content_type=APPLY
    )
    assert (first_code, second_code) == (201, 200)
    assert second.metadata.resource_version == first.metadata.resource_version  # a no-op apply changes nothing


def test_an_apply_that_changes_nothing_keeps_the_resource_version_and_a_change_bumps_it(deployments, ns: str) -> None:
    deployments.server_side_apply(body=deployment("web"), name="web", namespace=ns, field_manager="gitops")
    # the kubelet writes status after the apply (a real change of its own): wait until the rollout is done
    ready = wait_for(lambda: (d := deployments.get(name="web", namespace=ns)).status.readyReplicas == 2 and d)
    settled = ready.metadata.resourceVersion

    same = deployments.server_side_apply(body=deployment("web"), name="web", namespace=ns, field_manager="gitops")

    assert same.metadata.resourceVersion == settled and same.metadata.generation == ready.metadata.generation
    assert deployments.get(name="web", namespace=ns).metadata.resourceVersion == settled
    changed = deployments.server_side_apply(body=deployment("web", image="nginx:1.28"), name="web", namespace=ns,
                                            field_manager="gitops")
    assert int(changed.metadata.resourceVersion) > int(settled)
    assert changed.metadata.generation == ready.metadata.generation + 1
    assert changed.spec.template.spec.containers[0].image == "nginx:1.28"


def test_apply_requires_a_field_manager_and_kind(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    status, body = api_error(
        lambda: apps.patch_namespaced_deployment("web", ns, deployment("web"), _content_type=APPLY)
    )
    assert status == 400 and "fieldManager" in body["message"]
    bare = {"metadata": {"name": "web"}, "spec": deployment("web")["spec"]}
    status, _ = api_error(
        lambda: apps.patch_namespaced_deployment("web", ns, bare, field_manager="gitops", _content_type=APPLY)
    )
    assert status == 400


def test_apply_removes_fields_the_manager_stopped_applying(configmaps, core: client.CoreV1Api, ns: str) -> None:
    configmaps.server_side_apply(
        body=configmap("cfg", {"keep": "1", "drop": "1"}, {"a": "1", "b": "2"}), namespace=ns, field_manager="gitops"
    )
    core.patch_namespaced_config_map("cfg", ns, {"metadata": {"labels": {"owner": "ops"}}}, field_manager="ops")
    again = configmaps.server_side_apply(
        body=configmap("cfg", {"keep": "1"}, {"a": "1"}), namespace=ns, field_manager="gitops"
    )
    assert again.metadata.labels.to_dict() == {"keep": "1", "owner": "ops"}
    assert again.data.to_dict() == {"a": "1"}
    owners = _owners(again)
    assert set(owners) == {("gitops", "Apply"), ("ops", "Update")}
    assert set(owners[("ops", "Update")]["fieldsV1"]["f:metadata"]["f:labels"]) == {"f:owner"}


def test_apply_removes_a_dropped_list_item_by_key(deployments, ns: str) -> None:
    manifest = deployment("web")
    manifest["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy:1"})
    deployments.server_side_apply(body=manifest, namespace=ns, field_manager="gitops")
    applied = deployments.server_side_apply(body=deployment("web"), namespace=ns, field_manager="gitops")
    assert [c.name for c in applied.spec.template.spec.containers] == ["web"]


def test_conflicting_apply_is_409_unless_forced(deployments, ns: str) -> None:
    deployments.server_side_apply(body=deployment("web", replicas=2), namespace=ns, field_manager="gitops")
    status, body = api_error(
        lambda: deployments.server_side_apply(body=deployment("web", replicas=5), namespace=ns, field_manager="other")
    )
    assert (status, body["reason"]) == (409, "Conflict")
    assert 'conflict with "gitops"' in body["message"] and ".spec.replicas" in body["message"]
    forced = deployments.server_side_apply(
        body=deployment("web", replicas=5), namespace=ns, field_manager="other", force_conflicts=True
    )
    assert forced.spec.replicas == 5
    owners = _owners(forced)
    assert "f:replicas" not in owners[("gitops", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" in owners[("other", "Apply")]["fieldsV1"]["f:spec"]


def test_apply_conflicts_with_an_update_manager_and_agreeing_values_are_shared(
    deployments, apps: client.AppsV1Api, ns: str
) -> None:
    deployments.server_side_apply(body=deployment("web", replicas=2), namespace=ns, field_manager="gitops")
    apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 7}}, field_manager="kubectl-edit")
    status, body = api_error(
        lambda: deployments.server_side_apply(body=deployment("web", replicas=2), namespace=ns, field_manager="gitops")
    )
    assert status == 409 and "kubectl-edit" in body["message"]
    shared = deployments.server_side_apply(body=deployment("web", replicas=7), namespace=ns, field_manager="other")
    assert shared.spec.replicas == 7
    reverted = deployments.server_side_apply(
        body=deployment("web", replicas=2), namespace=ns, field_manager="gitops", force_conflicts=True
    )
    assert reverted.spec.replicas == 2


def test_apply_ignores_status_and_server_metadata(deployments, ns: str) -> None:
    manifest = deployment("web")
    manifest["status"] = {"replicas": 99}
    manifest["metadata"]["uid"] = "forged"
    applied = deployments.server_side_apply(body=manifest, namespace=ns, field_manager="gitops")
    assert applied.metadata.uid != "forged"
    assert (applied.status.replicas or 0) != 99


def test_apply_into_a_missing_namespace_is_404(deployments) -> None:
    status, _ = api_error(
        lambda: deployments.server_side_apply(body=deployment("web"), namespace="ghost", field_manager="g")
    )
    assert status == 404
