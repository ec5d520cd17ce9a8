"""GitOpsRepo on a remote over HTTP with a token: clone, push and tag through git http-backend with auth."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.git_http_server import FakeServer, git, init_bare

from blocks.gitops_repo import GitOpsRepo
from delivery.errors import AuthenticationError

TOKEN = "gitops-TOKEN-not-for-logs-42"
TRAILERS = [("Release-Id", "rel-1"), ("Trace-Id", "t" * 32)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    init_bare(tmp_path / "server" / "gitops.git")
    basic = f"Basic {base64.b64encode(f'x-access-token:{TOKEN}'.encode()).decode()}"

    def git_route(path: str) -> tuple[Path, str] | None:
        return (tmp_path / "server", path[len("/git"):]) if path.startswith("/git/") else None

    with FakeServer(git_route=git_route, api=lambda request: None, git_auth=basic, api_auth=basic) as fake:
        yield fake


def test_a_remote_over_https_with_a_token_is_read_written_and_tagged(server: FakeServer, tmp_path: Path) -> None:
    repo = GitOpsRepo(url=f"{server.url}/git/gitops.git", token=TOKEN)
    assert repo.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
    assert not repo.ensure_exists(initial_files={"delivery.yaml": b"other\n"})
    commit = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="Promote web", trailers=TRAILERS)
    assert commit.created and repo.head() == commit.sha
    assert not repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="m", trailers=TRAILERS).created
    assert repo.read_environment("dev", "web") == {"a.yaml": b"a: 1\n"}
    assert repo.read_config() == b"path: [dev]\n"
    repo.tag_healthy("dev", "web", commit.sha)
    assert repo.healthy_revision("dev", "web") == commit.sha
    bare = tmp_path / "server" / "gitops.git"  # on the server, pushed through git http-backend
    assert git(bare, "rev-parse", "refs/heads/main") == commit.sha
    assert git(bare, "rev-parse", "refs/tags/healthy/dev/web") == commit.sha
    assert any("git-receive-pack" in request.path for request in server.log)
    stored = git(bare, "log", "--all", "-p") + "".join(p.read_text(errors="replace")
                                                          for p in tmp_path.rglob("config") if p.is_file())
    assert TOKEN not in stored and TOKEN not in repr(repo)


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_a_remote_refuses_a_missing_or_wrong_token(server: FakeServer, token: str | None) -> None:
    repo = GitOpsRepo(url=f"{server.url}/git/gitops.git", token=token)
    with pytest.raises(AuthenticationError, match="refused the token") as raised:
        repo.write_files({"x": b"y"}, message="m", trailers=())
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"url": "http://git.example.com/gitops.git", "token": TOKEN}, "only to a loopback host"),
    ({"url": "https://me:pw@git.example.com/gitops.git"}, "must not carry credentials"),
    ({"url": "https://git.example.com/gitops.git", "token": TOKEN, "colour": 1}, None),
], ids=["token-over-http", "credentials-in-url", "unknown-field-is-ignored-as-before"])
def test_credentials_only_over_https(fields: dict, problem: str | None) -> None:
    if problem is None:
        GitOpsRepo(**fields)  # GitOpsRepo keeps Prefect's lenient extra fields (saved blocks may carry old ones)
        return
    with pytest.raises(ValidationError, match=problem):
        GitOpsRepo(**fields)
