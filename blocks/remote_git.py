"""What the remote git hosts (GitHub, Azure Repos) share: git over HTTPS with a token, REST errors, checks.

Git runs over HTTPS with the token in an ``http.extraHeader`` passed through the environment
(``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``), so it is in no remote URL, no
``.git/config``, no command line and no error message. Reads go through a local bare mirror fetched
before each read. REST answers are classified once (:func:`classify`): rate limits and 5xx are
transient, the rest permanent, each message naming the call and the repository.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import ipaddress
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from git.exc import GitCommandError
from pydantic import ConfigDict, Field, SecretStr

from blocks import git_repository, git_writes
from blocks.git_host import GitHost
from delivery import git_grammar
from delivery.errors import (
    AuthenticationError,
    DeliveryError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
)
from delivery.models import CheckResult, CheckStatus, CommitInfo, PullRequest, PullRequestStatus, utcnow
from delivery.provider_timing import timed_provider
from delivery.settings import state_dir

REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SECONDARY = ("secondary rate limit", "abuse detection", "rate limit exceeded")


class RateLimited(TransientError):
    """A rate limit: retry, not before ``retry_after`` seconds when the service said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_url(value: str, field: str) -> str:
    """Refuse a base URL that is not plain ``https://host[/path]`` (``http://`` only to a loopback host).

    Credentials, queries and fragments are refused: the token travels in a header, never in a URL.
    """
    parts = urlsplit(value or "")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{field} {value!r} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{field} must not carry credentials (the token is a field of its own)")
    if parts.query or parts.fragment:
        raise ValueError(f"{field} {value!r} must not have a query or fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{field} {value!r}: http:// is allowed only to a loopback host; use https://")
    return value.rstrip("/")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address): plain http is allowed there only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def git_env(username: str, token: SecretStr) -> dict[str, str]:
    """The environment making git send ``Authorization: Basic <username:token>``, prompting for nothing."""
    credentials = base64.b64encode(f"{username}:{token.get_secret_value()}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {credentials}",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
    }


def _wait_hint(response: httpx.Response) -> float | None:
    retry_after = response.headers.get("retry-after", "")
    if retry_after.replace(".", "", 1).isdigit():
        return float(retry_after)
    reset = response.headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return None


