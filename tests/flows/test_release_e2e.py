"""The whole product through the ``release`` flow: commit -> PR -> checks -> merge -> build -> dev -> staging -> prod.

Real Prefect server, real git repositories, the real pipeline (tests, wheel, image), the real
registry and package feed, the Kubernetes simulator, the ledger; approvals from another thread
through the REST resume. The prod failure and its rollback are test_promotion.py's (promote_path).
"""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from git import Repo
from support.governance import Approver, Step
from support.promotion import delivery_yaml
from support.release import APP, ENVIRONMENTS, PLANNER, ReleaseStack, wire_release_stack

from cli.client import DeliveryClient
from delivery.errors import BuildFailed, InvalidInput, NotFound
from delivery.models import Artifact
from delivery.plan import PlanState
from delivery.timeline import TraceEvent
from flows.deploy import PROMOTION_ACTOR

RELEASE_EVENTS = ["CommitCreated", "PullRequestOpened", "PullRequestChecked", "PullRequestMerged",
                  "PipelineGenerated", "PipelineRunStarted", "BuildCompleted"]
ENVIRONMENT_EVENTS = ["ReleasePlanned", "ReleaseApproved", "ManifestRendered", "DeploymentPromoted",
                      "GitOpsSynced", "HealthChecked"]
FAILING_TEST = "def test_the_change_broke_something():\n    assert 1 + 1 == 3\n"


def trace_events(api_url: str, trace_id: str, wanted: set[tuple[str, str | None]], *,
                 timeout: float = 60.0) -> list[TraceEvent]:
    """Poll the trace (paged by the client) until every wanted (event, environment) pair arrived."""
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str | None]] = set()
    with DeliveryClient(api_url) as client:
        while True:
            events = client.trace_events(trace_id)
            seen = {(e.event.removeprefix("delivery."), e.environment) for e in events}
            if wanted <= seen:
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"missing for trace {trace_id}: {sorted(wanted - seen, key=str)}")
            time.sleep(0.5)


def history(stack: ReleaseStack, plan_id: str) -> list[tuple[str, str, str]]:
    return [(t.from_state.value, t.to_state.value, t.actor) for t in stack.ledger.transitions(plan_id)]


def test_a_release_of_the_sample_app_goes_from_commit_to_prod(release_stack: ReleaseStack, prefect_server):
    from flows.release import release

    stack = release_stack
    request = stack.request()
    approver = Approver(prefect_server, request.release_id, [
        Step("user:alice", environment="staging"),
        Step("user:bob", environment="prod"),
        Step("user:carol", environment="prod"),
    ], timeout=300).start()
    state = release(request, return_state=True)
    approver.join(timeout=300)
    assert state.is_completed(), state
    summary = state.result()

    # Every decision went through POST /api/flow_runs/{id}/resume and was accepted.
    assert [(r.environment, r.status) for r in approver.results] == [
        ("staging", "ACCEPT"), ("prod", "ACCEPT"), ("prod", "ACCEPT")]

    # The build: real tests, the package in the feed, the image in the registry by digest.
    build = summary.build
    assert build.succeeded and build.tests.total == 3 and build.tests.failed == 0
    [image] = build.images
    assert image.repository == f"{stack.services.registry.host}/{APP}" and image.digest.startswith("sha256:")
    assert image.tag in stack.registry_tags()
    assert [p.version for p in build.packages] == [request.artifacts[0].data().decode().split('"')[-2]]

    # Every plan Deployed; the ledger holds the whole history with its actors.
    assert [(e.environment, e.state) for e in summary.promotion.environments] == [
        (env, PlanState.DEPLOYED) for env in ENVIRONMENTS]
    plans = {p.environment: p for p in stack.ledger.plans(release_id=request.release_id)}
    assert {env: p.state for env, p in plans.items()} == dict.fromkeys(ENVIRONMENTS, PlanState.DEPLOYED)
    assert all(p.planned_by == PLANNER and p.build.images[0].digest == image.digest for p in plans.values())
    rid = request.release_id
    gate = "system:policy-gate"
    assert history(stack, f"{rid}/r1/dev") == [
        ("Planned", "PendingApproval", PLANNER), ("PendingApproval", "Approved", gate),
        ("Approved", "Promoting", PROMOTION_ACTOR), ("Promoting", "Deployed", PROMOTION_ACTOR)]
    assert history(stack, f"{rid}/r1/staging") == [
        ("Planned", "PendingApproval", PLANNER), ("PendingApproval", "Approved", "user:alice"),
        ("Approved", "Promoting", PROMOTION_ACTOR), ("Promoting", "Deployed", PROMOTION_ACTOR)]
    assert history(stack, f"{rid}/r1/prod") == [
        ("Planned", "PendingApproval", PLANNER), ("PendingApproval", "Approved", "user:carol"),
        ("Approved", "Promoting", PROMOTION_ACTOR), ("Promoting", "Deployed", PROMOTION_ACTOR)]
    assert summary.promotion.environments[2].approvers == ["user:bob", "user:carol"]

    # The live objects run the built image by its digest, in every environment; each is tagged healthy.
    for env in ENVIRONMENTS:
        assert stack.live_deployments(env), env
        assert stack.images(env) == {f"{image.repository}@{image.digest}"}, env
        assert stack.repo.healthy_revision(env, APP) is not None, env
    # The prod desired state in Git says who planned and who approved, under the release's trace.
    with Repo(stack.repo.url) as gitops:
        prod_commits = [c.message for c in gitops.iter_commits("main") if f"Trace-Id: {request.trace_id}" in c.message
                        and "Approved-By: user:carol" in c.message]
    assert prod_commits and all("Approved-By: user:bob" in m and f"Planned-By: {PLANNER}" in m for m in prod_commits)

    # The events of every stage, found by the trace id alone.
    wanted = {(name, None) for name in RELEASE_EVENTS} | {
        (name, env) for env in ENVIRONMENTS for name in ENVIRONMENT_EVENTS}
    events = trace_events(prefect_server, request.trace_id, wanted)
    assert {e.release_id for e in events} == {rid}
    assert "delivery.RollbackCompleted" not in {e.event for e in events}


