"""roll_back: restore the last healthy revision (or remove the app when none), sync, emit RollbackCompleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.runtime import (
    APP,
    FAIL,
    IMAGE_V1,
    IMAGE_V2,
    RuntimeEnv,
    in_flow,
    runtime_env,
    wait_for_events,
    with_config_maps,
)

from delivery.config import HealthGates
from delivery.errors import InvalidInput
from delivery.manifests import render
from flows.strategies import deploy_with_strategy
from tasks.health import HealthSpec, evaluate_health
from tasks.promote import Promotion, write_promotion
from tasks.rollback import RollbackSpec, restore_healthy, roll_back
from tasks.sync import SyncSpec, reconcile


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RuntimeEnv]:
    with runtime_env(tmp_path, ready_delay=0.1) as environment:
        yield environment


def deployed(env: RuntimeEnv, **options: Any) -> tuple[dict[str, Any], str]:
    spec = env.spec(**options)
    target = spec.target().model_dump()
    revision = write_promotion(env.repo, Promotion(**target, files=render(spec).files)).git_revision
    reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))
    return target, revision


def image_live(env: RuntimeEnv) -> str:
    live = env.runtime.get(api_version="apps/v1", kind="Deployment", name=APP, namespace=env.namespace)
    return live["spec"]["template"]["spec"]["containers"][0]["image"]


def test_roll_back_restores_the_healthy_revision_and_a_second_rollback_changes_nothing(
    prefect_server: str, env: RuntimeEnv
) -> None:
    target, good = deployed(env, image=IMAGE_V1)
    assert evaluate_health(env.runtime, env.repo, HealthSpec(**target, git_revision=good, poll_seconds=0.05)).healthy
    _, bad = deployed(env, image=IMAGE_V2, values=FAIL, release_id=target["release_id"], trace_id=target["trace_id"])
    assert image_live(env) == IMAGE_V2
    spec = RollbackSpec(**target, reason="gate failed", failed_revision=bad, timeout_seconds=20, poll_seconds=0.05)

    result = in_flow(lambda: roll_back(env.runtime, env.repo, spec))

    assert result.committed and result.restored_from == good and result.healthy
    assert image_live(env) == IMAGE_V1
    assert env.repo.read_environment(env.environment, APP) == env.repo.read_environment(env.environment, APP,
                                                                                         ref=good)
    assert [ref.name for ref in result.changed] == [APP]  # only the Deployment differed
    head, versions = env.repo.head(), {k: o["metadata"]["resourceVersion"] for k, o in env.live_by_name().items()}

    again = roll_back.fn(env.runtime, env.repo, spec)

    assert not again.committed and again.git_revision == head and again.changed == [] and again.pruned == []
    assert {k: o["metadata"]["resourceVersion"] for k, o in env.live_by_name().items()} == versions


def test_a_rollback_that_differs_in_one_object_applies_only_that_object(env: RuntimeEnv) -> None:
    spec = env.spec()
    target = spec.target().model_dump()
    files = render(spec).files
    good = write_promotion(env.repo, Promotion(**target, files=with_config_maps(
        files, 20, data={"GREETING": "v1"}))).git_revision
    reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=good))
    env.repo.tag_healthy(env.environment, APP, good)
    bad = write_promotion(env.repo, Promotion(**target, files=with_config_maps(
        files, 20, data={"GREETING": "v2"}))).git_revision
    reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=bad))
    env.sim.reset_request_count()

    result = restore_healthy(env.runtime, env.repo, RollbackSpec(**target, failed_revision=bad, wait=False))

    assert result.restored_from == good and result.committed
    assert [(ref.kind, ref.name) for ref in result.changed] == [("ConfigMap", "extra-0")] and result.pruned == []
    # one LIST per kind, then the one apply: nothing else is re-written, whatever the object count
    assert env.sim.requests_by_method == {"GET": len(env.runtime.managed_kinds), "PATCH": 1}
    live = env.runtime.get(api_version="v1", kind="ConfigMap", name="extra-0", namespace=env.namespace)
    assert live["data"] == {"GREETING": "v1"}


def test_without_a_healthy_revision_the_app_is_removed(env: RuntimeEnv) -> None:
    target, bad = deployed(env, values=FAIL)
    result = roll_back.fn(env.runtime, env.repo, RollbackSpec(**target, failed_revision=bad))
    assert result.restored_from is None and len(result.pruned) == 4
    assert env.live() == [] and env.repo.read_environment(env.environment, APP) == {}


def test_a_failed_deployment_leaves_a_traceable_event_trail(prefect_server: str, env: RuntimeEnv) -> None:
    from prefect import flow

    spec = env.spec(values=FAIL)

    @flow
    def failing() -> Any:
        return deploy_with_strategy(env.runtime, env.repo, spec, health=HealthGates(timeout_seconds=20),
                                    poll_seconds=0.05)

    outcome = failing()
    assert outcome.rolled_back and not outcome.healthy and env.live() == []
    names = ["ManifestRendered", "DeploymentPromoted", "GitOpsSynced", "HealthChecked", "RollbackCompleted"]
    events = wait_for_events(prefect_server, spec.trace_id, names)
    by_name = {e["event"]: e for e in events}
    assert by_name["delivery.DeploymentPromoted"]["payload"]["revision"] == outcome.failed_revision
    assert by_name["delivery.GitOpsSynced"]["payload"]["revision"] == outcome.failed_revision
    assert by_name["delivery.HealthChecked"]["payload"]["healthy"] is False
    assert by_name["delivery.RollbackCompleted"]["payload"]["revision"] == outcome.git_revision
    assert all(e["resource"]["prefect.resource.id"] == f"delivery.release.{spec.release_id}" for e in events)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strategy": "big_bang"}, "strategy"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"namespace": "Bad"}, "namespace"),
        ({"whatever": 1}, "whatever"),
    ],
)
def test_validation_table(env: RuntimeEnv, change: dict[str, Any], field: str) -> None:
    head = env.repo.head()
    with pytest.raises(InvalidInput, match=f"roll_back: invalid input: {field}"):
        roll_back.fn(env.runtime, env.repo, {**env.target(), **change})
    assert env.repo.head() == head
