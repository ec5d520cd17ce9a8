"""KubernetesRuntime against the Kubernetes simulator over HTTP (the block knows only a kubeconfig)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from support.runtime import APP, FAIL, IMAGE_V1, IMAGE_V2, RuntimeEnv, runtime_env, wait_until

from blocks.kubernetes_runtime import KubernetesRuntime, ObjectRef, rollout_of
from delivery.errors import InvalidInput, NotFound, TransientError
from delivery.labels import MANAGED_BY_LABEL, managed_selector
from delivery.manifests import render


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RuntimeEnv]:
    with runtime_env(tmp_path) as environment:
        environment.runtime.ensure_namespace(environment.namespace)
        yield environment


def objects(env: RuntimeEnv, **options) -> list[dict]:
    return render(env.spec(**options)).objects()


def unmanaged_configmap(env: RuntimeEnv, name: str, labels: dict[str, str]) -> dict:
    """An object someone else created, applied under another field manager."""
    other = env.runtime.model_copy(update={"field_manager": "kubectl"})
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": env.namespace,
                                                                  "labels": labels}, "data": {"k": "v"}}
    return other.apply([body])[0]


def test_apply_creates_objects_and_an_identical_apply_keeps_every_resource_version(env: RuntimeEnv) -> None:
    desired = objects(env)
    first = env.runtime.apply(desired)
    assert {(r.kind, r.name) for r in first} == {("ConfigMap", "sample-app-config"), ("Service", APP),
                                                 ("Deployment", APP), ("Ingress", APP)}
    wait_until(lambda: env.runtime.rollout_status(name=APP, namespace=env.namespace).ready)
    before = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in env.live()}
    second = env.runtime.apply(desired)
    assert {(r.kind, r.name): r.resource_version for r in second} == before
    live = env.runtime.get(api_version="apps/v1", kind="Deployment", name=APP, namespace=env.namespace)
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert "gitops-delivery" in managers


def test_apply_removes_fields_git_dropped_and_takes_back_fields_others_changed(env: RuntimeEnv) -> None:
    env.runtime.apply(objects(env, values=FAIL))
    other = env.runtime.model_copy(update={"field_manager": "kubectl"})
    other.apply([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": env.namespace},
                  "spec": {"replicas": 9}}])
    assert env.runtime.get(api_version="apps/v1", kind="Deployment", name=APP, namespace=env.namespace)[
        "spec"]["replicas"] == 9
    env.runtime.apply(objects(env, image=IMAGE_V2))
    live = env.runtime.get(api_version="apps/v1", kind="Deployment", name=APP, namespace=env.namespace)
    assert live["spec"]["replicas"] == 4
    assert "simulator.delivery.gitops/fail" not in (live["spec"]["template"]["metadata"].get("annotations") or {})
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V2


def test_apply_dry_run_stores_nothing(env: RuntimeEnv) -> None:
    refs = env.runtime.apply(objects(env), dry_run=True)
    assert len(refs) == 4
    assert env.live() == []


def test_list_managed_makes_exactly_one_list_request_per_kind(env: RuntimeEnv) -> None:
    env.runtime.apply(objects(env))
    env.runtime.list_managed(selector=managed_selector())  # discovery happens once, before counting
    env.sim.reset_request_count()
    live = env.runtime.list_managed(selector=managed_selector(app=APP, environment=env.environment))
    assert env.sim.request_count == len(env.runtime.managed_kinds)
    assert sorted(o["kind"] for o in live) == ["ConfigMap", "Deployment", "Ingress", "Service"]
    assert all(o["apiVersion"] and o["kind"] for o in live)


def test_prune_deletes_what_git_dropped_and_never_touches_unmanaged_objects(env: RuntimeEnv) -> None:
    desired = objects(env)
    env.runtime.apply(desired)
    unmanaged = unmanaged_configmap(env, "hand-made", {"app.kubernetes.io/name": APP})
    other_env = unmanaged_configmap(env, "staging-owned", {
        MANAGED_BY_LABEL: "gitops-delivery", "app.kubernetes.io/name": APP, "delivery.gitops/environment": "staging"})
    without_ingress = [o for o in desired if o["kind"] != "Ingress"]
    pruned = env.runtime.prune(without_ingress, selector=managed_selector(app=APP, environment=env.environment))
    assert [(r.kind, r.name) for r in pruned] == [("Ingress", APP)]
    for ref in (unmanaged, other_env):
        still = env.runtime.get(api_version="v1", kind="ConfigMap", name=ref.name, namespace=env.namespace)
        assert still["metadata"]["resourceVersion"] == ref.resource_version
    assert env.runtime.prune(without_ingress, selector=managed_selector(app=APP, environment=env.environment)) == []


def test_prune_refuses_a_selector_that_could_reach_unmanaged_objects(env: RuntimeEnv) -> None:
    with pytest.raises(InvalidInput, match="managed-by"):
        env.runtime.prune([], selector=f"app.kubernetes.io/name={APP}")


def test_rollout_status_reports_ready_then_a_failed_rollout_after_its_progress_deadline(env: RuntimeEnv) -> None:
    env.runtime.apply(objects(env))
    ready = wait_until(lambda: (s := env.runtime.rollout_status(name=APP, namespace=env.namespace)).ready and s)
    assert (ready.updated_replicas, ready.available_replicas, ready.failed) == (4, 4, False)
    env.runtime.apply(objects(env, image=IMAGE_V2, values=FAIL))
    failed = wait_until(lambda: (s := env.runtime.rollout_status(name=APP, namespace=env.namespace)).failed and s)
    assert not failed.ready
    assert "progress deadline" in failed.message
    assert failed.observed_generation == failed.generation == 2


def test_rollout_status_of_a_missing_deployment_is_not_found(env: RuntimeEnv) -> None:
    with pytest.raises(NotFound):
        env.runtime.rollout_status(name="nope", namespace=env.namespace)


def test_api_server_refusals_are_translated(env: RuntimeEnv) -> None:
    bad = objects(env)[0]
    bad["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(InvalidInput, match="refused"):
        env.runtime.apply([bad])
    with pytest.raises(NotFound):
        env.runtime.apply([{**objects(env)[0], "metadata": {**objects(env)[0]["metadata"], "namespace": "absent"}}])
    with pytest.raises(InvalidInput, match="Namespace is required"):
        env.runtime.apply([{**objects(env)[0], "metadata": {"name": "no-namespace"}}])


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (KubernetesRuntime(), "kubeconfig"),
        (KubernetesRuntime(kubeconfig=SecretStr("a: [")), "kubeconfig: not valid YAML"),
        (KubernetesRuntime(kubeconfig=SecretStr("- 1\n")), "kubeconfig"),
        (KubernetesRuntime(kubeconfig=SecretStr("apiVersion: v1\nkind: Config\nclusters: []\n")), "kubeconfig"),
        (KubernetesRuntime(in_cluster=True), "in-cluster"),  # no service account on this machine
    ],
)
def test_bad_connection_settings_are_invalid_input(block: KubernetesRuntime, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        block.list_managed(selector=managed_selector())


def test_an_unreachable_api_server_is_transient(tmp_path: Path) -> None:
    with runtime_env(tmp_path) as environment:
        kubeconfig = environment.sim.kubeconfig()
    block = KubernetesRuntime(kubeconfig=SecretStr(kubeconfig), request_timeout_seconds=2)
    with pytest.raises(TransientError):
        block.list_managed(selector=managed_selector())


def test_rollout_judgement_follows_kubectl() -> None:
    def deployment(generation: int, status: dict, replicas: int = 2) -> dict:
        return {"metadata": {"name": "d", "namespace": "n", "generation": generation},
                "spec": {"replicas": replicas}, "status": status}

    done = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert rollout_of(deployment(2, done)).ready
    assert "observed" in rollout_of(deployment(3, done)).message
    assert "updated replicas" in rollout_of(deployment(2, {**done, "updatedReplicas": 1})).message
    assert "pending termination" in rollout_of(deployment(2, {**done, "replicas": 3})).message
    assert not rollout_of(deployment(2, {**done, "availableReplicas": 1})).ready
    deadline = {**done, "conditions": [{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded"}]}
    assert rollout_of(deployment(2, deadline)).failed
    assert ObjectRef(api_version="apps/v1", kind="Deployment", namespace="n", name="d").identity == (
        "apps", "Deployment", "n", "d")
    assert IMAGE_V1 != IMAGE_V2


def test_a_process_leaves_no_discovery_cache_behind(env: RuntimeEnv, tmp_path: Path) -> None:
    """Each process caches the API's discovery in a folder of its own, removed when it exits."""
    import subprocess
    import sys
    import tempfile

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(env.sim.kubeconfig())
    child = (
        "import pathlib, sys\n"
        "from pydantic import SecretStr\n"
        "from blocks import kubernetes_runtime as k\n"
        "from delivery.labels import managed_selector\n"
        "block = k.KubernetesRuntime(kubeconfig=SecretStr(pathlib.Path(sys.argv[1]).read_text()))\n"
        "block.list_managed(selector=managed_selector())\n"
        "print(k._discovery)\n"
        "assert any(k._discovery.iterdir())\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(kubeconfig)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("delivery-k8s-discovery-")
    assert not folder.exists()
