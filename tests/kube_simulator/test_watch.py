"""Watch: the official Watch helper and the DynamicClient stream ADDED/MODIFIED/DELETED events."""

from __future__ import annotations

import threading

import httpx
from k8s_helpers import configmap, wait_for
from kubernetes import client, watch


def _collect(stream, events: list, stop_after: int, ready: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        for event in stream:
            events.append((event["type"], event["object"]))
            if len(events) >= stop_after:
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_streams_changes_from_a_resource_version(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, configmap("before"))
    since = core.list_namespaced_config_map(ns).metadata.resource_version
    w = watch.Watch()
    events: list = []
    stream = w.stream(core.list_namespaced_config_map, ns, resource_version=since, timeout_seconds=20)
    thread = _collect(stream, events, stop_after=3)
    core.create_namespaced_config_map(ns, configmap("cfg"))
    core.patch_namespaced_config_map("cfg", ns, {"data": {"key": "v2"}})
    core.delete_namespaced_config_map("cfg", ns)
    thread.join(timeout=20)
    w.stop()
    assert [(kind, obj.metadata.name) for kind, obj in events] == [
        ("ADDED", "cfg"),
        ("MODIFIED", "cfg"),
        ("DELETED", "cfg"),
    ]
    assert events[1][1].data == {"key": "v2"}
    versions = [int(obj.metadata.resource_version) for _, obj in events]
    assert versions == sorted(versions) and versions[0] > int(since)


def test_watch_without_resource_version_starts_with_current_objects(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, configmap("a", {"team": "x"}))
    core.create_namespaced_config_map(ns, configmap("b", {"team": "y"}))
    w = watch.Watch()
    events: list = []
    thread = _collect(
        w.stream(core.list_namespaced_config_map, ns, label_selector="team=x", timeout_seconds=20), events, 2
    )
    wait_for(lambda: events)
    core.create_namespaced_config_map(ns, configmap("c", {"team": "y"}))  # filtered out by the selector
    core.create_namespaced_config_map(ns, configmap("d", {"team": "x"}))
    thread.join(timeout=20)
    w.stop()
    assert [(kind, obj.metadata.name) for kind, obj in events] == [("ADDED", "a"), ("ADDED", "d")]


def test_watch_ends_at_timeout_seconds(core: client.CoreV1Api, ns: str) -> None:
    since = core.list_namespaced_config_map(ns).metadata.resource_version
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=since, timeout_seconds=1))
    assert events == []


def test_watch_across_namespaces_and_with_the_dynamic_client(dyn, core: client.CoreV1Api, ns: str) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    since = core.list_config_map_for_all_namespaces().metadata.resource_version
    resource = dyn.resources.get(api_version="v1", kind="ConfigMap")
    events: list = []
    thread = _collect(resource.watch(resource_version=since, timeout=20), events, 2)
    core.create_namespaced_config_map(ns, configmap("one"))
    core.create_namespaced_config_map("other", configmap("two"))
    thread.join(timeout=20)
    assert [(kind, obj.metadata.namespace) for kind, obj in events] == [("ADDED", ns), ("ADDED", "other")]


def test_watch_from_an_expired_resource_version_reports_410(sim, core: client.CoreV1Api, ns: str) -> None:
    store = sim.store
    with store.lock:
        store._oldest_rv = store.rv  # as if the event log had been trimmed
    url = core.api_client.configuration.host + f"/api/v1/namespaces/{ns}/configmaps"
    with httpx.stream("GET", url, params={"watch": "true", "resourceVersion": "1"}, timeout=10) as response:
        lines = [line for line in response.iter_lines() if line]
    assert '"code":410' in lines[0] and '"type":"ERROR"' in lines[0]


def test_a_selected_watch_sees_objects_enter_and_leave_the_selection(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, configmap("cfg", {"team": "y"}))
    since = core.list_namespaced_config_map(ns).metadata.resource_version
    w = watch.Watch()
    events: list = []
    stream = w.stream(
        core.list_namespaced_config_map, ns, label_selector="team=x", resource_version=since, timeout_seconds=20
    )
    thread = _collect(stream, events, 3)
    core.patch_namespaced_config_map("cfg", ns, {"metadata": {"labels": {"team": "x"}}})
    core.patch_namespaced_config_map("cfg", ns, {"data": {"key": "2"}})
    core.patch_namespaced_config_map("cfg", ns, {"metadata": {"labels": {"team": "z"}}})
    thread.join(timeout=20)
    w.stop()
    assert [kind for kind, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
