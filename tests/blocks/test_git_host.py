"""LocalGitHost over real bare repositories: commits, races, pull requests, checks, merges."""

from __future__ import annotations

import threading

import pytest
from git import Repo

from blocks import git_writes
from blocks.git_host import CheckCommand, LocalGitHost
from delivery.errors import (
    CheckFailed,
    ConflictError,
    InvalidInput,
    MergeConflict,
    NotFound,
    PermanentError,
    TransientError,
)
from delivery.models import CheckStatus, PullRequestStatus

SEED = {
    "README.md": b"# shop\n",
    "app/main.py": b"VALUE = 1\n",
    "tests/test_value.sh": b"grep -q 'VALUE = ' app/main.py\n",
}
TRAILERS = [("Release-Id", "rel-1"), ("Trace-Id", "trace-0001")]


@pytest.fixture
def host(tmp_path) -> LocalGitHost:
    """A host with one seeded repository ``shop`` and a shell check over the merge result."""
    git_host = LocalGitHost(
        root=str(tmp_path / "repos"),
        check_commands=[CheckCommand(name="value-defined", run="sh tests/test_value.sh")],
    )
    git_host.ensure_repository("shop", initial_files=SEED)
    return git_host


def history(host: LocalGitHost, branch: str) -> list[str]:
    with Repo(host.clone_url("shop")) as repo:
        return [c.hexsha for c in repo.iter_commits(f"refs/heads/{branch}")]


def release_branch(host: LocalGitHost, name: str = "release/rel-1", files=None, trailers=TRAILERS):
    return host.commit_files("shop", branch=name, files=files or {"app/main.py": b"VALUE = 2\n"},
                             message="Release rel-1", trailers=trailers)


# --------------------------------------------------------------------------- commits


def test_commit_creates_the_branch_from_base_with_trailers(host):
    main_before = host.resolve("shop", "main")
    commit = release_branch(host, files={"app/main.py": b"VALUE = 2\n", "README.md": None})
    assert commit.created and commit.parent == main_before
    assert commit.trailers == {"Release-Id": ["rel-1"], "Trace-Id": ["trace-0001"]}
    assert host.read_file("shop", "app/main.py", ref="release/rel-1") == b"VALUE = 2\n"
    assert host.read_file("shop", "README.md", ref="release/rel-1") is None  # None deleted it
    assert host.read_file("shop", "README.md", ref="main") == b"# shop\n"
    assert set(host.read_tree("shop", "app", ref="release/rel-1")) == {"app/main.py"}
    with Repo(host.clone_url("shop")) as repo:
        message = repo.commit("refs/heads/release/rel-1").message
    assert message.endswith("Release-Id: rel-1\nTrace-Id: trace-0001\n")


def test_committing_the_same_contents_again_is_a_no_op(host):
    first = release_branch(host)
    again = release_branch(host)
    assert not again.created and again.sha == first.sha
    assert history(host, "release/rel-1")[0] == first.sha
    assert host.find_commit("shop", branch="release/rel-1", trailer=("Release-Id", "rel-1")).sha == first.sha
    assert host.find_commit("shop", branch="release/rel-1", trailer=("Release-Id", "rel-2")) is None
    assert host.find_commit("shop", branch="release/none", trailer=("Release-Id", "rel-1")) is None


def test_a_stale_writer_gets_a_conflict_error_and_writes_nothing(host, monkeypatch):
    release_branch(host)
    real_push = git_writes.push

    def push_after_someone_else(repo, sha, branch):
        monkeypatch.setattr(git_writes, "push", real_push)
        host.commit_files("shop", branch=branch, files={"other.txt": b"x"}, message="other", trailers=())
        real_push(repo, sha, branch)

    monkeypatch.setattr(git_writes, "push", push_after_someone_else)
    with pytest.raises(ConflictError) as info:
        host.commit_files("shop", branch="release/rel-1", files={"mine.txt": b"y"}, message="m", trailers=())
    assert isinstance(info.value, TransientError)
    assert host.read_file("shop", "mine.txt", ref="release/rel-1") is None
    assert host.read_file("shop", "other.txt", ref="release/rel-1") == b"x"


