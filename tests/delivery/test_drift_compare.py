"""The pure drift comparison, ignore rules, sync-state moves and their persistence (no servers)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from delivery.drift import DriftMode, DriftReport, DriftSettings
from delivery.drift_compare import compare_objects, field_differences, quantity
from delivery.errors import InvalidInput
from delivery.events import EventName
from delivery.field_ownership import dropped_fields
from delivery.field_paths import IgnoreRules, format_path, parse_path
from delivery.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from delivery.sync_state import SyncState, next_status
from delivery.sync_state_store import SyncStateStore

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "app.kubernetes.io/name": "web"}


def deployment(name: str = "web", image: str = "reg/web:1", replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "dev", "labels": dict(MANAGED)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}],
                         "env": [{"name": "MODE", "value": "dev"}]},
                        {"name": "proxy", "image": "reg/proxy:1"},
                    ]
                },
            },
        },
    }


def config_map(name: str = "web-config", data: dict | None = None, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": dict(MANAGED if labels is None else labels)},
        "data": data or {"greeting": "hello"},
    }


def as_live(obj: dict) -> dict:
    """What a server returns: the object plus metadata, defaults and status it fills in."""
    live = copy.deepcopy(obj)
    meta = live["metadata"]
    meta.setdefault("namespace", "dev")
    meta.update(uid="u-1", resourceVersion="42", generation=3, creationTimestamp="2026-11-27T00:00:00Z",
                managedFields=[{"manager": "gitops-delivery"}])
    meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "3"
    if live["kind"] == "Deployment":
        live["spec"]["strategy"] = {"type": "RollingUpdate"}
        live["spec"]["template"]["spec"]["restartPolicy"] = "Always"
        for container in live["spec"]["template"]["spec"]["containers"]:
            container["imagePullPolicy"] = "IfNotPresent"
        live["status"] = {"readyReplicas": 2}
    return live


# --------------------------------------------------------------------------- field comparison


def test_server_metadata_defaults_and_status_are_not_drift():
    desired = deployment()
    assert field_differences(desired, as_live(desired)) == []


def test_changed_image_is_reported_with_the_container_name_path():
    desired = deployment()
    live = as_live(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "reg/web:hacked"
    assert field_differences(desired, live) == ["spec.template.spec.containers[app].image"]


def test_reordered_named_list_is_not_drift_but_added_and_removed_items_are():
    desired = deployment()
    live = as_live(desired)
    containers = live["spec"]["template"]["spec"]["containers"]
    containers.reverse()
    assert field_differences(desired, live) == []
    containers.append({"name": "sidecar", "image": "evil"})
    del containers[0]  # proxy (reversed order)
    assert field_differences(desired, live) == [
        "spec.template.spec.containers[proxy]", "spec.template.spec.containers[sidecar]",
    ]


def test_items_matched_by_other_merge_keys_and_positions():
    desired = deployment()
    live = as_live(desired)
    live["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 9090}]
    assert field_differences(desired, live) == [
        "spec.template.spec.containers[app].ports[containerPort=8080]",
        "spec.template.spec.containers[app].ports[containerPort=9090]",
    ]
    want = {"spec": {"rules": [{"host": "a"}, {"host": "b"}]}}
    assert field_differences(want, {"spec": {"rules": [{"host": "a"}, {"host": "c"}]}}) == ["spec.rules[1].host"]
    assert field_differences(want, {"spec": {"rules": [{"host": "a"}]}}) == ["spec.rules"]


def test_scalar_lists_compare_in_order_and_types_matter():
    want = {"spec": {"args": ["--a", "--b"], "flag": True, "port": 80}}
    assert field_differences(want, {"spec": {"args": ["--b", "--a"], "flag": True, "port": 80}}) == ["spec.args"]
    assert field_differences(want, {"spec": {"args": ["--a", "--b"], "flag": 1, "port": "80"}}) == [
        "spec.flag", "spec.port",
    ]


def test_labels_with_dots_get_quoted_paths_and_missing_fields_are_drift():
    desired = config_map()
    live = as_live(desired)
    live["metadata"]["labels"]["app.kubernetes.io/name"] = "other"
    del live["data"]["greeting"]
    assert field_differences(desired, live) == ['data.greeting', 'metadata.labels["app.kubernetes.io/name"]']


def test_fields_only_live_has_are_defaults_not_drift_and_null_means_unset():
    desired = {"metadata": {"annotations": None}, "data": {"a": "1"}, "spec": {"x": {}}}
    assert field_differences(desired, {"metadata": {"annotations": {"other": "z"}}, "data": {"a": "1", "b": "2"}}) == []


def test_resource_quantities_in_canonical_form_are_not_drift_but_other_amounts_are():
    want = {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"},
                                                                    "requests": {"cpu": 1}}}]}}
    live = copy.deepcopy(want)
    live["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1"}}
    assert field_differences(want, live) == []
    live["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "600m"
    assert field_differences(want, live) == ["spec.containers[app].resources.limits.cpu"]
    assert field_differences({"data": {"x": "1"}}, {"data": {"x": "1.0"}}) == ["data.x"]  # only under resources


@pytest.mark.parametrize(
    "text,amount",
    [("500m", Decimal("0.5")), ("1Gi", Decimal(2**30)), ("2", Decimal(2)), ("1e3", Decimal(1000)),
     ("1E", Decimal(10**18)), (".5", Decimal("0.5")), ("12x", None), ("", None), (True, None)],
)
def test_quantities(text, amount):
    assert quantity(text) == amount


# --------------------------------------------------------------------------- ignore rules


def test_ignore_rules_exact_prefix_and_wildcards():
    desired = deployment()
    live = as_live(desired)
    live["spec"]["replicas"] = 7
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "x"
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "y"
    assert field_differences(desired, live, ignore=["spec.replicas"]) == [
        "spec.template.spec.containers[app].image", "spec.template.spec.containers[proxy].image",
    ]
    assert field_differences(desired, live, ignore=["spec.replicas", "spec.template.spec.containers[*].image"]) == []
    assert field_differences(desired, live, ignore=["spec"]) == []
    assert field_differences(desired, live, ignore=["*.replicas", "spec.template.spec.containers[proxy]"]) == [
        "spec.template.spec.containers[app].image",
    ]


def test_ignore_rule_for_an_added_list_item():
    desired = deployment()
    live = as_live(desired)
    live["spec"]["template"]["spec"]["containers"].append({"name": "istio-proxy", "image": "istio"})
    assert field_differences(desired, live, ignore=["spec.template.spec.containers[istio-proxy]"]) == []


@pytest.mark.parametrize(
    "text,segments",
    [
        ("spec.replicas", ("spec", "replicas")),
        ("spec.template.spec.containers[app].image", ("spec", "template", "spec", "containers", "[app]", "image")),
        ('metadata.labels["app.kubernetes.io/name"]', ("metadata", "labels", "app.kubernetes.io/name")),
        ("spec.ports[port=80]", ("spec", "ports", "[port=80]")),
        ("spec.*.x[*]", ("spec", "*", "x", "[*]")),
    ],
)
def test_paths_parse_and_format_round_trip(text, segments):
    assert parse_path(text) == segments
    assert format_path(segments) == text


@pytest.mark.parametrize("bad", ["", "  ", ".spec", "spec..replicas", "spec[unclosed", "spec replicas"])
def test_bad_ignore_rules_are_rejected_with_the_rule(bad):
    with pytest.raises(InvalidInput):
        IgnoreRules([bad])


# --------------------------------------------------------------------------- settings


def test_drift_settings_defaults():
    settings = DriftSettings.parse(None, environment="dev")
    assert settings.mode is DriftMode.RECONCILE and settings.ignore == () and settings.degraded_after == 3


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"mode": "sometimes"}, "environments.prod.drift.mode"),
        ({"degraded_after": 0}, "environments.prod.drift.degraded_after"),
        ({"ignored": ["spec.replicas"]}, "environments.prod.drift.ignored"),
        ({"ignore": ["spec..x"]}, "environments.prod.drift.ignore"),
    ],
)
def test_bad_drift_settings_name_the_field(raw, field):
    with pytest.raises(InvalidInput) as info:
        DriftSettings.parse(raw, environment="prod")
    assert field in str(info.value)


# --------------------------------------------------------------------------- objects


def test_missing_extra_changed_objects_and_unmanaged_ones_are_never_reported():
    desired = [deployment(), config_map(), config_map("gone")]
    live = [as_live(deployment(image="reg/web:2")), as_live(config_map()), as_live(config_map("stray")),
            as_live(config_map("someone-elses", labels={"team": "other"}))]
    drift = compare_objects(desired, live, namespace="dev")
    assert [(d.change, str(d.object), d.fields) for d in drift] == [
        ("missing", "ConfigMap dev/gone", ()),
        ("extra", "ConfigMap dev/stray", ()),
        ("changed", "Deployment dev/web", ("spec.template.spec.containers[app].image",)),
    ]


def test_manifest_without_namespace_takes_the_environments():
    desired = [config_map()]  # no namespace in Git
    assert compare_objects(desired, [as_live(config_map())], namespace="dev") == []


def test_api_version_of_the_same_group_matches():
    desired = deployment()
    live = as_live(desired)
    live["apiVersion"] = "apps/v1beta2"
    assert compare_objects([desired], [live], namespace="dev") == []


def test_manifest_without_a_name_is_bad_input():
    with pytest.raises(InvalidInput, match="metadata.name"):
        compare_objects([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}], [], namespace="dev")


# --------------------------------------------------------------------------- sync state


def _walk_states(outcomes, *, degraded_after=3):
    status, seen = None, []
    for found, remaining in outcomes:
        status, events = next_status(status, environment="dev", revision="abc", found=found, remaining=remaining,
                                     degraded_after=degraded_after)
        seen.append((status.state, status.reason, status.consecutive_drift, events))
    return seen


def applied_by(manager: str, fields: dict, *, operation: str = "Apply") -> dict:
    """A live object whose managedFields say ``manager`` applied ``fields`` (FieldsV1)."""
    return {"metadata": {"managedFields": [{"manager": manager, "operation": operation, "apiVersion": "apps/v1",
                                            "fieldsType": "FieldsV1", "fieldsV1": fields}]}}


def test_dropped_fields_are_the_owned_fields_git_no_longer_sets():
    owned = {
        "f:metadata": {"f:labels": {"f:team": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            'k:{"name":"app"}': {".": {}, "f:name": {}, "f:image": {},
                                 "f:ports": {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}}}},
            'k:{"name":"sidecar"}': {".": {}, "f:name": {}}}}}},
    }
    live = applied_by("gitops-delivery", owned)
    desired = deployment()
    desired["metadata"]["labels"]["team"] = "a"

    # the port's protocol is the server's default, not a field Git dropped; the sidecar is gone from Git
    assert dropped_fields(desired, live, manager="gitops-delivery") == ["spec.template.spec.containers[sidecar]"]
    desired["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 9090}]
    assert "spec.template.spec.containers[app].ports[containerPort=8080,protocol=TCP]" in dropped_fields(
        desired, live, manager="gitops-delivery")
    del desired["metadata"]["labels"]["team"], desired["spec"]["replicas"]
    assert "metadata.labels.team" in dropped_fields(desired, live, manager="gitops-delivery")
    assert "spec.replicas" in dropped_fields(desired, live, manager="gitops-delivery")


def test_no_dropped_fields_when_git_sets_every_owned_one_and_none_when_never_applied():
    owned = {"f:data": {"f:greeting": {}}, "f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {}}}}
    assert dropped_fields(config_map(), applied_by("gitops-delivery", owned), manager="gitops-delivery") == []
    assert dropped_fields(config_map(), applied_by("kubectl", owned), manager="gitops-delivery") is None
    assert dropped_fields(config_map(), applied_by("gitops-delivery", owned, operation="Update"),
                          manager="gitops-delivery") is None
    assert dropped_fields(config_map(), {"metadata": {}}, manager="gitops-delivery") is None


def test_reconciled_drift_that_keeps_coming_back_degrades_after_n_checks_then_recovers():
    seen = _walk_states([(0, 0), (1, 0), (1, 0), (1, 0), (1, 0), (0, 0)])
    assert seen == [
        (SyncState.SYNCED, "InSync", 0, []),
        (SyncState.SYNCED, "Reconciled", 1, [EventName.DRIFT_DETECTED]),
        (SyncState.SYNCED, "Reconciled", 2, [EventName.DRIFT_DETECTED]),
        (SyncState.DEGRADED, "PersistentDrift", 3, [EventName.DRIFT_DETECTED, EventName.SYNC_DEGRADED]),
        (SyncState.DEGRADED, "PersistentDrift", 4, [EventName.DRIFT_DETECTED]),
        (SyncState.SYNCED, "InSync", 0, [EventName.SYNC_RECOVERED]),
    ]


def test_detected_drift_is_out_of_sync_and_a_clean_check_resets_the_count():
    seen = _walk_states([(2, 2), (0, 0), (2, 2)], degraded_after=2)
    assert [s[:3] for s in seen] == [
        (SyncState.OUT_OF_SYNC, "DriftDetected", 1),
        (SyncState.SYNCED, "InSync", 0),
        (SyncState.OUT_OF_SYNC, "DriftDetected", 1),
    ]
    assert seen[1][3] == [EventName.SYNC_RECOVERED]


def test_failed_reconcile_is_out_of_sync_with_the_error():
    status, events = next_status(None, environment="dev", revision="abc", found=1, remaining=1,
                                 reconcile_error="409 conflict", detail="changed Deployment dev/web")
    assert status.state is SyncState.OUT_OF_SYNC and status.reason == "ReconcileFailed"
    assert "409 conflict" in status.message and "Deployment dev/web" in status.message
    assert events == [EventName.DRIFT_DETECTED]


def test_since_keeps_the_time_the_state_was_entered():
    t0 = datetime(2026, 11, 27, tzinfo=UTC)
    first, _ = next_status(None, environment="dev", revision="a", found=0, remaining=0, now=t0)
    second, _ = next_status(first, environment="dev", revision="a", found=0, remaining=0, now=t0 + timedelta(minutes=5))
    assert second.since == t0 and second.checked_at == t0 + timedelta(minutes=5)


def test_store_keeps_current_state_and_appends_checks(ledger):
    store = SyncStateStore(ledger.engine)
    assert store.get("dev") is None
    report = DriftReport(environment="dev", revision="abc", mode=DriftMode.DETECT, desired_objects=1, live_objects=1)
    first, _ = next_status(None, environment="dev", revision="abc", found=1, remaining=1)
    store.record(report, first)
    second, _ = next_status(first, environment="dev", revision="abc", found=0, remaining=0)
    store.record(report, second)
    again = SyncStateStore(ledger.engine)  # a second process sees the same rows
    assert again.get("dev") == second
    assert [s.environment for s in again.all()] == ["dev"]
    assert [c["state"] for c in again.checks("dev")] == ["Synced", "OutOfSync"]