def test_a_change_with_a_failing_test_fails_the_release_at_the_build(release_stack: ReleaseStack, prefect_server):
    from flows.release import release

    stack = release_stack
    broken = Artifact.from_text("test-broken", "tests/test_broken.py", FAILING_TEST, validator="ci-lint")
    request = stack.request(artifacts=[broken])
    gitops_before = stack.snapshot()["gitops"]
    state = release(request, return_state=True)

    assert state.is_failed()
    with pytest.raises(BuildFailed, match="1 of 4 tests failed"):
        state.result()
    # The checks (the service's tests) passed and the change was merged; the pipeline's full suite failed.
    assert stack.host.get_pull_request(APP, 1).checks_passed
    events = trace_events(prefect_server, request.trace_id, {(name, None) for name in RELEASE_EVENTS})
    assert not {e.event for e in events} & {f"delivery.{name}" for name in ENVIRONMENT_EVENTS}
    body = {"filter": {"related": {"id": [f"delivery.trace.{request.trace_id}"]},
                       "event": {"name": ["delivery.BuildCompleted"]}}, "limit": 5}
    [completed] = httpx.post(f"{prefect_server}/events/filter", json=body, timeout=10).json()["events"]
    assert completed["payload"]["status"] == "Failed" and completed["payload"]["images"] == []
    # Nothing can be planned from it: no plan, no GitOps commit, nothing live.
    assert stack.ledger.plans(release_id=request.release_id) == []
    assert stack.snapshot()["gitops"] == gitops_before
    assert all(not stack.live_deployments(env) for env in ENVIRONMENTS)


def _too_many_approvers(config: dict) -> None:
    config["environments"]["prod"]["approval"]["min_approvers"] = 5


def _unsaved_staging_runtime(config: dict) -> None:
    config["environments"]["staging"]["runtime"] = "kubernetes-runtime/never-saved"


REFUSALS = [
    ("invalid delivery.yaml", {"config": _too_many_approvers}, InvalidInput,
     "environments.prod.approval.min_approvers: 5 distinct"),
    ("unknown target environment", {"target_environment": "qa"}, InvalidInput,
     "target_environment: unknown environment 'qa'; the promotion path is dev -> staging -> prod"),
    ("GitOps repo block never saved", {"env": ("DELIVERY_GITOPS_REPO_BLOCK", "gitops-repo/never-saved")}, NotFound,
     r"'gitops-repo/never-saved' \(set by DELIVERY_GITOPS_REPO_BLOCK\) is not saved"),
    ("pipeline runner block never saved",
     {"env": ("DELIVERY_PIPELINE_RUNNER_BLOCK", "local-pipeline-runner/never-saved")}, NotFound,
     r"'local-pipeline-runner/never-saved' \(set by DELIVERY_PIPELINE_RUNNER_BLOCK\) is not saved"),
    ("a runtime delivery.yaml names is not saved", {"config": _unsaved_staging_runtime}, NotFound,
     r"'kubernetes-runtime/never-saved' \(set by delivery.yaml environments.staging.runtime\) is not saved"),
]


@pytest.mark.parametrize(("case", "change", "error", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_release_the_configuration_refuses_writes_nothing(services, tmp_path, monkeypatch, ledger,
                                                            case, change, error, message):
    from flows.release import release

    config = None
    if "config" in change:
        config = delivery_yaml(services.runtime_ref)
        change["config"](config)
    stack = wire_release_stack(services, tmp_path, monkeypatch, ledger, config=config)
    if "env" in change:
        monkeypatch.setenv(*change["env"])
    request = stack.request(target_environment=change.get("target_environment"))
    before = stack.snapshot()

    state = release(request, return_state=True)
    assert state.is_failed(), case
    with pytest.raises(error, match=message):
        state.result()
    assert stack.snapshot() == before
    assert stack.host.resolve(APP, request.branch) is None
    assert yaml.safe_load(stack.repo.read_config())["path"] == list(ENVIRONMENTS)
