"""Stages 2-4 outside the flow: validation, "second run is a no-op", and their decisions in the ledger."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from blocks.git_host import CheckCommand, LocalGitHost
from delivery import failpoints
from delivery.errors import CheckFailed, InvalidInput
from delivery.ledger import PULL_REQUEST_CHECKS_FAILED, PULL_REQUEST_CHECKS_PASSED, PULL_REQUEST_MERGED
from delivery.models import Artifact, ArtifactValidation, PullRequestStatus, ReleaseRequest
from tasks.commit import create_commit
from tasks.pull_request import CHECKS_ACTOR, check_pull_request, merge_pull_request, open_pull_request


@pytest.fixture
def host(tmp_path: Path, ledger) -> LocalGitHost:
    """A git host with one check; the stages record their decisions in this test's ledger."""
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


def test_each_stage_run_twice_changes_nothing_the_second_time(host, prefect_server, ledger):
    req = request()
    commit = create_commit.fn(host, req)
    pr = open_pull_request.fn(host, req, commit)
    assert open_pull_request.fn(host, req, commit).number == pr.number
    checked = check_pull_request.fn(host, req, pr)
    assert checked.checks_passed
    assert check_pull_request.fn(host, req, pr).head_sha == checked.head_sha  # same head, same outcome
    merge = merge_pull_request.fn(host, req, checked)
    main_after = host.resolve("shop", "main")
    again = merge_pull_request.fn(host, req, checked)
    assert merge.created and not again.created and again.merge_sha == merge.merge_sha == main_after
    assert host.pull_request_comments("shop", pr.number) == [  # the outcome, said once
        f"Merged into main as {merge.merge_sha} by the release flow.\n\nRelease rel-p1 of shop. "
        "Trace-Id: trace-p1-0001"]
    # After the merge, the commit and PR stages find what exists.
    assert not create_commit.fn(host, req).created
    assert open_pull_request.fn(host, req, commit).status is PullRequestStatus.MERGED
    assert host.resolve("shop", "main") == main_after
    assert [p.name for p in Path(host.clone_url("shop")).with_suffix(".prs").glob("*.json")] == ["1.json"]
    assert check_pull_request.fn(host, req, pr).checks_passed  # after the merge: the stored results
    # each decision kept once, with its actor and reason
    kept = [(a["action"], a["actor"]) for a in ledger.actions(release_id=req.release_id)]
    assert kept == [(PULL_REQUEST_CHECKS_PASSED, CHECKS_ACTOR), (PULL_REQUEST_MERGED, "agent:rm")]
    checks, merged = ledger.actions(release_id=req.release_id)
    assert checks["reason"] == (f"shop#1 at {checked.head_sha[:12]}: 4 check(s) passed "
                                "(branch-policy, policy-gate, mergeable, positive)")
    assert [(c["name"], c["kind"], c["status"]) for c in checks["detail"]["checks"]] == [
        (c.name, c.kind, "passed") for c in checked.checks]
    assert {c["kind"] for c in checks["detail"]["checks"]} == {"branch_policy", "policy_gate", "command"}
    assert f"merged into main as {merge.merge_sha[:12]}" in merged["reason"]
    assert merged["detail"]["merge_sha"] == merge.merge_sha and merged["detail"]["head_sha"] == checked.head_sha


def test_failing_check_raises_check_failed_naming_the_check_and_does_not_merge(host, prefect_server, ledger):
    req = request(text="VALUE = 0\n")
    commit = create_commit.fn(host, req)
    pr = open_pull_request.fn(host, req, commit)
    for _ in range(2):  # a re-run on the same head records the same failure once
        with pytest.raises(CheckFailed, match=r"shop#1 failed its checks: positive: exit code 1"):
            check_pull_request.fn(host, req, pr)
    with pytest.raises(CheckFailed):
        merge_pull_request.fn(host, req, host.get_pull_request("shop", 1))
    assert host.get_pull_request("shop", 1).status is PullRequestStatus.OPEN
    [said] = host.pull_request_comments("shop", 1)  # twice checked, said once
    assert said.startswith("Checks failed at ") and "positive: exit code 1" in said and "trace-p1-0001" in said
    [failed] = ledger.actions(release_id=req.release_id)
    assert (failed["action"], failed["actor"], failed["detail"]["passed"]) == (PULL_REQUEST_CHECKS_FAILED,
                                                                              CHECKS_ACTOR, False)
    head = host.get_pull_request("shop", 1).head_sha
    assert failed["reason"] == (f"shop#1 at {head[:12]}: failed positive: exit code 1; "
                                "passed branch-policy, policy-gate, mergeable")


def test_a_stage_run_again_after_its_effect_records_its_decision_once(host, prefect_server, ledger, tmp_path,
                                                                     monkeypatch):
    """The failpoints sit after each stage's work, before its result is kept: the retry runs the stage again."""
    armed = tmp_path / "failpoints"
    failpoints.arm(armed, "check_pull_request:transient", "merge_pull_request:transient")
    monkeypatch.setenv(failpoints.SETTING, str(armed))
    req = request(release_id=f"rel-{uuid.uuid4().hex[:8]}")
    pr = open_pull_request.fn(host, req, create_commit.fn(host, req))

    merge = merge_pull_request(host, req, check_pull_request(host, req, pr))  # the tasks, with their retries

    assert failpoints.armed(armed) == []  # each stage did its work twice
    assert [a["action"] for a in ledger.actions(release_id=req.release_id)] == [PULL_REQUEST_CHECKS_PASSED,
                                                                              PULL_REQUEST_MERGED]
    assert ledger.actions(release_id=req.release_id)[1]["detail"]["merge_sha"] == merge.merge_sha


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
