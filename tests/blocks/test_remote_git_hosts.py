"""The remote git hosts' error policy, their secrecy about the token, and their typed configuration."""

from __future__ import annotations

import base64
import logging
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from test_git_host_contract import SEED, TOKEN, make_host, run_release

from blocks.azure_repos_host import AzureReposHost
from blocks.github_host import GitHubHost
from blocks.remote_git import RateLimited, classify
from delivery.errors import AuthenticationError, CheckFailed, NotFound, PermanentError, TransientError


def answer(status: int, headers: dict[str, str] | None = None, body: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json=body or {"message": "nope"},
                          request=httpx.Request("GET", "https://api.github.com/repos/acme/shop/pulls"))


@pytest.mark.parametrize(("response", "kind", "words"), [
    (answer(429, {"retry-after": "30"}), RateLimited, ["rate limited (429)", "retry after 30s"]),
    (answer(403, {"Retry-After": "7"}), RateLimited, ["rate limited (403)", "retry after 7s"]),
    (answer(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}), RateLimited, ["rate limited (403)"]),
    (answer(403, body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}),
     RateLimited, ["rate limited (403)", "wait at least a minute"]),
    (answer(500), TransientError, ["answered 500"]),
    (answer(502), TransientError, ["answered 502"]),
    (answer(503), TransientError, ["answered 503"]),
    (answer(401), AuthenticationError, ["refused the token (401)"]),
    (answer(403, body={"message": "Resource not accessible by integration"}), AuthenticationError,
     ["may not do this (403)", "Resource not accessible by integration"]),
    (answer(404), NotFound, ["not found (404)"]),
    (answer(422, body={"message": "Validation Failed", "errors": [{"message": "No commits between main and x"}]}),
     PermanentError, ["refused the request (422)", "No commits between main and x"]),
], ids=["429", "403-retry-after", "403-remaining-0", "403-secondary", "500", "502", "503", "401", "403", "404",
        "422"])
def test_answers_are_classified_transient_or_permanent_with_a_message_naming_call_and_repository(
        response: httpx.Response, kind: type, words: list[str]) -> None:
    error = classify(response, service="GitHub", what="create pull request", repository="acme/shop")
    assert type(error) is kind
    assert error.retryable is issubclass(kind, TransientError)
    assert str(error).startswith("GitHub: create pull request in acme/shop: ")
    for word in words:
        assert word in str(error)
    if kind is RateLimited and "retry-after" in {k.lower() for k in response.headers}:
        assert error.retry_after == float(response.headers["retry-after"])


def test_a_success_is_no_error() -> None:
    assert classify(answer(201), service="GitHub", what="x", repository="acme/shop") is None


@pytest.mark.parametrize("kind", ["github", "azure"])
def test_the_servers_faults_reach_the_caller_classified(kind: str, tmp_path: Path) -> None:
    for hosted in make_host(kind, tmp_path):
        host, server = hosted.host, hosted.server
        host.ensure_repository("shop", initial_files=SEED)
        _, pr = run_release(host)
        server.fail_next(503)
        with pytest.raises(TransientError, match="answered 503"):
            host.get_pull_request("shop", pr.number)
        server.fail_next(429, {"Retry-After": "12"})
        with pytest.raises(RateLimited, match="retry after 12s") as raised:
            host.run_checks("shop", pr.number)
        assert raised.value.retry_after == 12
        with pytest.raises(NotFound, match="read pull request.*(acme/shop|contoso/web/shop)"):
            host.get_pull_request("shop", 999)
        with pytest.raises(NotFound, match="no such repository"):
            host.resolve("absent", "main")
        assert host.get_pull_request("shop", pr.number).number == pr.number  # the faults are gone


@pytest.mark.parametrize("kind", ["github", "azure"])
def test_the_token_is_in_no_error_log_record_git_config_or_commit(kind: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode(),
               base64.b64encode(f":{TOKEN}".encode()).decode()]
    errors: list[str] = []
    for hosted in make_host(kind, tmp_path, token="the-server-expects-another-token"):
        host = hosted.host
        calls = [(host.ensure_repository, ("shop",), {"initial_files": SEED}),
                 (host.commit_files, ("shop",), {"branch": "release/x", "files": {"a": b"b"}, "message": "m",
                                                 "trailers": []}),
                 (host.get_pull_request, ("shop", 1), {})]
        for call, args, kwargs in calls:
            with pytest.raises(AuthenticationError) as raised:
                call(*args, **kwargs)
            errors += [str(raised.value), repr(raised.value), str(raised.value.__cause__ or "")]
    for hosted in make_host(kind, tmp_path / "ok"):
        host = hosted.host
        host.ensure_repository("shop", initial_files=SEED)
        _, pr = run_release(host)
        host.merge_pull_request("shop", pr.number, message="Merge", trailers=[("Trace-Id", "t1")])
        host.comment_pull_request("shop", pr.number, "merged")
        stored = subprocess.run(["git", "--git-dir", str(hosted.bare), "log", "--all", "-p", "--format=%H%n%B"],
                                capture_output=True, text=True, check=True).stdout
    configs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("config") if p.is_file())
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert "refused the token" in " ".join(errors) and "Initial commit" in stored
    for secret in secrets:
        for where, text in (("errors", " ".join(errors)), ("log", logged), ("git config", configs),
                            ("commits", stored)):
            assert secret not in text, f"the token is in the {where}"


