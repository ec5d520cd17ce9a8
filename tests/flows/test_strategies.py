"""Strategies run through their stages: full deployments with rollback, on the simulator and a real GitOps repo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.runtime import APP, FAIL, IMAGE_V1, IMAGE_V2, IMAGE_V3, RuntimeEnv, runtime_env, subset_equal

from delivery.config import HealthGates
from delivery.errors import InvalidInput
from delivery.manifest_files import parse_objects
from delivery.models import BlueGreenStrategy, CanaryStrategy, RollingStrategy
from flows.strategies import DeploymentOutcome, deploy_with_strategy
from tasks.rollback import SLOT_LABEL

HEALTH = HealthGates(timeout_seconds=20)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RuntimeEnv]:
    with runtime_env(tmp_path, ready_delay=0.1) as environment:
        yield environment


def deploy(env: RuntimeEnv, strategy: Any, *, image: str, values: dict | None = None,
           **target: Any) -> DeploymentOutcome:
    from prefect import flow

    @flow
    def one_environment() -> DeploymentOutcome:
        spec = env.spec(image=image, values=values, **target)
        return deploy_with_strategy(env.runtime, env.repo, spec, strategy=strategy,
                                    health=HEALTH, poll_seconds=0.05, artifact_ids=["art-1"],
                                    planned_by="agent:planner", approved_by=["user:alice"])

    return one_environment()


def assert_live_equals_git(env: RuntimeEnv, ref: str) -> dict[tuple[str, str], dict]:
    """Every object Git holds at ``ref`` is live with those fields; nothing else managed is live."""
    desired = parse_objects(env.repo.read_environment(env.environment, APP, ref=ref))
    live = env.live_by_name()
    assert set(live) == {(o["kind"], o["metadata"]["name"]) for o in desired}
    for obj in desired:
        differences = subset_equal({k: v for k, v in obj.items() if k != "status"},
                                   live[(obj["kind"], obj["metadata"]["name"])])
        assert differences == [], differences
    return live


def deployment(live: dict, name: str) -> dict:
    return live[("Deployment", name)]


def image_of(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


# --------------------------------------------------------------------------- deployments


@pytest.mark.parametrize("strategy", [RollingStrategy(), BlueGreenStrategy(), CanaryStrategy(steps=[50, 100])],
                         ids=lambda s: s.name)
def test_a_release_that_never_becomes_ready_is_rolled_back_to_the_last_healthy_revision(
    prefect_server: str, env: RuntimeEnv, strategy: Any
) -> None:
    good = deploy(env, strategy, image=IMAGE_V1)
    assert good.healthy and not good.rolled_back
    healthy = env.repo.healthy_revision(env.environment, APP)
    assert healthy == good.git_revision == env.repo.head()
    before = assert_live_equals_git(env, healthy)

    bad = deploy(env, strategy, image=IMAGE_V2, values=FAIL)

    assert not bad.healthy and bad.rolled_back and bad.rollback is not None
    assert bad.rollback.restored_from == healthy and bad.failed_revision not in (None, healthy)
    assert env.repo.healthy_revision(env.environment, APP) == healthy
    assert env.repo.read_environment(env.environment, APP) == env.repo.read_environment(env.environment, APP,
                                                                                         ref=healthy)
    after = assert_live_equals_git(env, healthy)
    assert bad.rollback.healthy
    if strategy.name == "rolling":
        assert image_of(deployment(after, APP)) == IMAGE_V1
        assert "simulator.delivery.gitops/fail" not in str(deployment(after, APP)["spec"])
    if strategy.name == "blue_green":
        assert after[("Service", APP)]["spec"]["selector"][SLOT_LABEL] == "blue"
        assert ("Deployment", f"{APP}-green") not in after
        assert deployment(after, f"{APP}-blue")["metadata"]["resourceVersion"] == \
            deployment(before, f"{APP}-blue")["metadata"]["resourceVersion"]
        assert "switched back to slot blue" in bad.rollback.message
    if strategy.name == "canary":
        assert not [key for key in after if key[1].endswith("-canary")]
        assert deployment(after, APP)["metadata"]["resourceVersion"] == \
            deployment(before, APP)["metadata"]["resourceVersion"]
        assert [p.name for p in bad.phases] == []  # the first canary step already failed


def test_blue_green_and_canary_upgrades_end_on_the_new_version(prefect_server: str, env: RuntimeEnv) -> None:
    assert deploy(env, BlueGreenStrategy(), image=IMAGE_V1).healthy
    upgraded = deploy(env, BlueGreenStrategy(), image=IMAGE_V2)
    assert upgraded.healthy and [p.name for p in upgraded.phases] == ["deploy-green", "switch-green"]
    live = assert_live_equals_git(env, upgraded.git_revision)
    assert live[("Service", APP)]["spec"]["selector"][SLOT_LABEL] == "green"
    assert image_of(deployment(live, f"{APP}-green")) == IMAGE_V2
    assert image_of(deployment(live, f"{APP}-blue")) == IMAGE_V1

    canary = deploy(env, CanaryStrategy(steps=[25, 100]), image=IMAGE_V3)
    assert canary.healthy and [p.name for p in canary.phases] == ["deploy"]  # no stable track yet
    second = deploy(env, CanaryStrategy(steps=[25, 100]), image=IMAGE_V1)
    assert [p.name for p in second.phases] == ["canary-25", "canary-100", "promote"]
    live = assert_live_equals_git(env, second.git_revision)
    assert image_of(deployment(live, APP)) == IMAGE_V1 and ("Deployment", f"{APP}-canary") not in live
    assert env.repo.healthy_revision(env.environment, APP) == second.git_revision


def test_malformed_values_or_templates_are_refused_before_anything_is_committed(
    prefect_server: str, env: RuntimeEnv
) -> None:
    from prefect import flow

    head = env.repo.head()
    with pytest.raises(InvalidInput, match="deploy/deployment.yaml.j2: Deployment/sample-app: field spec.replicas"):
        deploy(env, RollingStrategy(), image=IMAGE_V1, values={"replicas": "many"})
    spec = env.spec()
    templates = {**spec.templates, "service.yaml.j2": spec.templates["service.yaml.j2"].replace(
        "values.servicePort", "values.service.port")}

    @flow
    def broken_template() -> DeploymentOutcome:
        return deploy_with_strategy(env.runtime, env.repo, spec.model_copy(update={"templates": templates}))

    with pytest.raises(InvalidInput, match="deploy/service.yaml.j2 line 11: values.service is not defined"):
        broken_template()
    assert env.repo.head() == head
    assert env.live() == []


def test_commits_carry_the_release_trailers(prefect_server: str, env: RuntimeEnv) -> None:
    from git import Repo

    outcome = deploy(env, RollingStrategy(), image=IMAGE_V1)
    message = Repo(env.repo.url).commit(outcome.git_revision).message
    for trailer in ("Release-Id: rel-rt-", "Trace-Id: ", "Artifact-Id: art-1", "Planned-By: agent:planner",
                    "Approved-By: user:alice", "Delivery-Phase: deploy"):
        assert trailer in message
    deployment_file = env.repo.read_environment(env.environment, APP)[f"deployment-{APP}.yaml"]
    annotations = yaml.safe_load(deployment_file)["metadata"]["annotations"]
    assert annotations["delivery.gitops/release-id"].startswith("rel-rt-")


def test_the_same_release_retried_after_a_rollback_deploys_again_and_a_rerun_is_a_no_op(
    prefect_server: str, env: RuntimeEnv
) -> None:
    ids = {"release_id": f"rel-retry-{env.namespace}-{id(env) % 10_000}", "trace_id": "d" * 32}
    failed = deploy(env, RollingStrategy(), image=IMAGE_V1, values=FAIL, **ids)
    assert failed.rolled_back and env.live() == []

    fixed = deploy(env, RollingStrategy(), image=IMAGE_V1, **ids)  # same release and revision, fixed values
    assert fixed.healthy and not fixed.rolled_back and fixed.phases[0].committed
    assert env.repo.healthy_revision(env.environment, APP) == fixed.git_revision
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()}

    rerun = deploy(env, RollingStrategy(), image=IMAGE_V1, **ids)
    assert rerun.healthy and rerun.git_revision == fixed.git_revision == env.repo.head()
    assert rerun.phases == fixed.phases  # every stage of that attempt is resumed from its stored result
    assert {key: obj["metadata"]["resourceVersion"] for key, obj in env.live_by_name().items()} == versions
