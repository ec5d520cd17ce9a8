"""Every decision of a release is in the ledger with its actor and reason (issue 14, point 2).

One release walked on real git repositories, the Kubernetes simulator over HTTP and the session's
Prefect server: its pull request checked and merged; revision 1 rejected by a policy gate; revision
2 deployed to dev and staging (the planner's own approval refused on the way), its prod canary's
health stage failing until its retries ran out (an incident, and a rollback); the incident
replayed by someone on call; then an out-of-band edit in dev reconciled by the drift check. Each
decision is then read back from the ledger and from the ledger-based timeline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.states import Cancelled
from support.governance import PLANNER, new_request
from support.promotion import promotion_stack

from cli.client import DeliveryClient
from delivery import failpoints
from delivery.errors import ApprovalRefused, DeliveryError, PolicyViolation
from delivery.ids import release_tags
from delivery.ledger import (
    DRIFT_RECONCILED,
    PULL_REQUEST_CHECKS_PASSED,
    PULL_REQUEST_MERGED,
    ROLLBACK_FINISHED,
    ROLLBACK_STARTED,
    Ledger,
)
from delivery.models import BuildResult, ReleaseRequest, TestCounts
from delivery.plan import PlanState, PromotionCause
from delivery.timeline import ledger_entries
from flows.deploy import PROMOTION_ACTOR
from flows.drift import drift_check
from flows.operations import replay_incident
from flows.promotion import PromotionSummary, promote_path
from flows.release_runs import RELEASE_FLOW, release_runs
from tasks.approval import POLICY_ACTOR
from tasks.commit import create_commit
from tasks.drift import DRIFT_ACTOR
from tasks.pull_request import CHECKS_ACTOR, check_pull_request, merge_pull_request, open_pull_request
from tasks.stage import DEFAULT_RETRIES

ONCALL = "user:oncall"


@flow(name=RELEASE_FLOW)  # a run of the release flow's name and tags: what a replay resubmits
def release_run(request: ReleaseRequest, build: BuildResult) -> PromotionSummary:
    return promote_path(request, build)


def _release(request: ReleaseRequest, build: BuildResult) -> None:
    with tags(*release_tags(request.release_id, request.trace_id)):
        release_run(request, build)


def _in_thread(work: Callable[[], None]) -> Callable[[], None]:
    """Run ``work`` beside the release run; the returned join re-raises what it raised."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(120)
        assert not thread.is_alive(), "the approvals never ended"
        if failed:
            raise failed[0]

    return join


