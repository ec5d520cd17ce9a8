"""One contract for every git host: LocalGitHost on disk, GitHubHost and AzureReposHost against fake REST APIs
(tests/blocks/fake_github.py, fake_azure_repos.py) serving the repositories through real Git smart HTTP.

The same sequence passes for all three: seed the repository, commit on a release branch, open the pull
request with the trace in its body, read its checks, merge, comment, read the merged file on main, and
run it all again to find nothing new to do. A head holding ``FAIL`` fails a check on every host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.fake_azure_repos import FakeAzureRepos
from support.fake_github import FakeGitHub
from support.git_http_server import FakeServer, git

from blocks.azure_repos_host import AzureReposHost
from blocks.git_host import CheckCommand, GitHost, LocalGitHost
from blocks.github_host import GitHubHost
from delivery.errors import CheckFailed
from delivery.models import PullRequestStatus

TOKEN = "ghp_TOKEN-never-shown-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRAILERS = [("Release-Id", "rel-1"), ("Trace-Id", TRACE)]
SEED = {"README.md": b"# shop\n", "app/main.py": b"VALUE = 1\n"}


@dataclass
class Hosted:
    """A host under test, where its bare repositories live, and its fake server (None for the local host)."""

    host: GitHost
    bare: Path
    server: FakeServer | None = None


def make_host(kind: str, tmp_path: Path, token: str = TOKEN) -> Iterator[Hosted]:
    cache = str(tmp_path / "mirrors")
    if kind == "local":
        host = LocalGitHost(root=str(tmp_path / "repos"),
                            check_commands=[CheckCommand(name="build", run="test ! -e FAIL")])
        yield Hosted(host, tmp_path / "repos" / "shop.git")
        return
    if kind == "github":
        fake: FakeGitHub | FakeAzureRepos = FakeGitHub(tmp_path / "server", token)
    else:
        fake = FakeAzureRepos(tmp_path / "server", token)
    bare = fake.create_repository("shop")
    with fake.server as server:
        if kind == "github":
            remote: GitHost = GitHubHost(owner="acme", token=TOKEN, api_url=f"{server.url}/api",
                                         git_url=f"{server.url}/git", cache_dir=cache, checks_poll_seconds=0.05,
                                         required_checks=["build"])
        else:
            remote = AzureReposHost(organization="contoso", project="web", token=TOKEN, base_url=server.url,
                                    cache_dir=cache, checks_poll_seconds=0.05, required_checks=["Build"])
        yield Hosted(remote, bare, server)


@pytest.fixture(params=["local", "github", "azure"])
def hosted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hosted]:
    yield from make_host(request.param, tmp_path)


def run_release(host: GitHost, branch: str = "release/rel-1", files: dict[str, bytes] | None = None):
    commit = host.commit_files("shop", branch=branch, files=files or {"app/main.py": b"VALUE = 2\n"},
                               message="Release rel-1", trailers=TRAILERS)
    pr = host.open_pull_request("shop", source=branch, target="main", title="Release rel-1 of shop",
                                description=f"Release rel-1 of shop.\n\nTrace-Id: {TRACE}")
    return commit, pr


def test_the_release_sequence_passes_on_every_host_and_a_second_run_changes_nothing(hosted: Hosted) -> None:
    host = hosted.host
    host.ensure_repository("shop", initial_files=SEED)
    main = host.resolve("shop", "main")
    host.ensure_repository("shop", initial_files={"other": b"x"})  # seeded already: nothing written
    assert main is not None and host.resolve("shop", "main") == main
    assert host.read_tree("shop", "app", ref="main") == {"app/main.py": b"VALUE = 1\n"}

    commit, pr = run_release(host)
    assert commit.created and commit.parent == main and commit.trailers["Trace-Id"] == [TRACE]
    assert host.find_commit("shop", branch="release/rel-1", trailer=("Release-Id", "rel-1")).sha == commit.sha
    assert host.read_file("shop", "app/main.py", ref="release/rel-1") == b"VALUE = 2\n"
    assert host.read_file("shop", "app/missing.py", ref="release/rel-1") is None
    assert pr.status is PullRequestStatus.OPEN and pr.head_sha == commit.sha
    assert f"Trace-Id: {TRACE}" in host.get_pull_request("shop", pr.number).description
    assert (pr.source_branch, pr.target_branch) == ("release/rel-1", "main")

    checked = host.run_checks("shop", pr.number)
    assert checked.checks_passed, checked.checks
    assert "build" in {c.name.lower() for c in checked.checks}

    merge = host.merge_pull_request("shop", pr.number, message="Merge release rel-1 of shop", trailers=TRAILERS)
    assert merge.created and merge.target_branch == "main"
    assert host.resolve("shop", "main") == merge.merge_sha
    assert host.is_ancestor("shop", main, merge.merge_sha) and host.is_ancestor("shop", commit.sha, merge.merge_sha)
    assert host.read_file("shop", "app/main.py", ref="main") == b"VALUE = 2\n"
    on_main = host.find_commit("shop", branch="main", trailer=("Release-Id", "rel-1"))
    assert on_main is not None and on_main.sha == merge.merge_sha  # the merge commit carries the trailers
    assert host.get_pull_request("shop", pr.number).status is PullRequestStatus.MERGED

    outcome = f"Merged into main as {merge.merge_sha} (trace {TRACE})"
    assert host.comment_pull_request("shop", pr.number, outcome)
    # a second run of the whole sequence: the same commit, pull request, merge and comment
    again, same_pr = run_release(host)
    assert not again.created and again.sha == commit.sha
    assert same_pr.number == pr.number and same_pr.status is PullRequestStatus.MERGED
    repeat = host.merge_pull_request("shop", pr.number, message="Merge release rel-1 of shop", trailers=TRAILERS)
    assert not repeat.created and repeat.merge_sha == merge.merge_sha
    assert not host.comment_pull_request("shop", pr.number, outcome)
    assert host.pull_request_comments("shop", pr.number) == [outcome]
    assert host.resolve("shop", "main") == merge.merge_sha


def test_a_failing_check_stops_the_merge_on_every_host(hosted: Hosted) -> None:
    host = hosted.host
    host.ensure_repository("shop", initial_files=SEED)
    _, pr = run_release(host, files={"FAIL": b"x\n", "app/main.py": b"VALUE = 3\n"})
    checked = host.run_checks("shop", pr.number)
    assert not checked.checks_passed
    assert [c.name for c in checked.checks if not c.passed] == [next(c.name for c in checked.checks
                                                                     if c.name.lower() == "build")]
    main = host.resolve("shop", "main")
    with pytest.raises(CheckFailed, match="cannot be merged"):
        host.merge_pull_request("shop", pr.number, message="Merge", trailers=TRAILERS)
    assert host.resolve("shop", "main") == main
    assert host.get_pull_request("shop", pr.number).status is PullRequestStatus.OPEN


def test_the_remote_hosts_pushed_through_git_http_backend(tmp_path: Path) -> None:
    """The bare repositories on the server hold what the blocks pushed over HTTP (no shortcut)."""
    for kind in ("github", "azure"):
        for hosted in make_host(kind, tmp_path / kind):
            hosted.host.ensure_repository("shop", initial_files=SEED)
            commit, _ = run_release(hosted.host)
            assert git(hosted.bare, "rev-parse", "refs/heads/release/rel-1") == commit.sha
            assert any("git-receive-pack" in r.path for r in hosted.server.log)