def test_two_writers_at_once_the_loser_is_retried_and_nothing_is_lost(host, monkeypatch, prefect_server):
    """Both writers read the same head; one push wins, the other is rejected, retried by the stage and lands."""
    from prefect import flow

    from tasks.stage import stage

    release_branch(host)
    real_push = git_writes.push
    both_ready = threading.Barrier(2, timeout=30)
    attempts: list[str] = []
    lock = threading.Lock()

    def racing_push(repo, sha, branch):
        with lock:
            attempts.append(sha)
            first_round = len(attempts) <= 2
        if first_round:
            both_ready.wait()  # both commits are built on the same parent before either pushes
        real_push(repo, sha, branch)

    monkeypatch.setattr(git_writes, "push", racing_push)

    @stage("create_commit")  # the stage policy (retry on a lost race) of a registered stage
    def write_files(git_host: LocalGitHost, path: str) -> str:
        return git_host.commit_files("shop", branch="release/rel-1", files={path: path.encode()},
                                     message=f"write {path}", trailers=()).sha

    @flow
    def two_writers() -> list[str]:
        futures = [write_files.submit(host, "writer-a.txt"), write_files.submit(host, "writer-b.txt")]
        return [f.result() for f in futures]

    shas = two_writers()
    assert len(attempts) == 3, "exactly one push was rejected and retried"
    tree = host.read_tree("shop", "", ref="release/rel-1")
    assert tree["writer-a.txt"] == b"writer-a.txt" and tree["writer-b.txt"] == b"writer-b.txt"
    assert tree["app/main.py"] == b"VALUE = 2\n"
    assert set(shas) <= set(history(host, "release/rel-1")[:2])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda h: h.commit_files("nope", branch="b", files={"a": b""}, message="m", trailers=()), NotFound,
         "does not exist"),
        (lambda h: h.commit_files("../x", branch="b", files={"a": b""}, message="m", trailers=()), InvalidInput,
         "repository"),
        (lambda h: h.commit_files("shop", branch="bad..branch", files={"a": b""}, message="m", trailers=()),
         InvalidInput, "branch"),
        (lambda h: h.commit_files("shop", branch="b", files={"../a": b""}, message="m", trailers=()),
         InvalidInput, "path"),
        (lambda h: h.commit_files("shop", branch="b", files={"a": b""}, message="m", trailers=[("Bad Key", "v")]),
         InvalidInput, "trailer"),
        (lambda h: h.commit_files("shop", branch="b", files={"a": b""}, message="m", trailers=(), base="ghost"),
         NotFound, "ghost"),
        (lambda h: h.read_file("shop", "README.md", ref="ghost"), NotFound, "ghost"),
        (lambda h: h.get_pull_request("shop", 42), NotFound, "#42"),
        (lambda h: h.open_pull_request("shop", source="ghost", target="main", title="t"), NotFound, "ghost"),
    ],
)
def test_bad_calls_are_translated_into_the_hierarchy(host, call, error, message):
    before = history(host, "main")
    with pytest.raises(error, match=message):
        call(host)
    assert history(host, "main") == before


# --------------------------------------------------------------------------- pull requests


def test_pull_request_checks_and_merge_with_a_merge_commit(host):
    commit = release_branch(host)
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="Release rel-1")
    assert pr.status is PullRequestStatus.OPEN and pr.head_sha == commit.sha
    assert host.open_pull_request("shop", source="release/rel-1", target="main", title="again").number == pr.number

    checked = host.run_checks("shop", pr.number)
    assert {c.name: c.status for c in checked.checks} == {
        "branch-policy": CheckStatus.PASSED, "policy-gate": CheckStatus.PASSED,
        "mergeable": CheckStatus.PASSED, "value-defined": CheckStatus.PASSED}
    assert host.get_pull_request("shop", pr.number).checks_passed

    main_before = host.resolve("shop", "main")
    merge = host.merge_pull_request("shop", pr.number, message="Merge rel-1", trailers=TRAILERS)
    assert merge.created
    with Repo(host.clone_url("shop")) as repo:
        merged = repo.commit(merge.merge_sha)
        assert [p.hexsha for p in merged.parents] == [main_before, commit.sha]  # --no-ff
        assert "Release-Id: rel-1" in merged.message
    assert host.resolve("shop", "main") == merge.merge_sha
    record = host.get_pull_request("shop", pr.number)
    assert record.status is PullRequestStatus.MERGED and record.merge_sha == merge.merge_sha

    again = host.merge_pull_request("shop", pr.number, message="Merge rel-1", trailers=TRAILERS)
    assert not again.created and again.merge_sha == merge.merge_sha
    assert host.resolve("shop", "main") == merge.merge_sha
    # Opening again after the merge finds the merged PR instead of a new one.
    assert host.open_pull_request("shop", source="release/rel-1", target="main", title="t").number == pr.number


def test_a_failing_check_blocks_the_merge_and_the_pr_stays_open(host):
    release_branch(host, files={"app/main.py": b"nothing here\n"})
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    checked = host.run_checks("shop", pr.number)
    failed = {c.name: c for c in checked.checks if not c.passed}
    assert set(failed) == {"value-defined"}
    assert failed["value-defined"].summary == "exit code 1"
    main_before = host.resolve("shop", "main")
    with pytest.raises(CheckFailed, match="value-defined: exit code 1"):
        host.merge_pull_request("shop", pr.number, message="m", trailers=TRAILERS)
    assert host.get_pull_request("shop", pr.number).status is PullRequestStatus.OPEN
    assert host.resolve("shop", "main") == main_before