def classify(response: httpx.Response, *, service: str, what: str, repository: str) -> DeliveryError | None:
    """The product's error for an answer, or None for a success.

    Transient: 429; 403 with ``Retry-After``, ``x-ratelimit-remaining: 0`` or a secondary-limit message;
    any 5xx. Permanent: 401 (:class:`AuthenticationError`), any other 403, 404 (:class:`NotFound`),
    422 and the rest. The message names the service, the call and the repository; never the token.
    """
    status = response.status_code
    if response.is_success:
        return None
    where = f"{service}: {what} in {repository}"
    detail = _detail(response)
    limited = status == 429 or (status == 403 and (
        "retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0"
        or any(marker in detail.lower() for marker in _SECONDARY)))
    if limited:
        hint = _wait_hint(response)
        wait = f"; retry after {hint:.0f}s" if hint is not None else "; wait at least a minute, then back off"
        return RateLimited(f"{where}: rate limited ({status}){wait}", retry_after=hint)
    if status >= 500:
        return TransientError(f"{where}: {service} answered {status} (a server error; retry)")
    if status == 401:
        return AuthenticationError(f"{where}: {service} refused the token (401); check the token and its expiry")
    if status == 403:
        return AuthenticationError(f"{where}: the token may not do this (403){': ' + detail if detail else ''}")
    if status == 404:
        return NotFound(f"{where}: not found (404); check the owner/organization, project, repository and "
                        f"the token's access{': ' + detail if detail else ''}")
    if status == 422:
        return PermanentError(f"{where}: {service} refused the request (422){': ' + detail if detail else ''}")
    return PermanentError(f"{where}: {service} answered {status}{': ' + detail if detail else ''}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        text = str(body.get("message") or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            text += " (" + "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors) + ")"
        return text[:300]
    return ""


@contextmanager
def git_call(action: str) -> Iterator[None]:
    """Translate git's failures over HTTP: 5xx/429 transient, 401/403 refused, 404 not found."""
    try:
        with git_repository.translated(action):
            yield
    except PermanentError as exc:
        if not isinstance(exc.__cause__, GitCommandError):  # not git's own failure: keep it as it is
            raise
        text = str(exc).lower()
        status = re.search(r"returned error: (\d{3})", text)
        code = int(status.group(1)) if status else None
        if code is not None and (code >= 500 or code == 429):
            raise TransientError(f"{action}: the git server answered {code} (retry)") from exc
        if code in (401, 403) or "authentication failed" in text or "could not read username" in text:
            raise AuthenticationError(f"{action}: the git server refused the token") from exc
        if code == 404 or "not found" in text:
            raise NotFound(f"{action}: no such repository (or the token may not read it)") from exc
        raise


@timed_provider
class RemoteGitHost(GitHost):
    """Base of the hosts reached over HTTPS: git through a mirror, REST through httpx. Not a block type."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, not ignored

    token: SecretStr = Field(description="Access token; sent in an Authorization header, never in a URL")
    merge_method: str = Field(default="merge", description="How pull requests are merged")
    required_checks: list[str] = Field(default_factory=list,
                                       description="Check names that must have reported and passed to merge")
    checks_timeout_seconds: float = Field(default=900.0, ge=0, description="How long run_checks waits on pending ones")
    checks_poll_seconds: float = Field(default=10.0, gt=0, description="Wait between reads of pending checks")
    request_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request")
    cache_dir: str | None = Field(default=None, description="Where the read mirrors live (default: "
                                  "<state folder>/git-host-mirrors)")

    _block_type_name = "Remote Git Host"
    _service = "remote"
    _git_user = ""

    # -- what a provider defines ------------------------------------------------------------------

    def clone_url(self, repository: str) -> str:
        raise NotImplementedError

    def _client(self) -> httpx.Client:
        raise NotImplementedError

    def _remote_checks(self, repository: str, pr: PullRequest) -> list[tuple[CheckResult, bool]]:
        """The provider's check results of the pull request's head, each with whether it is still pending."""
        raise NotImplementedError

    def _where(self, repository: str) -> str:
        """The repository as its service names it in messages (``owner/name``, ``org/project/name``)."""
        raise NotImplementedError

    # -- pull requests --------------------------------------------------------------------------------

    def _source_head(self, repository: str, source: str, target: str) -> str:
        """The head commit of ``source``, once both branch names are checked.

        Raises:
            NotFound: the source branch does not exist.
        """
        git_grammar.check_branch(source)
        git_grammar.check_branch(target)
        head = self.resolve(repository, f"refs/heads/{source}")
        if head is None:
            raise NotFound(f"{self._service}: {self._where(repository)}: source branch {source!r} does not exist")
        return head

    @staticmethod
    def _reusable(prs: Iterable[PullRequest], head: str) -> PullRequest | None:
        """Of a branch pair's pull requests, the first open one or the one merged at ``head``: opening is idempotent."""
        for pr in sorted(prs, key=lambda p: p.number):
            if pr.status is PullRequestStatus.OPEN or (pr.status is PullRequestStatus.MERGED and pr.head_sha == head):
                return pr
        return None

    # -- git ----------------------------------------------------------------------------------------

    def _name(self, repository: str) -> str:
        if not REPOSITORY.match(repository or "") or ".." in repository:
            raise InvalidInput(f"repository {repository!r} is not a valid repository name")
        return repository

    def _env(self) -> dict[str, str]:
        return git_env(self._git_user, self.token)

    def clone_env(self) -> dict[str, str]:
        return self._env()

    @contextmanager
    def _mirror(self, repository: str) -> Iterator[Path]:
        """A local bare mirror of the repository, fetched now, locked while in use."""
        url = self.clone_url(self._name(repository))
        root = Path(self.cache_dir) if self.cache_dir else state_dir() / "git-host-mirrors"
        path = root / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{repository}.git"
        git_writes.init_bare(path)
        with open(path / "delivery-mirror.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            repo = git_repository.open_bare(path)
            try:
                repo.git.update_environment(**self._env())
                with git_call(f"fetch {url}"):
                    repo.git.fetch("--prune", "--force", "--no-tags", url, "+refs/heads/*:refs/heads/*",
                                   "+refs/tags/*:refs/tags/*")
            finally:
                repo.close()
            yield path

    def ensure_repository(self, repository: str, *, default_branch: str = "main",
                          initial_files: Mapping[str, bytes] | None = None) -> None:
        """Seed an existing, still empty repository's ``default_branch``; a remote repository is not created.

        Raises:
            NotFound: the repository does not exist (create it on the host first).
        """
        with self._mirror(repository) as path:
            empty = git_repository.resolve(path, default_branch) is None
        if empty and initial_files:
            self.commit_files(repository, branch=default_branch, files=initial_files, message="Initial commit",
                              trailers=(), base=default_branch)

    def read_file(self, repository: str, path: str, *, ref: str) -> bytes | None:
        with self._mirror(repository) as local:
            return git_repository.read_file(local, path, ref=ref)

    def read_tree(self, repository: str, prefix: str, *, ref: str) -> dict[str, bytes]:
        with self._mirror(repository) as local:
            return git_repository.read_tree(local, prefix, ref=ref)

    def resolve(self, repository: str, ref: str) -> str | None:
        with self._mirror(repository) as local:
            return git_repository.resolve(local, ref)

    def is_ancestor(self, repository: str, ancestor: str, descendant: str) -> bool:
        with self._mirror(repository) as local:
            return git_repository.is_ancestor(local, ancestor, descendant)

    def commit_files(self, repository: str, *, branch: str, files: Mapping[str, bytes | None], message: str,
                     trailers: Sequence[tuple[str, str]], base: str = "main",
                     author: str = git_writes.DEFAULT_AUTHOR) -> CommitInfo:
        """Commit and push over HTTPS in one attempt; see :func:`blocks.git_writes.commit_files`."""
        url = self.clone_url(self._name(repository))
        with git_call(f"push {branch} to {url}"):
            return git_writes.commit_files(url, branch=branch, files=files, message=message, trailers=trailers,
                                           base=base, author=author, repository=repository, env=self._env())

    def find_commit(self, repository: str, *, branch: str, trailer: tuple[str, str]) -> CommitInfo | None:
        with self._mirror(repository) as local:
            return git_repository.find_commit(local, branch=branch, trailer=trailer, repository=repository)

    # -- REST ---------------------------------------------------------------------------------------

    def _call(self, method: str, url: str, *, what: str, repository: str, **kwargs: Any) -> Any:
        """One REST call; the answer's JSON (None when empty), or the product's error for it."""
        try:
            with self._client() as client:
                response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
            raise TransientError(f"{self._service}: {what} in {repository}: {kind} ({type(exc).__name__})") from None
        error = classify(response, service=self._service, what=what, repository=repository)
        if error is not None:
            raise error
        return response.json() if response.content else None

    # -- checks -------------------------------------------------------------------------------------

    def run_checks(self, repository: str, number: int) -> PullRequest:
        """Read the host's checks of the pull request's head, waiting up to ``checks_timeout_seconds``
        for pending ones; one still pending then is an ``error`` result."""
        deadline = time.monotonic() + self.checks_timeout_seconds
        while True:
            pr = self.get_pull_request(repository, number)
            if pr.status.value != "open":
                return pr
            found = self._remote_checks(repository, pr)
            if not any(pending for _, pending in found) or time.monotonic() + self.checks_poll_seconds > deadline:
                break
            time.sleep(self.checks_poll_seconds)
        return pr.model_copy(update={"checks": self._finish(found)})

    def _finish(self, found: list[tuple[CheckResult, bool]]) -> list[CheckResult]:
        checks = [result.model_copy(update={
            "status": CheckStatus.ERROR,
            "summary": f"still pending after {self.checks_timeout_seconds:g}s ({result.summary})"})
            if pending else result for result, pending in found]
        reported = {c.name for c in checks}
        checks += [check(name, CheckStatus.FAILED, "required check has not reported")
                   for name in self.required_checks if name not in reported]
        return checks


def check(name: str, status: CheckStatus, summary: str, *, kind: str = "remote") -> CheckResult:
    """A check result read now."""
    now = utcnow()
    return CheckResult(name=name, kind=kind, status=status, summary=summary, started_at=now, finished_at=now)


def title_and_body(message: str, trailers: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """A merge message with its trailers, split into a title line and the rest."""
    from delivery.git_grammar import format_message

    text = format_message(message, trailers)
    title, _, body = text.partition("\n")
    return title.strip(), body.strip() + "\n"


__all__ = ["RateLimited", "RemoteGitHost", "check", "check_url", "classify", "git_call", "git_env", "is_loopback_host",
           "title_and_body"]