def test_a_release_walked_through_every_kind_of_decision_has_each_in_the_ledger(
        prefect_server, ledger: Ledger, tmp_path: Path, monkeypatch) -> None:
    armed = tmp_path / "failpoints"
    monkeypatch.setenv(failpoints.SETTING, str(armed))
    with promotion_stack(tmp_path) as stack:
        first = new_request()
        rid = first.release_id
        # stages 1-4: the pull request's checks and its merge
        commit = create_commit.fn(stack.host, first)
        checked = check_pull_request.fn(stack.host, first, open_pull_request.fn(stack.host, first, commit))
        merge = merge_pull_request.fn(stack.host, first, checked)

        # revision 1: a failing test, rejected by dev's policy gate
        failing = stack.build.model_copy(update={"tests": TestCounts(total=3, passed=2, failed=1)})
        with pytest.raises(PolicyViolation, match="tests-passed"):
            _release(first, failing)

        # revision 2: the planner's own approval refused in staging; prod's health stage gives up
        second = first.model_copy(update={"revision": 2})

        def decide() -> None:
            with DeliveryClient(prefect_server) as client:
                with pytest.raises(ApprovalRefused, match=f"'{PLANNER}' is not one of"):
                    client.approve(rid, approver=PLANNER, environment="staging", wait=90)
                client.approve(rid, approver="user:alice", environment="staging", comment="staging looks right")
                client.wait_for_pause(rid, environment="prod", timeout=90)
                failpoints.arm(armed, *["check_health:transient"] * (DEFAULT_RETRIES + 1))
                client.approve(rid, approver="user:alice", environment="prod")
                client.approve(rid, approver="user:bob", environment="prod", wait=90)

        join = _in_thread(decide)
        with pytest.raises(DeliveryError):
            _release(second, stack.build)
        join()
        assert failpoints.armed(armed) == []

        # the incident replayed by someone on call
        [incident] = ledger.incidents(release_id=rid)
        replay_incident(incident["id"], ONCALL)
        with get_client(sync_client=True) as client:  # no worker here runs the resubmitted run: stop it
            client.set_flow_run_state(release_runs(rid)[0].id, Cancelled(message="test over"), force=True)

        # an operator's edit in dev, reconciled by the drift check
        deployment = stack.live_deployments("sample-dev")[0]
        container = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
        _apps_api(stack.sim.kubeconfig()).patch_namespaced_deployment(
            deployment["metadata"]["name"], "sample-dev",
            {"spec": {"template": {"spec": {"containers": [{"name": container, "image": "example.com/hacked:1"}]}}}})
        [report] = drift_check(environment="dev")
        assert report["reconciled"] is True

    def one(action: str) -> dict:
        [kept] = ledger.actions(release_id=rid, action=action)
        return kept

    # the pull request's checks and merge
    checks = one(PULL_REQUEST_CHECKS_PASSED)
    assert checks["actor"] == CHECKS_ACTOR and f"sample-app#{checked.number} at {checked.head_sha[:12]}" in checks[
        "reason"]
    merged = one(PULL_REQUEST_MERGED)
    assert merged["actor"] == PLANNER and f"as {merge.merge_sha[:12]}" in merged["reason"]
    # the rejection: by the policy gate, naming the policy
    [rejected] = [t for t in ledger.transitions(f"{rid}/r1/dev") if t.to_state is PlanState.REJECTED]
    assert rejected.actor == POLICY_ACTOR and "tests-passed" in rejected.reason
    assert rejected.cause is PromotionCause.POLICY
    assert ledger.last_transition(f"{rid}/r1/dev").reason == "revise and replan: superseded by revision 2"
    # the refused approval: the planner's, refused by the resume call, with the reason
    [refused, counted] = ledger.approvals(f"{rid}/r2/staging")
    assert (refused.approver, refused.counted) == (PLANNER, False)
    assert "is not one of" in refused.refused_reason
    assert (counted.approver, counted.counted) == ("user:alice", True)
    # the rollback: prod failed and rolled back by the promotion, with the failure
    started, finished = one(ROLLBACK_STARTED), one(ROLLBACK_FINISHED)
    assert started["actor"] == finished["actor"] == PROMOTION_ACTOR and started["detail"]["environment"] == "prod"
    failed = ledger.transitions(f"{rid}/r2/prod")[-2]  # Promoting -> Failed
    assert "TransientError" in failed.reason and failed.cause is PromotionCause.DEPLOY_FAILED
    # the replay: by whom, of which incident
    replayed = one("replayed")
    assert replayed["actor"] == ONCALL and f"replay of incident {incident['id']} (check_health" in replayed["reason"]
    assert ledger.last_transition(f"{rid}/r2/prod").actor == ONCALL  # Failed -> Promoting
    # the drift reconcile: under the release dev runs, by the drift check, naming what it re-applied
    reconciled = one(DRIFT_RECONCILED)
    assert reconciled["actor"] == DRIFT_ACTOR and reconciled["detail"]["environment"] == "dev"
    assert f"re-applied changed Deployment sample-dev/{deployment['metadata']['name']}: spec.template" in reconciled[
        "reason"]

    # the same decisions on the release's timeline, each with its actor
    timeline = {(e.kind, e.actor) for e in ledger_entries(ledger, rid)}
    assert {(PULL_REQUEST_CHECKS_PASSED, CHECKS_ACTOR), (PULL_REQUEST_MERGED, PLANNER), ("policy", "system:policy"),
            ("transition", POLICY_ACTOR), ("approval-refused", PLANNER), ("approval", "user:alice"),
            (ROLLBACK_STARTED, PROMOTION_ACTOR), (ROLLBACK_FINISHED, PROMOTION_ACTOR), ("incident", "system:retries"),
            ("replayed", ONCALL), ("transition", ONCALL), (DRIFT_RECONCILED, DRIFT_ACTOR)} <= timeline


def _apps_api(kubeconfig: str):
    """The official Kubernetes client, as an operator with kubectl would edit the environment."""
    from kubernetes import client, config

    return client.AppsV1Api(config.new_client_from_config_dict(yaml.safe_load(kubeconfig)))
