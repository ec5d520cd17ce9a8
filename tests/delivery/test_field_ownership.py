"""The fields Git dropped since the last server-side apply, read from managedFields (pure, no servers)."""

from __future__ import annotations

import pytest
from drift_support import config_map, deployment

from delivery.field_ownership import dropped_fields

MANAGER = "gitops-delivery"


def applied_by(manager: str, fields: dict, *, operation: str = "Apply", **entry: str) -> dict:
    """A live object whose managedFields say ``manager`` applied ``fields`` (FieldsV1)."""
    return {"metadata": {"managedFields": [{"manager": manager, "operation": operation, "apiVersion": "apps/v1",
                                            "fieldsType": "FieldsV1", "fieldsV1": fields, **entry}]}}


def test_dropped_fields_are_the_owned_fields_git_no_longer_sets():
    owned = {
        "f:metadata": {"f:labels": {"f:team": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            'k:{"name":"app"}': {".": {}, "f:name": {}, "f:image": {},
                                 "f:ports": {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}}}},
            'k:{"name":"sidecar"}': {".": {}, "f:name": {}}}}}},
    }
    live = applied_by(MANAGER, owned)
    desired = deployment()
    desired["metadata"]["labels"]["team"] = "a"

    # the port's protocol is the server's default, not a field Git dropped; the sidecar is gone from Git
    assert dropped_fields(desired, live, manager=MANAGER) == ["spec.template.spec.containers[sidecar]"]
    desired["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 9090}]
    assert dropped_fields(desired, live, manager=MANAGER) == [
        "spec.template.spec.containers[app].ports[containerPort=8080,protocol=TCP]",
        "spec.template.spec.containers[sidecar]",
    ]
    del desired["metadata"]["labels"]["team"], desired["spec"]["replicas"]
    assert dropped_fields(desired, live, manager=MANAGER) == [
        "metadata.labels.team", "spec.replicas",
        "spec.template.spec.containers[app].ports[containerPort=8080,protocol=TCP]",
        "spec.template.spec.containers[sidecar]",
    ]


def test_no_dropped_fields_when_git_sets_every_owned_one_and_none_when_never_applied():
    owned = {"f:data": {"f:greeting": {}}, "f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {}}}}
    assert dropped_fields(config_map(), applied_by(MANAGER, owned), manager=MANAGER) == []
    assert dropped_fields(config_map(), applied_by("kubectl", owned), manager=MANAGER) is None
    assert dropped_fields(config_map(), applied_by(MANAGER, owned, operation="Update"), manager=MANAGER) is None
    assert dropped_fields(config_map(), {"metadata": {}}, manager=MANAGER) is None
    assert dropped_fields(config_map(), {}, manager=MANAGER) is None


def test_an_apply_to_a_subresource_owns_no_field_of_the_object():
    owned = {"f:status": {"f:phase": {}}}
    assert dropped_fields(config_map(), applied_by(MANAGER, owned, subresource="status"), manager=MANAGER) is None


def test_only_the_managers_apply_entries_are_read_whatever_else_the_list_holds():
    live = applied_by(MANAGER, {"f:data": {"f:gone": {}}})
    live["metadata"]["managedFields"][:0] = [
        "not an entry", {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:data": {"f:other": {}}}},
    ]
    assert dropped_fields(config_map(), live, manager=MANAGER) == ["data.gone"]


def test_an_entry_without_fields_owns_nothing():
    live = applied_by(MANAGER, {})
    del live["metadata"]["managedFields"][0]["fieldsV1"]
    assert dropped_fields(config_map(), live, manager=MANAGER) == []


def test_a_field_two_entries_own_is_named_once():
    live = applied_by(MANAGER, {"f:data": {"f:gone": {}}})
    live["metadata"]["managedFields"].append(dict(live["metadata"]["managedFields"][0], apiVersion="v1"))
    assert dropped_fields(config_map(), live, manager=MANAGER) == ["data.gone"]


def test_a_field_git_turned_from_a_map_into_null_drops_what_was_below():
    desired = deployment()
    desired["spec"]["template"] = None
    owned = {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}
    assert dropped_fields(desired, applied_by(MANAGER, owned), manager=MANAGER) == ["spec.template.spec"]


def test_a_list_git_set_to_null_drops_its_items():
    desired = deployment()
    desired["spec"]["template"]["spec"]["containers"] = None
    owned = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}}}}}}}
    assert dropped_fields(desired, applied_by(MANAGER, owned), manager=MANAGER) == [
        "spec.template.spec.containers[app]",
    ]


