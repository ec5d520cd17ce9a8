"""The pure drift comparison of live objects with Git, with ignore rules (no servers)."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from drift_support import MANAGED, as_live, config_map, deployment

from delivery.drift_compare import ObjectDrift, compare_objects, field_differences, is_managed, quantity
from delivery.errors import InvalidInput
from delivery.field_paths import IgnoreRules
from delivery.objects import ObjectKey, object_key

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


def test_identity_and_server_owned_fields_of_a_manifest_are_never_compared():
    desired = {"apiVersion": "v1", "kind": "A", "status": {"phase": "Ready"},
               "metadata": {"name": "x", "namespace": "dev", "uid": "1", "resourceVersion": "1", "generation": 1,
                            "labels": {"a": "b"}},
               "data": {"k": "v"}}
    live = {"apiVersion": "v2", "kind": "B", "status": {"phase": "Failed"},
            "metadata": {"name": "y", "namespace": "other", "uid": "2", "resourceVersion": "9", "generation": 4,
                         "labels": {"a": "b"}},
            "data": {"k": "v"}}
    assert field_differences(desired, live) == []
    live["data"]["k"] = "w"
    live["metadata"]["labels"]["a"] = "c"
    assert field_differences(desired, live) == ["data.k", "metadata.labels.a"]


def test_metadata_is_compared_with_the_live_metadata_even_when_live_has_none():
    desired = {"metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"}}
    assert field_differences(desired, {"data": {"k": "v"}}) == ["metadata.labels"]
    assert field_differences(desired, {"data": {"k": "v"}, "metadata": None}) == ["metadata.labels"]
    assert field_differences({"metadata": "odd", "data": {"k": "v"}}, {"metadata": "odd", "data": {"k": "v"}}) == []


@pytest.mark.parametrize(
    "want,have,paths",
    [
        # a map Git sets must be there with what it holds; an empty one sets nothing
        ({"spec": {"x": {"a": "1"}}}, {"spec": {}}, ["spec.x"]),
        ({"spec": {"x": {"a": {"b": "1"}}}}, {"spec": {}}, ["spec.x"]),
        ({"spec": {"x": {"a": None, "b": [], "c": {}}}}, {"spec": {}}, []),
        ({"spec": {"x": None, "y": []}}, {"spec": {}}, []),
        ({"spec": {"x": "0"}}, {"spec": {}}, ["spec.x"]),
        ({"spec": {"x": 0}}, {"spec": {}}, ["spec.x"]),
        ({"spec": {"x": False}}, {"spec": {}}, ["spec.x"]),
        ({"spec": {"x": ["a"]}}, {"spec": {}}, ["spec.x"]),
        # a map against something else
        ({"spec": {"x": {"a": "1"}}}, {"spec": {"x": "str"}}, ["spec.x"]),
        ({"spec": {"x": {"a": "1"}}}, {"spec": {"x": None}}, ["spec.x"]),
        ({"spec": {"x": {}}}, {"spec": {"x": None}}, []),
        ({"spec": {"x": {}}}, {"spec": {"x": "str"}}, ["spec.x"]),
        ({"spec": {"x": {}}}, {"spec": {"x": []}}, ["spec.x"]),
        # a list against something else
        ({"spec": {"x": ["a"]}}, {"spec": {"x": "a"}}, ["spec.x"]),
        ({"spec": {"x": ["a"]}}, {"spec": {"x": None}}, ["spec.x"]),
        ({"spec": {"x": []}}, {"spec": {"x": None}}, []),
        ({"spec": {"x": []}}, {"spec": {"x": "a"}}, ["spec.x"]),
        ({"spec": {"x": []}}, {"spec": {"x": {}}}, ["spec.x"]),
        # a scalar against a map or a list
        ({"spec": {"x": "a"}}, {"spec": {"x": {"a": "1"}}}, ["spec.x"]),
        ({"spec": {"x": "a"}}, {"spec": {"x": ["a"]}}, ["spec.x"]),
        ({"spec": {"x": "a"}}, {"spec": "a"}, ["spec"]),
    ],
)
def test_what_a_field_git_sets_must_find_live(want, have, paths):
    assert field_differences(want, have) == paths


@pytest.mark.parametrize(
    "want,have,paths",
    [
        ({"spec": {"x": []}}, {"spec": {"x": []}}, []),
        ({"spec": {"x": []}}, {"spec": {"x": [{"name": "a"}]}}, ["spec.x"]),
        ({"spec": {"x": []}}, {"spec": {"x": ["a"]}}, ["spec.x"]),
        ({"spec": {"x": ["a", "b"]}}, {"spec": {"x": ["a"]}}, ["spec.x"]),
        ({"spec": {"x": ["a"]}}, {"spec": {"x": ["a", "b"]}}, ["spec.x"]),
        ({"spec": {"x": ["a", 1, None]}}, {"spec": {"x": ["a", 1, None]}}, []),
        ({"spec": {"x": [True]}}, {"spec": {"x": [1]}}, ["spec.x"]),
        ({"spec": {"x": [1]}}, {"spec": {"x": [True]}}, ["spec.x"]),
        ({"spec": {"x": [{"name": "a"}]}}, {"spec": {"x": ["a"]}}, ["spec.x[0]"]),
        ({"spec": {"x": [["a"], ["b"]]}}, {"spec": {"x": [["a"], ["c"]]}}, ["spec.x[1]"]),
        ({"spec": {"x": [{"name": "a"}, {"v": 1}]}}, {"spec": {"x": [{"name": "a"}, {"v": 2}]}}, ["spec.x[1].v"]),
        ({"spec": {"x": [{"a": 1}]}}, {"spec": {"x": [{"a": 1}, {"a": 2}]}}, ["spec.x"]),
        ({"spec": {"x": [{"port": 80, "name": "web"}]}}, {"spec": {"x": [{"port": 80, "name": "api"}]}},
         ["spec.x[api]", "spec.x[web]"]),
        ({"spec": {"x": [{"ip": "1.2.3.4", "port": 80}]}}, {"spec": {"x": [{"ip": "1.2.3.4", "port": 81}]}},
         ["spec.x[port=80]", "spec.x[port=81]"]),
        ({"spec": {"x": [{"mountPath": "/a", "name": "v"}]}}, {"spec": {"x": [{"mountPath": "/a", "name": "w"}]}},
         ["spec.x[v]", "spec.x[w]"]),
    ],
)
def test_lists_by_merge_key_position_or_value(want, have, paths):
    assert field_differences(want, have) == paths


@pytest.mark.parametrize(
    "want,have,same",
    [(True, 1, False), (1, True, False), (0, False, False), (False, 0, False), (True, True, True),
     (False, False, True), (1, 1.0, True), ("1", 1, False), (None, None, True)],
)
def test_booleans_are_never_numbers(want, have, same):
    assert field_differences({"spec": {"x": want, "y": "k"}}, {"spec": {"x": have, "y": "k"}}) == (
        [] if same or want is None else ["spec.x"])


def test_amounts_are_compared_by_value_only_under_resources_and_only_when_they_are_amounts():
    def limits(value):
        return {"spec": {"resources": {"limits": {"nvidia.com/gpu": value}}}}

    assert field_differences(limits("1000m"), limits("1")) == []
    assert field_differences(limits("one"), limits("two")) == ['spec.resources.limits["nvidia.com/gpu"]']
    assert field_differences(limits("2"), limits("one")) == ['spec.resources.limits["nvidia.com/gpu"]']
    assert field_differences({"spec": {"hard": {"pods": "1k"}}}, {"spec": {"hard": {"pods": "1000"}}}) == []
    assert field_differences({"spec": {"x": {"pods": "1k"}}}, {"spec": {"x": {"pods": "1000"}}}) == ["spec.x.pods"]


@pytest.mark.parametrize(
    "text,amount",
    [("500m", Decimal("0.5")), ("1Gi", Decimal(2**30)), ("2", Decimal(2)), ("1e3", Decimal(1000)),
     ("1E", Decimal(10**18)), (".5", Decimal("0.5")), ("12x", None), ("", None), (True, None),
     (" 2Mi ", Decimal(2 * 2**20)), ("1.5e-3", Decimal("0.0015")), ("-1k", Decimal(-1000)), (3, Decimal(3)),
     (0.25, Decimal("0.25")), (None, None), (Decimal(2), None), (["1"], None)],
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


def test_a_missing_field_or_item_is_not_drift_when_ignored():
    desired = deployment()
    live = as_live(desired)
    del live["spec"]["replicas"]
    del live["spec"]["template"]["spec"]["containers"][1]  # proxy
    assert field_differences(desired, live) == ["spec.replicas", "spec.template.spec.containers[proxy]"]
    assert field_differences(desired, live, ignore=["spec.replicas", "spec.template.spec.containers[proxy]"]) == []
    assert field_differences(desired, live, ignore=IgnoreRules(["spec.replicas"])) == [
        "spec.template.spec.containers[proxy]",
    ]


def test_a_rule_on_a_sibling_ignores_nothing_else():
    desired = deployment()
    live = as_live(desired)
    live["spec"]["replicas"] = 9
    del live["spec"]["template"]["spec"]["containers"][0]  # app
    live["spec"]["template"]["spec"]["containers"].append({"name": "extra"})
    rules = ["spec.paused", "spec.template.spec.containers[other]"]
    assert field_differences(desired, live, ignore=rules) == [
        "spec.replicas", "spec.template.spec.containers[app]", "spec.template.spec.containers[extra]",
    ]


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


def test_compare_objects_applies_the_ignore_rules_as_text_or_compiled():
    desired = [deployment(), config_map()]
    live = [as_live(deployment(replicas=5)), as_live(config_map(data={"greeting": "changed"}))]
    changed = [("changed", "ConfigMap dev/web-config", ("data.greeting",)),
               ("changed", "Deployment dev/web", ("spec.replicas",))]
    assert [(d.change, str(d.object), d.fields) for d in compare_objects(desired, live, namespace="dev")] == changed
    assert [str(d) for d in compare_objects(desired, live, namespace="dev", ignore=["spec.replicas"])] == [
        "changed ConfigMap dev/web-config: data.greeting",
    ]
    assert compare_objects(desired, live, namespace="dev", ignore=IgnoreRules(["spec.replicas", "data"])) == []


def test_an_object_keeps_its_own_namespace():
    assert object_key(config_map(), namespace="dev").namespace == "dev"
    elsewhere = config_map()
    elsewhere["metadata"]["namespace"] = "other"
    assert object_key(elsewhere, namespace="dev").namespace == "other"
    assert object_key(elsewhere).namespace == "other"
    assert object_key(config_map()).namespace is None
    drift = compare_objects([elsewhere], [as_live(config_map())], namespace="dev")
    assert [str(d) for d in drift] == ["extra ConfigMap dev/web-config", "missing ConfigMap other/web-config"]


def test_a_live_object_without_a_namespace_takes_the_environments_too():
    live = as_live(config_map())
    del live["metadata"]["namespace"]
    assert compare_objects([config_map()], [live], namespace="dev") == []


def test_cluster_scoped_kinds_have_no_namespace_whatever_the_manifest_says():
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader", "namespace": "dev", "labels": dict(MANAGED)}}
    key = object_key(role, namespace="dev")
    assert key.namespace is None and str(key) == "ClusterRole reader"
    assert key.identity == ("rbac.authorization.k8s.io", "ClusterRole", None, "reader")


def test_the_group_is_what_comes_before_the_version():
    assert ObjectKey(api_version="apps/v1", kind="Deployment", name="web").group == "apps"
    assert ObjectKey(api_version="v1", kind="ConfigMap", name="web").group == ""


def test_objects_of_another_group_are_other_objects():
    desired = deployment()
    live = as_live(desired)
    live["apiVersion"] = "extensions/v1beta1"
    assert [(d.change, d.object.api_version) for d in compare_objects([desired], [live], namespace="dev")] == [
        ("extra", "extensions/v1beta1"), ("missing", "apps/v1"),
    ]


def test_every_object_after_a_missing_one_is_still_compared():
    desired = [config_map("gone"), deployment()]
    drift = compare_objects(desired, [as_live(deployment(image="reg/web:2"))], namespace="dev")
    assert [str(d) for d in drift] == [
        "missing ConfigMap dev/gone", "changed Deployment dev/web: spec.template.spec.containers[app].image",
    ]


def test_the_drift_is_sorted_by_kind_namespace_name_and_change():
    def in_namespace(name: str, namespace: str | None) -> dict:
        obj = config_map(name)
        if namespace:
            obj["metadata"]["namespace"] = namespace
        return obj

    desired = [deployment(), in_namespace("z", "B"), in_namespace("a", "C"), in_namespace("m", None)]
    drift = compare_objects(desired, [], namespace=None)
    assert [str(d.object) for d in drift] == ["ConfigMap m", "ConfigMap B/z", "ConfigMap C/a", "Deployment dev/web"]


def test_an_object_drift_reads_as_one_line():
    key = ObjectKey(api_version="v1", kind="ConfigMap", namespace="dev", name="web")
    assert str(ObjectDrift(object=key, change="missing")) == "missing ConfigMap dev/web"
    assert str(ObjectDrift(object=key, change="changed", fields=("data.a", "data.b"))) == (
        "changed ConfigMap dev/web: data.a, data.b")


@pytest.mark.parametrize(
    "obj",
    [{"kind": "ConfigMap", "metadata": {"name": "x"}}, {"apiVersion": "v1", "metadata": {"name": "x"}},
     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, {"apiVersion": "v1", "kind": "ConfigMap"}],
)
def test_an_object_needs_api_version_kind_and_name(obj):
    with pytest.raises(InvalidInput) as info:
        object_key(obj, namespace="dev")
    assert str(info.value) == "a manifest object needs apiVersion, kind and metadata.name"


def test_live_objects_without_labels_or_metadata_are_not_managed():
    assert not is_managed({"apiVersion": "v1", "kind": "ConfigMap"})
    assert not is_managed({"metadata": {"name": "x"}})
    assert not is_managed({"metadata": {"labels": None}})
    assert is_managed({"metadata": {"labels": dict(MANAGED)}})
    assert compare_objects([], [{"apiVersion": "v1", "kind": "ConfigMap"}], namespace="dev") == []
