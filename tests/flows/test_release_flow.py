"""The release flow in a real Prefect server over real bare repositories (stages 1-4)."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from git import Repo

from blocks.git_host import CheckCommand, LocalGitHost
from delivery.errors import CheckFailed, InvalidInput
from delivery.models import Artifact, ArtifactValidation, PullRequestStatus, ReleaseRequest

EVENTS = ["delivery.CommitCreated", "delivery.PullRequestOpened", "delivery.PullRequestChecked",
          "delivery.PullRequestMerged"]


@pytest.fixture
def host(tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> LocalGitHost:
    """A saved LocalGitHost (its own block name) with a seeded ``shop`` repository and a real check."""
    git_host = LocalGitHost(
        root=str(tmp_path / "repos"),
        check_commands=[CheckCommand(name="no-todo", run="! grep -rq TODO app")],
    )
    git_host.ensure_repository("shop", initial_files={"README.md": b"# shop\n", "app/main.py": b"VALUE = 1\n"})
    name = f"release-flow-{uuid.uuid4().hex[:8]}"
    git_host.save(name, overwrite=True)
    monkeypatch.setenv("DELIVERY_GIT_HOST_BLOCK", f"local-git-host/{name}")
    return git_host


def make_artifact(artifact_id: str, path: str, text: str) -> Artifact:
    return Artifact(artifact_id=artifact_id, path=path, content=text,
                    sha256=hashlib.sha256(text.encode()).hexdigest(),
                    validation=ArtifactValidation(passed=True, validator="ci-lint", report_url="https://ci/1"))


def make_request(release_id: str, *, main_text: str = "VALUE = 2\n") -> ReleaseRequest:
    return ReleaseRequest(
        release_id=release_id, app="shop", requested_by="agent:release-manager",
        artifacts=[make_artifact("shop-main", "app/main.py", main_text),
                   make_artifact("shop-config", "config/settings.toml", "[shop]\nmode = 'prod'\n")],
    )


def snapshot(host: LocalGitHost) -> dict[str, Any]:
    """Every ref of the repository and every pull-request record: what 'unchanged' means."""
    with Repo(host.clone_url("shop")) as repo:
        refs = {ref.path: ref.commit.hexsha for ref in repo.references}
    records = Path(host.clone_url("shop")).with_suffix(".prs")
    prs = sorted(p.name for p in records.glob("*.json")) if records.exists() else []
    return {"refs": refs, "prs": prs}


def wait_for_events(api_url: str, trace_id: str, names: list[str], *, deadline_s: float = 60) -> list[dict]:
    """Poll /api/events/filter by the related trace resource until ``names`` all arrived."""
    body = {"filter": {"related": {"id": [f"delivery.trace.{trace_id}"]}, "order": "ASC"}, "limit": 50}
    deadline = time.monotonic() + deadline_s
    events: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        events = response.json()["events"]
        if set(names) <= {e["event"] for e in events}:
            return events
        time.sleep(0.5)
    raise AssertionError(f"events {names} not all found for trace {trace_id}; got {[e['event'] for e in events]}")


def read_flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_release_runs_commit_pr_checks_merge_and_is_traceable(host, prefect_server):
    from flows.release import release

    request = make_request("rel-flow-1")
    main_before = host.resolve("shop", "main")
    state = release(request, return_state=True)
    assert state.is_completed(), state
    summary = state.result()

    # The branch with the artifacts and the trailers.
    assert host.read_file("shop", "config/settings.toml", ref="release/rel-flow-1") == b"[shop]\nmode = 'prod'\n"
    assert summary.commit.trailers == {"Release-Id": ["rel-flow-1"], "Trace-Id": [request.trace_id],
                                       "Artifact-Id": ["shop-main", "shop-config"]}
    # The pull request record, merged after its checks passed.
    pr = host.get_pull_request("shop", summary.pull_request.number)
    assert (pr.source_branch, pr.target_branch, pr.status) == ("release/rel-flow-1", "main", PullRequestStatus.MERGED)
    assert pr.head_sha == summary.commit.sha and pr.merge_sha == summary.merge.merge_sha
    assert {c.name for c in pr.checks} == {"branch-policy", "policy-gate", "mergeable", "no-todo"}
    assert pr.checks_passed
    # The merge commit on main: two parents, the release's trailers.
    with Repo(host.clone_url("shop")) as repo:
        merge = repo.commit("refs/heads/main")
        assert merge.hexsha == summary.merge.merge_sha
        assert [p.hexsha for p in merge.parents] == [main_before, summary.commit.sha]
        assert f"Trace-Id: {request.trace_id}" in merge.message and "Artifact-Id: shop-config" in merge.message
    assert host.read_file("shop", "app/main.py", ref="main") == b"VALUE = 2\n"

    # The flow run: named after the release, tagged with release and trace.
    flow_run = read_flow_run(state.state_details.flow_run_id)
    assert flow_run.name == "rel-flow-1"
    assert {"release:rel-flow-1", f"trace:{request.trace_id}"} <= set(flow_run.tags)

    # The four events, found by the trace id alone.
    events = wait_for_events(prefect_server, request.trace_id, EVENTS)
    by_name = {e["event"]: e for e in events}
    assert all(by_name[n]["resource"]["prefect.resource.id"] == "delivery.release.rel-flow-1" for n in EVENTS)
    assert by_name["delivery.CommitCreated"]["payload"]["commit"]["sha"] == summary.commit.sha
    assert by_name["delivery.PullRequestChecked"]["payload"]["passed"] is True
    assert by_name["delivery.PullRequestMerged"]["payload"]["merge"]["merge_sha"] == summary.merge.merge_sha


def test_running_the_same_release_again_writes_nothing_and_completes(host, prefect_server):
    from flows.release import release

    request = make_request("rel-flow-again")
    first_state = release(request, return_state=True)
    first = first_state.result()
    before = snapshot(host)
    second_state = release(make_request("rel-flow-again"), return_state=True)  # a new flow run, new trace
    assert second_state.is_completed()
    second = second_state.result()
    assert snapshot(host) == before
    assert (second.commit.sha, second.pull_request.number, second.merge.merge_sha) == (
        first.commit.sha, first.pull_request.number, first.merge.merge_sha)
    assert second_state.state_details.flow_run_id != first_state.state_details.flow_run_id
    assert read_flow_run(second_state.state_details.flow_run_id).name == "rel-flow-again"


def test_a_failing_check_stops_the_release_and_leaves_the_pr_open(host, prefect_server):
    from flows.release import release

    request = make_request("rel-flow-todo", main_text="VALUE = 2  # TODO remove\n")
    main_before = host.resolve("shop", "main")
    state = release(request, return_state=True)
    assert state.is_failed()
    with pytest.raises(CheckFailed, match="no-todo: exit code 1"):
        state.result()
    pr = host.get_pull_request("shop", 1)
    assert pr.status is PullRequestStatus.OPEN and not pr.checks_passed
    assert host.resolve("shop", "main") == main_before
    events = wait_for_events(prefect_server, request.trace_id, EVENTS[:3])
    assert "delivery.PullRequestMerged" not in {e["event"] for e in events}
    checked = next(e for e in events if e["event"] == "delivery.PullRequestChecked")
    assert checked["payload"]["passed"] is False
    assert checked["payload"]["failed"] == ["no-todo: exit code 1"]


BAD_INPUT = [
    ("path escaping with ../", {"artifacts": [{"path": "../evil.py"}]}, "escapes"),
    ("absolute path", {"artifacts": [{"path": "/etc/passwd"}]}, "absolute"),
    ("empty artifact list", {"artifacts": []}, "artifacts"),
    ("duplicate artifact ids", {"artifacts": [{}, {"path": "app/other.py"}]}, "duplicate artifact_id"),
    ("validation did not pass", {"artifacts": [{"validation": {"passed": False, "validator": "lint"}}]},
     "did not pass"),
    ("invalid release id (bad branch)", {"release_id": "rel..x"}, "release_id"),
]


def request_dict(changes: dict[str, Any]) -> dict[str, Any]:
    base_artifact = make_artifact("shop-main", "app/main.py", "VALUE = 3\n").model_dump(mode="json")
    body: dict[str, Any] = {"release_id": "rel-bad", "app": "shop", "requested_by": "agent:rm",
                            "artifacts": [base_artifact]}
    for key, value in changes.items():
        if key == "artifacts":
            body["artifacts"] = [{**base_artifact, **patch} for patch in value]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(("case", "changes", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_before_anything_is_written(host, prefect_server, case, changes, message):
    from flows.release import release

    before = snapshot(host)
    state = release(request=request_dict(changes), return_state=True)
    assert state.is_failed(), case
    assert message in str(state.message) + str(state.result(raise_on_failure=False))
    assert snapshot(host) == before


def test_a_release_for_an_unknown_app_is_refused_before_anything_is_written(host, prefect_server):
    from flows.release import release

    request = make_request("rel-no-app").model_copy(update={"app": "ghost"})
    before = snapshot(host)
    state = release(request, return_state=True)
    with pytest.raises(InvalidInput, match="app 'ghost': no such repository"):
        state.result()
    assert snapshot(host) == before
    assert not (Path(host.root) / "ghost.git").exists()
