"""GitHub as the git host: git over HTTPS with a token, pull requests, checks and merges over REST.

Git authenticates as ``x-access-token`` with the token as password (see :mod:`blocks.remote_git`);
REST sends it as a Bearer token. Checks are the head commit's check runs and commit statuses, plus
the pull request's own ``mergeable``. Merges use the configured ``merge_method`` with the head sha,
so a head that moved after its checks is refused (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import Field, ValidationInfo, field_validator

from blocks.remote_git import RemoteGitHost, check, check_url, title_and_body
from delivery.errors import CheckFailed, MergeConflict, PermanentError
from delivery.models import CheckResult, CheckStatus, MergeInfo, PullRequest, PullRequestStatus
from delivery.provider_timing import timed_provider

_RUN_CONCLUSIONS = {"success": CheckStatus.PASSED, "neutral": CheckStatus.PASSED, "skipped": CheckStatus.PASSED}
_STATUS_STATES = {"success": CheckStatus.PASSED, "failure": CheckStatus.FAILED, "error": CheckStatus.ERROR}


@timed_provider
class GitHubHost(RemoteGitHost):
    """Repositories of one GitHub owner (user or organization).

    Attributes:
        owner: the user or organization owning the repositories.
        token: a token with contents, pull requests, checks and statuses access.
        merge_method: merge, squash or rebase.
        api_url: ``https://api.github.com`` (or a GitHub Enterprise ``https://host/api/v3``).
        git_url: ``https://github.com`` (or the Enterprise host): repositories are ``<git_url>/<owner>/<name>.git``.
    """

    _block_type_name = "GitHub Host"
    _block_type_slug = "github-host"
    _description = "Application repositories and pull requests on GitHub (REST v3, git over HTTPS with a token)."
    _service = "GitHub"
    _git_user = "x-access-token"

    owner: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$", description="User or organization")
    merge_method: Literal["merge", "squash", "rebase"] = Field(default="merge", description="How PRs are merged")
    api_url: str = Field(default="https://api.github.com", description="REST API base URL")
    git_url: str = Field(default="https://github.com", description="Base URL of the git remotes")

    @field_validator("api_url", "git_url")
    @classmethod
    def _https(cls, value: str, info: ValidationInfo) -> str:
        return check_url(value, str(info.field_name))

    def clone_url(self, repository: str) -> str:
        return f"{self.git_url}/{self.owner}/{self._name(repository)}.git"

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.api_url}/", timeout=self.request_timeout_seconds, headers={
            "Authorization": f"Bearer {self.token.get_secret_value()}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28"})

    def _repo(self, repository: str) -> str:
        return f"repos/{self.owner}/{self._name(repository)}"

    def _where(self, repository: str) -> str:
        return f"{self.owner}/{repository}"

    # ------------------------------------------------------------------ pull requests

    def _record(self, repository: str, data: dict[str, Any]) -> PullRequest:
        status = (PullRequestStatus.MERGED if data.get("merged") or data.get("merged_at")
                  else PullRequestStatus.OPEN if data.get("state") == "open" else PullRequestStatus.CLOSED)
        created = data.get("created_at")
        return PullRequest(
            number=int(data["number"]), repository=repository, source_branch=data["head"]["ref"],
            target_branch=data["base"]["ref"], title=data.get("title") or "", description=data.get("body") or "",
            status=status, head_sha=data["head"]["sha"], url=data.get("html_url"),
            merge_sha=data.get("merge_commit_sha") if status is PullRequestStatus.MERGED else None,
            **({"created_at": datetime.fromisoformat(created.replace("Z", "+00:00"))} if created else {}))

    def get_pull_request(self, repository: str, number: int) -> PullRequest:
        data = self._call("GET", f"{self._repo(repository)}/pulls/{int(number)}", what=f"read pull request #{number}",
                          repository=self._where(repository))
        return self._record(repository, data)

    def open_pull_request(self, repository: str, *, source: str, target: str, title: str,
                          description: str = "") -> PullRequest:
        """Open a pull request, or return the open one (or the one merged at this head) for ``source``.

        Raises:
            NotFound: the source or target branch does not exist.
        """
        head = self._source_head(repository, source, target)
        where = self._where(repository)
        existing = self._call("GET", f"{self._repo(repository)}/pulls", what="list pull requests", repository=where,
                              params={"head": f"{self.owner}:{source}", "base": target, "state": "all",
                                      "per_page": 100})
        reusable = self._reusable((self._record(repository, item) for item in existing), head)
        if reusable is not None:
            return reusable
        data = self._call("POST", f"{self._repo(repository)}/pulls", what="create pull request", repository=where,
                          json={"title": title, "head": source, "base": target, "body": description, "draft": False})
        return self._record(repository, data)

    # ------------------------------------------------------------------ checks

    def _remote_checks(self, repository: str, pr: PullRequest) -> list[tuple[CheckResult, bool]]:
        where = self._where(repository)
        data = self._call("GET", f"{self._repo(repository)}/pulls/{pr.number}", what=f"read pull request #{pr.number}",
                          repository=where)
        mergeable = data.get("mergeable")
        found = [(check("mergeable", CheckStatus.PASSED if mergeable else CheckStatus.FAILED,
                        f"{pr.source_branch} merges into {pr.target_branch}" if mergeable else
                        "GitHub is still computing mergeability" if mergeable is None else
                        f"{pr.source_branch} does not merge cleanly into {pr.target_branch} "
                        f"({data.get('mergeable_state', '?')})", kind="branch_policy"), mergeable is None)]
        runs = self._call("GET", f"{self._repo(repository)}/commits/{pr.head_sha}/check-runs",
                          what=f"read check runs of {pr.head_sha[:12]}", repository=where, params={"per_page": 100})
        for run in runs.get("check_runs", []):
            done = run.get("status") == "completed"
            conclusion = run.get("conclusion") or run.get("status", "queued")
            found.append((check(run.get("name", "?"), _RUN_CONCLUSIONS.get(conclusion, CheckStatus.FAILED),
                                f"check run {conclusion}"), not done))
        combined = self._call("GET", f"{self._repo(repository)}/commits/{pr.head_sha}/status",
                              what=f"read commit statuses of {pr.head_sha[:12]}", repository=where)
        for status in combined.get("statuses", []):
            state = status.get("state", "pending")
            found.append((check(status.get("context", "?"), _STATUS_STATES.get(state, CheckStatus.FAILED),
                                f"status {state}: {status.get('description') or ''}".strip()), state == "pending"))
        return found

    # ------------------------------------------------------------------ merge and comments

    def merge_pull_request(self, repository: str, number: int, *, message: str,
                           trailers: Sequence[tuple[str, str]]) -> MergeInfo:
        """Merge with ``merge_method`` at the head whose checks passed; idempotent once merged.

        Raises:
            CheckFailed: a check failed or is pending, or the head moved since (409).
            MergeConflict: GitHub will not merge it (405).
        """
        pr = self.get_pull_request(repository, number)
        if pr.status is PullRequestStatus.MERGED and pr.merge_sha:
            return MergeInfo(pull_request=number, merge_sha=pr.merge_sha, target_branch=pr.target_branch,
                             created=False)
        where = self._where(repository)
        if pr.status is not PullRequestStatus.OPEN:
            raise PermanentError(f"GitHub: {where}#{number} is {pr.status.value}: it cannot be merged")
        checks = self._finish(self._remote_checks(repository, pr))
        failed = [f"{c.name}: {c.summary}" for c in checks if not c.passed]
        if failed:
            raise CheckFailed(f"GitHub: {where}#{number} cannot be merged: " + "; ".join(failed))
        title, body = title_and_body(message, trailers)
        body_json = {"sha": pr.head_sha, "merge_method": self.merge_method, "commit_title": title,
                     "commit_message": body}
        try:
            data = self._call("PUT", f"{self._repo(repository)}/pulls/{number}/merge", what=f"merge #{number}",
                              repository=where, json=body_json)
        except PermanentError as exc:
            if "answered 405" in str(exc):
                raise MergeConflict(f"GitHub: {where}#{number} is not mergeable: {exc}") from None
            if "answered 409" in str(exc):
                raise CheckFailed(f"GitHub: {where}#{number}: {pr.source_branch} moved since its checks ran; "
                                  "run them again") from None
            raise
        return MergeInfo(pull_request=number, merge_sha=data["sha"], target_branch=pr.target_branch, created=True)

    def pull_request_comments(self, repository: str, number: int) -> list[str]:
        data = self._call("GET", f"{self._repo(repository)}/issues/{int(number)}/comments",
                          what=f"read comments of #{number}", repository=self._where(repository),
                          params={"per_page": 100})
        return [item.get("body", "") for item in data]

    def comment_pull_request(self, repository: str, number: int, body: str) -> bool:
        if body in self.pull_request_comments(repository, number):
            return False
        self._call("POST", f"{self._repo(repository)}/issues/{int(number)}/comments", what=f"comment on #{number}",
                   repository=self._where(repository), json={"body": body})
        return True


__all__ = ["GitHubHost"]
