"""Lists: label and field selectors, all-namespaces lists, list metadata and pagination."""

from __future__ import annotations

import json

import pytest
from k8s_helpers import api_error, configmap, deployment
from kubernetes import client


@pytest.fixture
def labelled(core: client.CoreV1Api, ns: str) -> str:
    objects = {
        "a": {"app": "shop", "tier": "web"},
        "b": {"app": "shop", "tier": "db"},
        "c": {"app": "blog", "tier": "web"},
        "d": {"app": "blog"},
        "e": {},
    }
    for name, labels in objects.items():
        core.create_namespaced_config_map(ns, configmap(name, labels))
    return ns


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=shop", "ab"),
        ("app==shop", "ab"),
        ("app!=shop", "cde"),
        ("app=shop,tier=web", "a"),
        ("tier in (web,db)", "abc"),
        ("tier in (web, db),app notin (blog)", "ab"),
        ("tier notin (web)", "bde"),
        ("tier", "abc"),
        ("!tier", "de"),
        ("app,!tier", "d"),
        ("app in (shop),tier", "ab"),
    ],
)
def test_label_selectors(core: client.CoreV1Api, labelled: str, selector: str, expected: str) -> None:
    items = core.list_namespaced_config_map(labelled, label_selector=selector).items
    assert "".join(sorted(i.metadata.name for i in items)) == expected


def test_malformed_label_selector_is_400(core: client.CoreV1Api, labelled: str) -> None:
    status, body = api_error(lambda: core.list_namespaced_config_map(labelled, label_selector="app in shop)"))
    assert (status, body["reason"]) == (400, "BadRequest")


def test_field_selectors(core: client.CoreV1Api, labelled: str) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("other", configmap("a"))
    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a").items
    assert sorted(i.metadata.namespace for i in by_name) == ["other", labelled]
    by_ns = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={labelled}").items
    assert len(by_ns) == 5
    both = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a,metadata.namespace!=other").items
    assert [(i.metadata.namespace, i.metadata.name) for i in both] == [(labelled, "a")]
    mixed = core.list_namespaced_config_map(labelled, field_selector="metadata.name!=a", label_selector="app=shop")
    assert [i.metadata.name for i in mixed.items] == ["b"]
    phase = core.list_namespace(field_selector="status.phase=Active").items
    assert labelled in {n.metadata.name for n in phase}


def test_list_carries_kind_api_version_and_resource_version(apps: client.AppsV1Api, api, ns: str) -> None:
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    raw = api.call_api(*api.param_serialize("GET", f"/apis/apps/v1/namespaces/{ns}/deployments"))
    raw.read()
    body = json.loads(raw.data)
    assert (body["kind"], body["apiVersion"]) == ("DeploymentList", "apps/v1")
    assert int(body["metadata"]["resourceVersion"]) >= int(created.metadata.resource_version)


def test_all_namespaces_list(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    core.create_namespace({"metadata": {"name": "second"}})
    apps.create_namespaced_deployment(ns, deployment("one"))
    apps.create_namespaced_deployment("second", deployment("two"))
    items = apps.list_deployment_for_all_namespaces().items
    assert sorted((d.metadata.namespace, d.metadata.name) for d in items) == [("second", "two"), (ns, "one")]
    selected = apps.list_deployment_for_all_namespaces(label_selector="app=two").items
    assert [d.metadata.name for d in selected] == ["two"]


def test_pagination_with_limit_and_continue(core: client.CoreV1Api, ns: str) -> None:
    for i in range(7):
        core.create_namespaced_config_map(ns, configmap(f"cm-{i}"))
    names, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        names += [i.metadata.name for i in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"cm-{i}" for i in range(7)] and pages == 3
