"""The kubelet loop: rollouts complete after the delay, or miss their progress deadline on request."""

from __future__ import annotations

import pytest
from k8s_helpers import condition, deployment, wait_for
from kubernetes import client, watch

from kube_simulator import FAIL_ANNOTATION, KubernetesSimulator

FAIL = {FAIL_ANNOTATION: "true"}


def _ready(apps: client.AppsV1Api, ns: str, name: str):
    dep = apps.read_namespaced_deployment(name, ns)
    progressing = condition(dep, "Progressing")
    done = (
        dep.status.observed_generation == dep.metadata.generation
        and progressing is not None
        and progressing.reason == "NewReplicaSetAvailable"
    )
    return dep if done else None


def _deadline_exceeded(apps: client.AppsV1Api, ns: str, name: str):
    dep = apps.read_namespaced_deployment(name, ns)
    progressing = condition(dep, "Progressing")
    return dep if progressing is not None and progressing.reason == "ProgressDeadlineExceeded" else None


def test_a_deployment_becomes_ready_after_the_delay(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=3))
    dep = wait_for(lambda: _ready(apps, ns, "web"))
    status = dep.status
    assert (status.observed_generation, status.replicas, status.updated_replicas) == (1, 3, 3)
    assert (status.ready_replicas, status.available_replicas, status.unavailable_replicas) == (3, 3, None)
    available = condition(dep, "Available")
    assert (available.status, available.reason) == ("True", "MinimumReplicasAvailable")
    assert condition(dep, "Progressing").status == "True"


@pytest.mark.parametrize("sim", [5.0], indirect=True)
def test_before_the_delay_the_rollout_is_progressing(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    dep = wait_for(lambda: (d := apps.read_namespaced_deployment("web", ns)).status.observed_generation == 1 and d)
    assert not dep.status.ready_replicas and dep.status.unavailable_replicas == 2
    assert condition(dep, "Available").status == "False"
    assert condition(dep, "Progressing").reason == "ReplicaSetUpdated"


def test_a_failing_template_misses_its_progress_deadline(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", annotations=FAIL, progress_deadline=1))
    dep = wait_for(lambda: _deadline_exceeded(apps, ns, "web"))
    progressing = condition(dep, "Progressing")
    assert progressing.status == "False" and "timed out progressing" in progressing.message
    assert not dep.status.ready_replicas and not dep.status.available_replicas
    assert condition(dep, "Available").status == "False"


def test_a_failing_update_keeps_the_old_pods_and_a_revert_recovers(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=4, progress_deadline=1))
    wait_for(lambda: _ready(apps, ns, "web"))
    broken = deployment("web", replicas=4, image="nginx:broken", annotations=FAIL, progress_deadline=1)
    apps.replace_namespaced_deployment("web", ns, broken)
    dep = wait_for(lambda: _deadline_exceeded(apps, ns, "web"))
    status = dep.status
    assert status.observed_generation == 2 and status.updated_replicas == 1 and status.replicas == 5
    assert status.available_replicas == 4 and status.unavailable_replicas == 1
    assert condition(dep, "Available").status == "True"
    apps.replace_namespaced_deployment("web", ns, deployment("web", replicas=4, progress_deadline=1))
    recovered = wait_for(lambda: _ready(apps, ns, "web"))
    assert recovered.status.observed_generation == 3 and recovered.status.updated_replicas == 4


def test_scaling_to_zero_is_ready_at_once(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=0, annotations=FAIL))
    dep = wait_for(lambda: _ready(apps, ns, "web"))
    assert not dep.status.replicas and not dep.status.ready_replicas


def test_a_settled_deployment_is_not_rewritten(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web"))
    dep = wait_for(lambda: _ready(apps, ns, "web"))
    since = dep.metadata.resource_version
    # Any write would show up as an event on this watch within its window.
    stream = watch.Watch().stream(apps.list_namespaced_deployment, ns, resource_version=since, timeout_seconds=1)
    assert list(stream) == []
    assert apps.read_namespaced_deployment("web", ns).metadata.resource_version == since


def test_status_changes_are_recorded_under_the_controller_manager(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("web"))
    dep = wait_for(lambda: _ready(apps, ns, "web"))
    entries = {(e.manager, e.subresource) for e in dep.metadata.managed_fields}
    assert ("kube-controller-manager", "status") in entries


@pytest.fixture
def sim(request) -> KubernetesSimulator:
    with KubernetesSimulator(ready_delay=getattr(request, "param", 0.2)) as simulator:
        yield simulator
