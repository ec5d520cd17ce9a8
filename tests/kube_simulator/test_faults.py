"""Injected faults: the next matching request is answered with the fault's status, once, store untouched."""

from __future__ import annotations

from k8s_helpers import api_error, deployment

from kube_simulator import KubernetesSimulator


def test_a_fault_answers_the_next_matching_request_once(sim: KubernetesSimulator, dyn, ns: str) -> None:
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    conflict = sim.inject_fault("PATCH", f"/namespaces/{ns}/deployments/", 409)
    unavailable = sim.inject_fault("PATCH", f"/namespaces/{ns}/deployments/", 503)

    def apply():
        return deployments.server_side_apply(body=deployment("web"), name="web", namespace=ns, field_manager="t")

    status, body = api_error(apply)
    assert (status, body["kind"], body["reason"]) == (409, "Status", "Conflict")
    assert "injected fault on PATCH" in body["message"]
    # Other methods and paths pass; the store was not touched by the refused apply.
    assert api_error(lambda: deployments.get(name="web", namespace=ns))[0] == 404
    status, body = api_error(apply)
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    assert apply().metadata.generation == 1
    assert [(f.status, f.fired, f.remaining) for f in sim.faults] == [(409, 1, 0), (503, 1, 0)]
    assert conflict.fired == unavailable.fired == 1


def test_faults_can_fire_several_times_and_be_cleared(sim: KubernetesSimulator, core, ns: str) -> None:
    sim.inject_fault("GET", f"^/api/v1/namespaces/{ns}/configmaps$", 500, times=2, message="etcd is slow")
    for _ in range(2):
        status, body = api_error(lambda: core.list_namespaced_config_map(ns))
        assert (status, body["reason"]) == (500, "InternalError") and body["message"].startswith("etcd is slow")
    assert core.list_namespaced_config_map(ns).items == []
    sim.inject_fault("GET", "/configmaps", 503)
    sim.clear_faults()
    assert sim.faults == [] and core.list_namespaced_config_map(ns).items == []
