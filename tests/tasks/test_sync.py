"""sync_environment: Git's revision reconciled onto the simulator (apply + prune), idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.runtime import (
    APP,
    IMAGE_V2,
    RuntimeEnv,
    in_flow,
    runtime_env,
    subset_equal,
    wait_until,
    with_config_maps,
)

from blocks.kubernetes_runtime import ObjectRef
from delivery.errors import InvalidInput
from delivery.manifest_files import parse_objects
from delivery.manifests import render
from tasks.promote import Promotion, write_promotion
from tasks.sync import SyncSpec, reconcile, sync_environment


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RuntimeEnv]:
    with runtime_env(tmp_path) as environment:
        yield environment


def promote_files(env: RuntimeEnv, files: dict[str, str], target: dict[str, Any]) -> str:
    return write_promotion(env.repo, Promotion(**target, files=files)).git_revision


def unmanaged(env: RuntimeEnv) -> str:
    """A ConfigMap someone made by hand in the same namespace, with the app's name label."""
    other = env.runtime.model_copy(update={"field_manager": "kubectl"})
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "hand-made", "namespace": env.namespace, "labels": {"app.kubernetes.io/name": APP}}, "data": {"a": "b"}}
    return other.apply([body])[0].resource_version


def test_sync_makes_live_equal_git_and_a_second_sync_changes_nothing(prefect_server: str, env: RuntimeEnv) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    revision = promote_files(env, render(spec).files, target)

    result = in_flow(lambda: sync_environment(env.runtime, env.repo, SyncSpec(**target)))

    assert result.git_revision == revision
    assert sorted(ref.kind for ref in result.changed) == ["ConfigMap", "Deployment", "Ingress", "Service"]
    live = env.live_by_name()
    for obj in parse_objects(env.repo.read_environment(env.environment, APP, ref=revision)):
        assert subset_equal(obj, live[(obj["kind"], obj["metadata"]["name"])]) == []
    wait_until(lambda: env.runtime.rollout_status(name=APP, namespace=env.namespace).ready)
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()}

    again = sync_environment.fn(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))

    assert again.no_op and len(again.unchanged) == 4
    assert {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()} == versions


def test_an_object_deleted_from_git_is_pruned_and_unmanaged_objects_are_never_touched(
    prefect_server: str, env: RuntimeEnv
) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    files = render(spec).files
    promote_files(env, files, target)
    sync_environment.fn(env.runtime, env.repo, SyncSpec(**target))
    hand_made_version = unmanaged(env)

    smaller = {name: text for name, text in files.items() if not name.startswith("ingress-")}
    smaller_spec = env.spec(image=IMAGE_V2, values={"ingress": {"enabled": False}}, **target)
    assert render(smaller_spec).files.keys() == smaller.keys()
    promote_files(env, render(smaller_spec).files, target)
    result = in_flow(lambda: sync_environment(env.runtime, env.repo, SyncSpec(**target)))

    assert [(ref.kind, ref.name) for ref in result.pruned] == [("Ingress", APP)]
    assert ("Deployment", APP) in {(ref.kind, ref.name) for ref in result.changed}
    assert ("Ingress", APP) not in env.live_by_name()
    hand_made = env.runtime.get(api_version="v1", kind="ConfigMap", name="hand-made", namespace=env.namespace)
    assert hand_made["metadata"]["resourceVersion"] == hand_made_version


def data_of(env: RuntimeEnv, name: str) -> dict[str, str] | None:
    live = env.runtime.get(api_version="v1", kind="ConfigMap", name=name, namespace=env.namespace)
    return None if live is None else live.get("data")


def test_a_no_op_sync_writes_nothing_and_costs_one_list_per_kind_whatever_the_object_count(env: RuntimeEnv) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    costs = {}
    for extra in (0, 40):
        revision = promote_files(env, with_config_maps(render(spec).files, extra), target)
        first = reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))
        assert len(first.changed) == (4 if extra == 0 else 40)  # the second round adds only the ConfigMaps
        env.sim.reset_request_count()

        again = reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))

        assert again.no_op and len(again.unchanged) == 4 + extra
        costs[4 + extra] = env.sim.requests_by_method
    # GETs only: one LIST per kind, no namespace check, no apply (PATCH), no create, replace or delete
    assert costs == {4: {"GET": len(env.runtime.managed_kinds)}, 44: {"GET": len(env.runtime.managed_kinds)}}


def test_a_sync_applies_exactly_what_differs_deleted_or_changed_live_or_a_field_git_dropped(env: RuntimeEnv) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    files = render(spec).files
    reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=promote_files(
        env, with_config_maps(files, 3, data={"GREETING": "same", "OLD": "1"}), target)))
    env.runtime.delete(ObjectRef(api_version="v1", kind="ConfigMap", namespace=env.namespace, name="extra-1"))
    wait_until(lambda: env.runtime.rollout_status(name=APP, namespace=env.namespace).ready)  # status settles
    other = env.runtime.model_copy(update={"field_manager": "kubectl"})
    other.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra-2", "namespace": env.namespace},
                  "data": {"GREETING": "edited by hand"}}])
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()}
    revision = promote_files(env, with_config_maps(files, 3), target)  # extra-0 no longer sets OLD
    env.sim.reset_request_count()

    result = reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))

    assert sorted(ref.name for ref in result.changed) == ["extra-0", "extra-1", "extra-2"]
    assert env.sim.requests_by_method == {"GET": len(env.runtime.managed_kinds), "PATCH": 3}
    assert data_of(env, "extra-0") == data_of(env, "extra-1") == data_of(env, "extra-2") == {"GREETING": "same"}
    untouched = {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()
                 if key[1] not in ("extra-0", "extra-1", "extra-2")}
    assert untouched == {key: version for key, version in versions.items() if key in untouched}
    assert len(untouched) == 4 and result.pruned == []


def test_git_content_without_the_managed_labels_is_refused(env: RuntimeEnv) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    files = render(spec).files
    name = "configmap-sample-app-config.yaml"
    files[name] = files[name].replace("app.kubernetes.io/managed-by: gitops-delivery", "team: someone")
    promote_files(env, files, target)
    with pytest.raises(InvalidInput, match="managed-by=gitops-delivery"):
        sync_environment.fn(env.runtime, env.repo, SyncSpec(**target))
    assert env.live() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"namespace": None}, "namespace"),
        ({"environment": "Prod!"}, "environment"),
        ({"app": ""}, "app"),
        ({"revision": 0}, "revision"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_validation_table(env: RuntimeEnv, change: dict[str, Any], field: str) -> None:
    spec = {**env.target(), **change}
    with pytest.raises(InvalidInput, match=f"sync_environment: invalid input: {field}"):
        sync_environment.fn(env.runtime, env.repo, spec)
