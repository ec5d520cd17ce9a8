"""The promotion loop on a real Prefect server, the simulator, real git repositories and the ledger."""

from __future__ import annotations

import threading

import httpx
import pytest
import yaml
from support.governance import PLANNER, Approver, Step, new_request
from support.promotion import FAIL, delivery_yaml, promote, promotion_stack

from delivery.errors import HealthCheckFailed, InvalidInput
from delivery.plan import PlanState, PromotionCause
from flows.deploy import PROMOTION_ACTOR
from tasks.summary import artifact_key

pytestmark = pytest.mark.usefixtures("prefect_server")


def _history(ledger, plan_id: str) -> list[tuple[str, str, str]]:
    return [(t.from_state.value, t.to_state.value, t.actor) for t in ledger.transitions(plan_id)]


def test_full_path_with_approvals_from_another_thread(prefect_server, ledger, tmp_path) -> None:
    with promotion_stack(tmp_path) as stack:
        request = new_request()
        approver = Approver(prefect_server, request.release_id, [
            Step("user:alice", environment="staging"),
            Step("user:bob", environment="prod"),
            Step("user:carol", environment="prod"),
        ]).start()
        summary = promote(request, stack.build)
        approver.join()

        assert [(e.environment, e.state) for e in summary.environments] == [
            ("dev", PlanState.DEPLOYED), ("staging", PlanState.DEPLOYED), ("prod", PlanState.DEPLOYED)]
        assert summary.environments[2].approvers == ["user:bob", "user:carol"]
        rid = request.release_id
        assert _history(ledger, f"{rid}/r1/dev") == [
            ("Planned", "PendingApproval", PLANNER),
            ("PendingApproval", "Approved", "system:policy-gate"),
            ("Approved", "Promoting", PROMOTION_ACTOR),
            ("Promoting", "Deployed", PROMOTION_ACTOR),
        ]
        assert _history(ledger, f"{rid}/r1/staging")[1] == ("PendingApproval", "Approved", "user:alice")
        assert _history(ledger, f"{rid}/r1/prod")[1] == ("PendingApproval", "Approved", "user:carol")
        assert [p.state for p in ledger.plans(release_id=rid)] == [PlanState.DEPLOYED] * 3
        for namespace in ("sample-dev", "sample-staging", "sample-prod"):
            deployments = stack.live_deployments(namespace)
            assert deployments and all(
                d["spec"]["template"]["spec"]["containers"][0]["image"].endswith("sha256:" + "d" * 64)
                for d in deployments)
        assert stack.repo.healthy_revision("prod", "sample-app") is not None

        with httpx.Client(base_url=prefect_server + "/") as http:
            artifact = http.get(f"artifacts/{artifact_key(rid)}/latest").json()
        table = artifact["data"]
        assert "| prod | Deployed | 1 | 1 | user:bob, user:carol |" in table
        assert "| dev | Deployed | 1 | 1 | - |" in table


def test_prod_health_failure_rolls_prod_back_and_keeps_dev_and_staging(prefect_server, ledger, tmp_path) -> None:
    with promotion_stack(tmp_path, prod_values=FAIL) as stack:
        request = new_request()
        approver = Approver(prefect_server, request.release_id, [
            Step("user:alice", environment="staging"),
            Step("user:alice", environment="prod"),
            Step("user:bob", environment="prod"),
        ]).start()
        with pytest.raises(HealthCheckFailed, match="prod: Failed"):
            promote(request, stack.build)
        approver.join()

        states = {p.environment: p.state for p in ledger.plans(release_id=request.release_id)}
        assert states == {"dev": PlanState.DEPLOYED, "staging": PlanState.DEPLOYED, "prod": PlanState.FAILED}
        failed = ledger.transitions(f"{request.release_id}/r1/prod")[-1]
        assert (failed.from_state, failed.to_state) == (PlanState.PROMOTING, PlanState.FAILED)
        assert "HealthCheckFailed" in failed.reason and "rolling back" in failed.reason
        assert failed.cause is PromotionCause.HEALTH_FAILED
        finished = [a for a in ledger.actions(release_id=request.release_id, action="rolled-back")
                    if a["detail"]["environment"] == "prod"]
        assert len(finished) == 1 and "rolled back" in finished[0]["reason"]
        # prod is back where it was (nothing healthy before: no canary left running), the others untouched
        assert not [d for d in stack.live_deployments("sample-prod") if d["metadata"]["name"].endswith("-canary")]
        assert stack.live_deployments("sample-dev") and stack.live_deployments("sample-staging")
        # the environments overview, refreshed after each environment: what runs where, and prod's attempt
        overview = httpx.get(f"{prefect_server}/artifacts/environments/latest", timeout=30).json()["data"]
        rows = {line.split("|")[1].strip(): line for line in overview.splitlines() if line.startswith("| ")}
        assert request.release_id in rows["dev"] and "| Healthy |" in rows["staging"]
        assert "not deployed" in rows["prod"] and "Failed (rolled back)" in rows["prod"]


def test_two_releases_into_the_same_environment_do_not_overlap(prefect_server, ledger, tmp_path) -> None:
    with promotion_stack(tmp_path) as stack:
        requests = [new_request(target_environment="dev") for _ in range(2)]
        errors: list[BaseException] = []

        def run(request) -> None:
            try:
                promote(request, stack.build)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(r,)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert not errors, errors

        windows = []
        for request in requests:
            moves = {t.to_state: t.at for t in ledger.transitions(f"{request.release_id}/r1/dev")}
            assert PlanState.DEPLOYED in moves
            windows.append((moves[PlanState.PROMOTING], moves[PlanState.DEPLOYED]))
        (first_start, first_end), (second_start, second_end) = sorted(windows)
        assert first_end <= second_start, f"promotions overlap: {windows}"
        assert {p.environment for p in ledger.plans()} == {"dev"}  # the target stopped the path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_environment": "qa"}, "target_environment: unknown environment 'qa'; the promotion path is dev"),
    ],
)
def test_bad_request_is_refused_before_anything_is_written(prefect_server, ledger, tmp_path, change, message) -> None:
    with promotion_stack(tmp_path) as stack:
        head = stack.repo.head()
        request = new_request(**change)
        with pytest.raises(InvalidInput, match=message):
            promote(request, stack.build)
        assert ledger.plans(release_id=request.release_id) == []
        assert stack.repo.head() == head


def test_invalid_delivery_yaml_stops_before_planning(prefect_server, ledger, tmp_path) -> None:
    config = delivery_yaml("kubernetes-runtime/none")
    config["environments"]["prod"]["approval"]["min_approvers"] = 5
    with promotion_stack(tmp_path, config=config) as stack:
        request = new_request()
        with pytest.raises(InvalidInput, match="environments.prod.approval.min_approvers: 5 distinct"):
            promote(request, stack.build)
        assert ledger.plans(release_id=request.release_id) == []
        assert yaml.safe_load(stack.repo.read_config())["path"] == ["dev", "staging", "prod"]
