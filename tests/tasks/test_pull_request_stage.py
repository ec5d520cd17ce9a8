"""Stages 2-4 outside the flow: validation and "second run is a no-op"."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from blocks.git_host import CheckCommand, LocalGitHost
from delivery.errors import CheckFailed, InvalidInput
from delivery.models import Artifact, ArtifactValidation, PullRequestStatus, ReleaseRequest
from tasks.commit import create_commit
from tasks.pull_request import check_pull_request, merge_pull_request, open_pull_request


@pytest.fixture
def host(tmp_path: Path) -> LocalGitHost:
    git_host = LocalGitHost(root=str(tmp_path / "repos"),
                            check_commands=[CheckCommand(name="positive", run="grep -q 'VALUE = [1-9]' app/main.py")])
    git_host.ensure_repository("shop", initial_files={"app/main.py": b"VALUE = 1\n"})
    return git_host


def request(release_id: str = "rel-p1", text: str = "VALUE = 2\n") -> ReleaseRequest:
    artifact = Artifact(artifact_id="main", path="app/main.py", content=text,
                        sha256=hashlib.sha256(text.encode()).hexdigest(),
                        validation=ArtifactValidation(passed=True, validator="lint"))
    return ReleaseRequest(release_id=release_id, trace_id="trace-p1-0001", app="shop", artifacts=[artifact],
                          requested_by="agent:rm")


def test_each_stage_run_twice_changes_nothing_the_second_time(host, prefect_server):
    req = request()
    commit = create_commit.fn(host, req)
    pr = open_pull_request.fn(host, req, commit)
    assert open_pull_request.fn(host, req, commit).number == pr.number
    checked = check_pull_request.fn(host, req, pr)
    assert checked.checks_passed
    merge = merge_pull_request.fn(host, req, checked)
    main_after = host.resolve("shop", "main")
    again = merge_pull_request.fn(host, req, checked)
    assert merge.created and not again.created and again.merge_sha == merge.merge_sha == main_after
    # After the merge, the commit and PR stages find what exists.
    assert not create_commit.fn(host, req).created
    assert open_pull_request.fn(host, req, commit).status is PullRequestStatus.MERGED
    assert host.resolve("shop", "main") == main_after
    assert [p.name for p in Path(host.clone_url("shop")).with_suffix(".prs").glob("*.json")] == ["1.json"]


def test_failing_check_raises_check_failed_naming_the_check_and_does_not_merge(host, prefect_server):
    req = request(text="VALUE = 0\n")
    commit = create_commit.fn(host, req)
    pr = open_pull_request.fn(host, req, commit)
    with pytest.raises(CheckFailed, match=r"shop#1 failed its checks: positive: exit code 1"):
        check_pull_request.fn(host, req, pr)
    with pytest.raises(CheckFailed):
        merge_pull_request.fn(host, req, host.get_pull_request("shop", 1))
    assert host.get_pull_request("shop", 1).status is PullRequestStatus.OPEN


def test_stages_refuse_a_pull_request_or_commit_of_another_release(host, prefect_server):
    req, other = request(), request(release_id="rel-other")
    commit = create_commit.fn(host, req)
    with pytest.raises(InvalidInput, match="commit.branch 'release/rel-p1' is not the release branch"):
        open_pull_request.fn(host, other, commit)
    pr = open_pull_request.fn(host, req, commit)
    with pytest.raises(InvalidInput, match="is not release rel-other's"):
        check_pull_request.fn(host, other, pr)
    with pytest.raises(InvalidInput, match="is not release rel-other's"):
        merge_pull_request.fn(host, other, pr)
    with pytest.raises(InvalidInput, match="git_host must be a GitHost"):
        check_pull_request.fn(object(), req, pr)
