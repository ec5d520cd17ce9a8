"""The release flow in a real Prefect server on the whole wired product (tests/support/release.py).

Stages 1-4 in detail (branch, trailers, pull request, checks, merge, run name and tags, events by
trace), the re-run that writes nothing, and the refusals that happen before the first write. The
releases here stop at dev (``target_environment="dev"``): the full path is test_release_e2e.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from git import Repo
from support.release import APP, ReleaseStack
from support.runtime import wait_for_events

from delivery.errors import CheckFailed, InvalidInput
from delivery.ids import new_trace_id
from delivery.models import Artifact, PullRequestStatus
from delivery.plan import PlanState

STAGES_1_TO_4 = ["CommitCreated", "PullRequestOpened", "PullRequestChecked", "PullRequestMerged"]
BROKEN_SERVICE_TEST = (Path(__file__).resolve().parents[2] / "examples" / APP / "tests" / "test_service.py"
                       ).read_text() + "\n\ndef test_the_change_broke_the_service():\n    assert False\n"


def read_flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_release_runs_commit_pr_checks_merge_and_is_traceable(release_stack: ReleaseStack, prefect_server):
    from flows.release import release

    host = release_stack.host
    request = release_stack.request("rel-flow-1", target_environment="dev")
    main_before = host.resolve(APP, "main")
    state = release(request, return_state=True)
    assert state.is_completed(), state
    summary = state.result()

    # The branch with the artifacts and the trailers.
    notes = request.artifacts[1]
    assert host.read_file(APP, "CHANGES.md", ref="release/rel-flow-1") == notes.data()
    assert summary.commit.trailers == {"Release-Id": ["rel-flow-1"], "Trace-Id": [request.trace_id],
                                       "Artifact-Id": ["app-version", "release-notes"],
                                       "Artifact-Sha256": [f"{a.artifact_id} {a.sha256}" for a in request.artifacts]}
    # The pull request record, merged after its checks (the service's tests among them) passed.
    pr = host.get_pull_request(APP, summary.pull_request.number)
    assert (pr.source_branch, pr.target_branch, pr.status) == ("release/rel-flow-1", "main", PullRequestStatus.MERGED)
    assert pr.head_sha == summary.commit.sha and pr.merge_sha == summary.merge.merge_sha
    assert {c.name for c in pr.checks} == {"branch-policy", "policy-gate", "mergeable", "unit-tests"}
    assert pr.checks_passed
    # The merge commit: two parents, the release's trailers; main holds it (and the build ran on it).
    with Repo(host.clone_url(APP)) as repo:
        merge = repo.commit(summary.merge.merge_sha)
        assert [p.hexsha for p in merge.parents] == [main_before, summary.commit.sha]
        assert f"Trace-Id: {request.trace_id}" in merge.message and "Artifact-Id: release-notes" in merge.message
        assert repo.is_ancestor(merge, repo.commit("refs/heads/main"))
    assert host.read_file(APP, "src/sample_app/__init__.py", ref="main") == request.artifacts[0].data()
    assert summary.build.commit == host.resolve(APP, "main")
    # Built and promoted up to the target, not further.
    assert [(e.environment, e.state) for e in summary.promotion.environments] == [("dev", PlanState.DEPLOYED)]

    # The flow run: named after the release, tagged with release and trace.
    flow_run = read_flow_run(state.state_details.flow_run_id)
    assert flow_run.name == "rel-flow-1"
    assert {"release:rel-flow-1", f"trace:{request.trace_id}"} <= set(flow_run.tags)

    # The four events, found by the trace id alone.
    events = wait_for_events(prefect_server, request.trace_id, STAGES_1_TO_4)
    by_name = {e["event"].removeprefix("delivery."): e for e in events}
    assert all(by_name[n]["resource"]["prefect.resource.id"] == "delivery.release.rel-flow-1" for n in STAGES_1_TO_4)
    assert by_name["CommitCreated"]["payload"]["commit"]["sha"] == summary.commit.sha
    assert by_name["PullRequestChecked"]["payload"]["passed"] is True
    assert by_name["PullRequestMerged"]["payload"]["merge"]["merge_sha"] == summary.merge.merge_sha


def test_running_the_same_release_again_writes_nothing_and_completes(release_stack: ReleaseStack):
    from flows.release import release

    request = release_stack.request("rel-flow-again", target_environment="dev")
    first_state = release(request, return_state=True)
    first = first_state.result()
    before = release_stack.snapshot()
    assert before["feed"] and before["runs"] and before["images"] and before["plans"]  # the first run wrote them

    again = request.model_copy(update={"trace_id": new_trace_id()})  # a new flow run, a new trace
    second_state = release(again, return_state=True)
    assert second_state.is_completed()
    second = second_state.result()
    # No second commit, PR, merge, pipeline run, package, image, plan, transition or GitOps commit.
    assert release_stack.snapshot() == before
    assert (second.commit.sha, second.pull_request.number, second.merge.merge_sha) == (
        first.commit.sha, first.pull_request.number, first.merge.merge_sha)
    assert second.build == first.build
    assert [(e.environment, e.state, e.plan_id) for e in second.promotion.environments] == [
        (e.environment, e.state, e.plan_id) for e in first.promotion.environments]
    assert second_state.state_details.flow_run_id != first_state.state_details.flow_run_id
    assert read_flow_run(second_state.state_details.flow_run_id).name == "rel-flow-again"


def test_a_failing_check_stops_the_release_and_leaves_the_pr_open(release_stack: ReleaseStack, prefect_server):
    from flows.release import release

    host = release_stack.host
    broken = Artifact.from_text("service-tests", "tests/test_service.py", BROKEN_SERVICE_TEST, validator="ci-lint")
    request = release_stack.request("rel-flow-red", artifacts=[broken], target_environment="dev")
    main_before = host.resolve(APP, "main")
    state = release(request, return_state=True)
    assert state.is_failed()
    with pytest.raises(CheckFailed, match="unit-tests: exit code 1"):
        state.result()
    pr = host.get_pull_request(APP, 1)
    assert pr.status is PullRequestStatus.OPEN and not pr.checks_passed
    assert host.resolve(APP, "main") == main_before
    events = wait_for_events(prefect_server, request.trace_id, STAGES_1_TO_4[:3])
    assert "delivery.PullRequestMerged" not in {e["event"] for e in events}
    checked = next(e for e in events if e["event"] == "delivery.PullRequestChecked")
    assert checked["payload"]["passed"] is False
    assert checked["payload"]["failed"] == ["unit-tests: exit code 1"]
    # Nothing after the merge happened: no pipeline run, no plan.
    assert release_stack.snapshot()["runs"] == [] and release_stack.ledger.plans() == []


BAD_INPUT = [
    ("path escaping with ../", {"artifacts": [{"path": "../evil.py"}]}, "escapes"),
    ("absolute path", {"artifacts": [{"path": "/etc/passwd"}]}, "absolute"),
    ("empty artifact list", {"artifacts": []}, "artifacts"),
    ("duplicate artifact ids", {"artifacts": [{}, {"path": "src/other.py"}]}, "duplicate artifact_id"),
    ("validation did not pass", {"artifacts": [{"validation": {"passed": False, "validator": "lint"}}]},
     "did not pass"),
    ("invalid release id (bad branch)", {"release_id": "rel..x"}, "release_id"),
]


def request_dict(changes: dict[str, Any]) -> dict[str, Any]:
    base_artifact = Artifact.from_text("notes", "CHANGES.md", "- bad\n", validator="ci-lint").model_dump(mode="json")
    body: dict[str, Any] = {"release_id": "rel-bad", "app": APP, "requested_by": "agent:rm",
                            "target_environment": "dev", "artifacts": [base_artifact]}
    for key, value in changes.items():
        if key == "artifacts":
            body["artifacts"] = [{**base_artifact, **patch} for patch in value]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(("case", "changes", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_before_anything_is_written(release_stack: ReleaseStack, case, changes, message):
    from flows.release import release

    before = release_stack.snapshot()
    state = release(request=request_dict(changes), return_state=True)
    assert state.is_failed(), case
    assert message in str(state.message) + str(state.result(raise_on_failure=False))
    assert release_stack.snapshot() == before


def test_a_release_for_an_unknown_app_is_refused_before_anything_is_written(release_stack: ReleaseStack):
    from flows.release import release

    request = release_stack.request("rel-no-app", target_environment="dev").model_copy(update={"app": "ghost"})
    before = release_stack.snapshot()
    state = release(request, return_state=True)
    with pytest.raises(InvalidInput, match="app 'ghost': no such repository"):
        state.result()
    assert release_stack.snapshot() == before
    assert not (Path(release_stack.host.root) / "ghost.git").exists()
