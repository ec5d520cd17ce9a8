"""Stage 1 (create_commit) outside the flow: validation table and "second run is a no-op"."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from git import Repo

from blocks.git_host import LocalGitHost
from delivery.errors import InvalidInput, NotFound
from delivery.models import Artifact, ArtifactValidation, ReleaseRequest
from tasks.commit import create_commit, release_trailers


@pytest.fixture
def host(tmp_path: Path) -> LocalGitHost:
    git_host = LocalGitHost(root=str(tmp_path / "repos"))
    git_host.ensure_repository("shop", initial_files={"app/main.py": b"VALUE = 1\n"})
    return git_host


def request(release_id: str = "rel-c1", text: str = "VALUE = 2\n", app: str = "shop") -> ReleaseRequest:
    artifact = Artifact(artifact_id="main", path="app/main.py", content=text,
                        sha256=hashlib.sha256(text.encode()).hexdigest(),
                        validation=ArtifactValidation(passed=True, validator="lint"))
    return ReleaseRequest(release_id=release_id, trace_id="trace-c1-0001", app=app, artifacts=[artifact],
                          requested_by="agent:rm")


def branch_history(host: LocalGitHost, branch: str) -> list[str]:
    with Repo(host.clone_url("shop")) as repo:
        return [c.hexsha for c in repo.iter_commits(f"refs/heads/{branch}")]


def test_create_commit_writes_the_release_branch_with_trailers(host, prefect_server):
    commit = create_commit.fn(host, request())
    assert commit.created and commit.branch == "release/rel-c1"
    digest = request().artifacts[0].sha256
    assert commit.trailers == {"Release-Id": ["rel-c1"], "Trace-Id": ["trace-c1-0001"], "Artifact-Id": ["main"],
                               "Artifact-Sha256": [f"main {digest}"]}
    assert release_trailers(request()) == [("Release-Id", "rel-c1"), ("Trace-Id", "trace-c1-0001"),
                                           ("Artifact-Id", "main"), ("Artifact-Sha256", f"main {digest}")]


def test_second_run_finds_the_commit_instead_of_making_it_again(host, prefect_server):
    first = create_commit.fn(host, request())
    second = create_commit.fn(host, request())
    assert not second.created and second.sha == first.sha
    assert branch_history(host, "release/rel-c1")[0] == first.sha
    assert len(branch_history(host, "release/rel-c1")) == 2  # the seed and the release commit


@pytest.mark.parametrize(
    ("git_host", "req", "error", "message"),
    [
        ("not-a-block", request(), InvalidInput, "git_host must be a GitHost block"),
        (None, request(app="ghost"), NotFound, "'ghost' does not exist"),
    ],
)
def test_bad_config_is_refused_and_nothing_is_written(host, prefect_server, git_host, req, error, message):
    with pytest.raises(error, match=message):
        create_commit.fn(git_host if git_host is not None else host, req)
    assert branch_history(host, "main") and "release/rel-c1" not in {
        r.path.removeprefix("refs/heads/") for r in Repo(host.clone_url("shop")).references}


def test_unknown_fields_are_refused_by_the_request_model():
    with pytest.raises(ValueError, match="branch_override"):
        ReleaseRequest.model_validate({**request().model_dump(), "branch_override": "main"})