def test_an_owned_item_must_carry_its_first_key_and_agree_on_the_others():
    def with_ports(ports: list) -> dict:
        desired = deployment()
        desired["spec"]["template"]["spec"]["containers"][0]["ports"] = ports
        return desired

    step = 'k:{"containerPort":8080,"protocol":"TCP"}'
    owned = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"app"}': {"f:ports": {step: {}}}}}}}}
    live = applied_by(MANAGER, owned)
    dropped = ["spec.template.spec.containers[app].ports[containerPort=8080,protocol=TCP]"]
    assert dropped_fields(with_ports([{"containerPort": 8080}]), live, manager=MANAGER) == []
    assert dropped_fields(with_ports([{"containerPort": 8080, "protocol": "TCP"}]), live, manager=MANAGER) == []
    assert dropped_fields(with_ports([{"containerPort": 8080, "protocol": "UDP"}]), live, manager=MANAGER) == dropped
    assert dropped_fields(with_ports([{"protocol": "TCP"}]), live, manager=MANAGER) == dropped
    assert dropped_fields(with_ports(["8080"]), live, manager=MANAGER) == dropped


def test_an_owned_item_found_is_walked_into():
    owned = {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"app"}': {"f:image": {}, "f:stdin": {}}}}}}}
    assert dropped_fields(deployment(), applied_by(MANAGER, owned), manager=MANAGER) == [
        "spec.template.spec.containers[app].stdin",
    ]


def test_owned_values_of_a_set_list():
    desired = config_map()
    desired["metadata"]["finalizers"] = ["a", "b"]
    owned = {"f:metadata": {"f:finalizers": {".": {}, 'v:"a"': {}, 'v:"gone"': {}}}}
    assert dropped_fields(desired, applied_by(MANAGER, owned), manager=MANAGER) == ['metadata.finalizers["gone"]']
    desired["metadata"]["finalizers"] = "a"  # not a list any more
    assert dropped_fields(desired, applied_by(MANAGER, owned), manager=MANAGER) == [
        'metadata.finalizers["a"]', 'metadata.finalizers["gone"]',
    ]


@pytest.mark.parametrize(
    "items,dropped",
    [
        ([{"x": "1"}, {"x": "2", "y": "3"}], []),
        ([{"x": "1"}, {"x": "2"}], ["spec.list[1].y"]),
        ([{"x": "1"}], ["spec.list[1]"]),
        ("not a list", ["spec.list[0]", "spec.list[1]"]),
    ],
)
def test_owned_items_by_position(items, dropped):
    owned = {"f:spec": {"f:list": {"i:0": {"f:x": {}}, "i:1": {"f:y": {}}, "i:-1": {}}}}
    desired = {"spec": {"list": items}}
    assert dropped_fields(desired, applied_by(MANAGER, owned), manager=MANAGER) == sorted(["spec.list[-1]", *dropped])


def test_a_step_this_reader_does_not_know_counts_as_dropped():
    owned = {"f:data": {"x:greeting": {"f:y": {}}}}
    assert dropped_fields(config_map(), applied_by(MANAGER, owned), manager=MANAGER) == ["data[x:greeting]"]


def test_an_empty_item_key_matches_no_item():
    owned = {"f:spec": {"f:list": {"k:{}": {}}}}
    assert dropped_fields({"spec": {"list": [{"name": "a"}]}}, applied_by(MANAGER, owned), manager=MANAGER) == [
        "spec.list[]",
    ]