@pytest.mark.parametrize(("cls", "fields", "problem"), [
    (GitHubHost, {"owner": "acme", "token": "t", "colour": "red"}, "Extra inputs are not permitted"),
    (GitHubHost, {"owner": "acme", "token": "t", "api_url": "http://api.example.com"}, "only to a loopback host"),
    (GitHubHost, {"owner": "acme", "token": "t", "git_url": "https://me:secret@github.com"}, "credentials"),
    (GitHubHost, {"owner": "acme", "token": "t", "api_url": "ftp://api.github.com"}, "https:// URL"),
    (GitHubHost, {"owner": "acme", "token": "t", "api_url": "https://api.github.com?x=1"}, "query or fragment"),
    (GitHubHost, {"owner": "acme", "token": "t", "api_url": "not a url"}, "https:// URL"),
    (GitHubHost, {"owner": "acme/x", "token": "t"}, "String should match pattern"),
    (GitHubHost, {"owner": "acme", "token": "t", "merge_method": "noFastForward"}, "merge', 'squash' or 'rebase'"),
    (GitHubHost, {"owner": "acme"}, "token"),
    (AzureReposHost, {"organization": "o", "project": "p", "token": "t", "pipeline": 3}, "Extra inputs"),
    (AzureReposHost, {"organization": "o", "project": "p", "token": "t", "base_url": "http://dev.azure.com"},
     "only to a loopback host"),
    (AzureReposHost, {"organization": "o/x", "project": "p", "token": "t"}, "String should match pattern"),
    (AzureReposHost, {"organization": "o", "project": "p", "token": "t", "merge_method": "merge"},
     "'noFastForward', 'squash', 'rebase' or 'rebaseMerge'"),
    (AzureReposHost, {"organization": "o", "project": "p", "token": "t", "checks_timeout_seconds": -1},
     "greater than or equal to 0"),
], ids=["gh-unknown-field", "gh-http", "gh-credentials-in-url", "gh-ftp", "gh-query", "gh-not-a-url", "gh-owner",
        "gh-merge-method", "gh-no-token", "az-unknown-field", "az-http", "az-organization", "az-merge-method",
        "az-negative-timeout"])
def test_bad_configuration_is_refused(cls: type, fields: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        cls(**fields)


def test_good_configuration_is_accepted_and_the_token_stays_secret() -> None:
    github = GitHubHost(owner="acme", token=TOKEN, merge_method="squash", api_url="https://ghe.example.com/api/v3/")
    azure = AzureReposHost(organization="contoso", project="web app", token=TOKEN, merge_method="rebaseMerge")
    assert github.api_url == "https://ghe.example.com/api/v3" and github.clone_url("shop") == \
        "https://github.com/acme/shop.git"
    assert azure.clone_url("shop") == "https://dev.azure.com/contoso/web%20app/_git/shop"
    for block in (github, azure):
        assert TOKEN not in repr(block) and TOKEN not in str(block.model_dump())


@pytest.mark.parametrize(("kind", "method"), [("github", "squash"), ("azure", "squash")])
def test_the_configured_merge_method_is_what_the_host_is_asked_for(kind: str, method: str, tmp_path: Path) -> None:
    for hosted in make_host(kind, tmp_path):
        host = hosted.host.model_copy(update={"merge_method": method})
        host.ensure_repository("shop", initial_files=SEED)
        commit, pr = run_release(host)
        merge = host.merge_pull_request("shop", pr.number, message="Merge rel-1", trailers=[("Release-Id", "rel-1")])
        parents = subprocess.run(["git", "--git-dir", str(hosted.bare), "rev-list", "--parents", "-n1",
                                  merge.merge_sha], capture_output=True, text=True, check=True).stdout.split()
        assert len(parents) == 2 and commit.sha not in parents  # squashed: one parent, the old main
        [asked] = [r.json() for r in hosted.server.log if r.method in ("PUT", "PATCH")]
        assert (asked.get("merge_method") or asked["completionOptions"]["mergeStrategy"]) == method
        assert host.read_file("shop", "app/main.py", ref="main") == b"VALUE = 2\n"


def test_pending_checks_are_waited_for_and_still_pending_ones_block_the_merge(tmp_path: Path) -> None:
    for hosted in make_host("github", tmp_path):
        host = hosted.host
        fake = hosted.server.api.__self__  # the FakeGitHub answering
        host.ensure_repository("shop", initial_files=SEED)
        _, pr = run_release(host)
        fake.pending_reads = 2
        assert host.run_checks("shop", pr.number).checks_passed and fake.pending_reads == 0
        fake.pending_reads = 10_000
        slow = host.model_copy(update={"checks_timeout_seconds": 0.2})
        [build] = [c for c in slow.run_checks("shop", pr.number).checks if c.name == "build"]
        assert build.status.value == "error" and "still pending after 0.2s" in build.summary
        with pytest.raises(CheckFailed, match="build: still pending"):
            slow.merge_pull_request("shop", pr.number, message="Merge", trailers=[])