def test_merging_without_checks_is_refused(host):
    release_branch(host)
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    with pytest.raises(CheckFailed, match="checks have not run"):
        host.merge_pull_request("shop", pr.number, message="m", trailers=TRAILERS)


def test_a_source_that_moved_after_its_checks_must_be_checked_again(host):
    release_branch(host)
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    host.run_checks("shop", pr.number)
    moved = release_branch(host, files={"app/main.py": b"VALUE = 3\n"})
    with pytest.raises(CheckFailed, match="moved since its checks ran"):
        host.merge_pull_request("shop", pr.number, message="m", trailers=TRAILERS)
    reopened = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    assert reopened.number == pr.number and reopened.head_sha == moved.sha and reopened.checks == []


def test_merge_conflict_is_a_permanent_error_and_the_pr_stays_open(host):
    release_branch(host, name="release/a", files={"app/main.py": b"VALUE = 'a'\n"})
    release_branch(host, name="release/b", files={"app/main.py": b"VALUE = 'b'\n"})
    pr_a = host.open_pull_request("shop", source="release/a", target="main", title="a")
    pr_b = host.open_pull_request("shop", source="release/b", target="main", title="b")
    host.run_checks("shop", pr_a.number)
    host.run_checks("shop", pr_b.number)  # both pass against the main of their time
    host.merge_pull_request("shop", pr_a.number, message="merge a", trailers=TRAILERS)
    main_after_a = host.resolve("shop", "main")

    with pytest.raises(MergeConflict, match="app/main.py") as info:
        host.merge_pull_request("shop", pr_b.number, message="merge b", trailers=TRAILERS)
    assert isinstance(info.value, PermanentError) and not info.value.retryable
    assert host.get_pull_request("shop", pr_b.number).status is PullRequestStatus.OPEN
    assert host.resolve("shop", "main") == main_after_a
    rechecked = host.run_checks("shop", pr_b.number)
    assert {c.name: c.status for c in rechecked.checks}["mergeable"] is CheckStatus.FAILED


def test_branch_policy_and_policy_gate_say_what_failed(host):
    host.commit_files("shop", branch="feature/x", files={".github/workflows/ci.yml": b"on: push\n"},
                      message="sneaky", trailers=())
    pr = host.open_pull_request("shop", source="feature/x", target="main", title="t")
    checks = {c.name: c for c in host.run_checks("shop", pr.number).checks}
    assert checks["branch-policy"].status is CheckStatus.FAILED
    assert "matches none of ['release/*']" in checks["branch-policy"].summary
    gate = checks["policy-gate"].summary
    assert "forbidden path .github/workflows/ci.yml" in gate
    assert "lacks trailer Release-Id" in gate and "lacks trailer Trace-Id" in gate


def test_only_the_protected_branch_may_be_targeted(host):
    release_branch(host)
    host.commit_files("shop", branch="develop", files={"d": b"1"}, message="d", trailers=())
    pr = host.open_pull_request("shop", source="release/rel-1", target="develop", title="t")
    checks = {c.name: c for c in host.run_checks("shop", pr.number).checks}
    assert "not the protected branch 'main'" in checks["branch-policy"].summary


def test_check_command_output_is_captured_and_runs_against_the_merge_result(host):
    host.check_commands = [CheckCommand(name="show", run="cat app/main.py README.md; exit 3")]
    release_branch(host, files={"app/main.py": b"VALUE = 9\n"})
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    [show] = [c for c in host.run_checks("shop", pr.number).checks if c.name == "show"]
    assert show.status is CheckStatus.FAILED and show.summary == "exit code 3"
    assert "VALUE = 9" in show.log and "# shop" in show.log  # the branch's change on top of main


def test_block_saves_and_loads_through_prefect(host, prefect_server):
    from prefect.blocks.core import Block

    host.save("git-host-roundtrip", overwrite=True)
    loaded = Block.load("local-git-host/git-host-roundtrip")
    assert isinstance(loaded, LocalGitHost)
    assert loaded.root == host.root and loaded.check_commands == host.check_commands
    assert loaded.resolve("shop", "main") == host.resolve("shop", "main")


def test_a_source_moving_while_checks_start_is_a_retryable_conflict(host, monkeypatch):
    release_branch(host)
    pr = host.open_pull_request("shop", source="release/rel-1", target="main", title="t")
    real_checkout = git_writes.merged_checkout

    def checkout_after_a_push(url, *, source, target):
        monkeypatch.setattr(git_writes, "merged_checkout", real_checkout)
        host.commit_files("shop", branch=source, files={"late.txt": b"late"}, message="late", trailers=TRAILERS)
        return real_checkout(url, source=source, target=target)

    monkeypatch.setattr(git_writes, "merged_checkout", checkout_after_a_push)
    with pytest.raises(ConflictError, match="moved while being checked"):
        host.run_checks("shop", pr.number)
    assert host.get_pull_request("shop", pr.number).checks == []
    assert host.run_checks("shop", pr.number).checks_passed  # the retry checks the new head
