"""Azure Repos as the git host: git over HTTPS with a PAT, pull requests, policies and completion over REST 7.1.

Git authenticates with Basic, an empty user name and the PAT (see :mod:`blocks.remote_git`); REST
likewise. Checks are the pull request's ``mergeStatus``, the branch-policy evaluations
(``policy/evaluations``, by the project's id) and the pull request statuses. Completion GETs the pull
request first and sends back its ``lastMergeSourceCommit``, so a head that moved is refused.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, ValidationInfo, field_validator

from blocks.remote_git import RemoteGitHost, check, check_url
from delivery import git_grammar
from delivery.errors import CheckFailed, ConflictError, MergeConflict, PermanentError, TransientError
from delivery.models import CheckResult, CheckStatus, MergeInfo, PullRequest, PullRequestStatus
from delivery.provider_timing import timed_provider

API_VERSION = "7.1"
_PR_STATUS = {"active": PullRequestStatus.OPEN, "completed": PullRequestStatus.MERGED,
              "abandoned": PullRequestStatus.CLOSED}
_POLICY = {"approved": CheckStatus.PASSED, "notApplicable": CheckStatus.PASSED, "rejected": CheckStatus.FAILED,
           "broken": CheckStatus.ERROR}
_STATE = {"succeeded": CheckStatus.PASSED, "notApplicable": CheckStatus.PASSED, "failed": CheckStatus.FAILED,
          "error": CheckStatus.ERROR}
_MERGE = {"succeeded": CheckStatus.PASSED, "conflicts": CheckStatus.FAILED, "rejectedByPolicy": CheckStatus.FAILED,
          "failure": CheckStatus.FAILED}


def _branch(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


@timed_provider
class AzureReposHost(RemoteGitHost):
    """Repositories of one Azure DevOps project.

    Attributes:
        organization: the Azure DevOps organization.
        project: the project's name (its id is read when ``project_id`` is empty).
        token: a personal access token (Code: read & write; Code: status).
        merge_method: noFastForward, squash, rebase or rebaseMerge.
        base_url: ``https://dev.azure.com`` (or an Azure DevOps Server collection URL).
    """

    _block_type_name = "Azure Repos Host"
    _block_type_slug = "azure-repos-host"
    _description = "Application repositories and pull requests on Azure Repos (REST 7.1, git over HTTPS with a PAT)."
    _service = "Azure Repos"
    _git_user = ""

    organization: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$", description="The organization")
    project: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$", description="The project's name")
    project_id: str = Field(default="", description="The project's id (read from the API when empty)")
    merge_method: Literal["noFastForward", "squash", "rebase", "rebaseMerge"] = Field(
        default="noFastForward", description="The completion's merge strategy")
    base_url: str = Field(default="https://dev.azure.com", description="https://dev.azure.com or a collection URL")
    completion_timeout_seconds: float = Field(default=120.0, ge=0,
                                              description="How long to wait for an asynchronous completion")

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str, info: ValidationInfo) -> str:
        return check_url(value, str(info.field_name))

    def clone_url(self, repository: str) -> str:
        return f"{self.base_url}/{self.organization}/{quote(self.project)}/_git/{self._name(repository)}"

    def _client(self) -> httpx.Client:
        credentials = base64.b64encode(f":{self.token.get_secret_value()}".encode()).decode()
        return httpx.Client(base_url=f"{self.base_url}/{self.organization}/{quote(self.project)}/_apis/",
                            headers={"Authorization": f"Basic {credentials}", "Accept": "application/json"},
                            params={"api-version": API_VERSION}, timeout=self.request_timeout_seconds)

    def _prs(self, repository: str) -> str:
        return f"git/repositories/{self._name(repository)}/pullrequests"

    def _where(self, repository: str) -> str:
        return f"{self.organization}/{self.project}/{repository}"

    # ------------------------------------------------------------------ pull requests

    def _record(self, repository: str, data: dict[str, Any]) -> PullRequest:
        status = _PR_STATUS.get(data.get("status", ""), PullRequestStatus.OPEN)
        created = data.get("creationDate")
        web = f"{self.clone_url(repository)}/pullrequest/{data['pullRequestId']}"
        return PullRequest(
            number=int(data["pullRequestId"]), repository=repository, source_branch=_branch(data["sourceRefName"]),
            target_branch=_branch(data["targetRefName"]), title=data.get("title") or "",
            description=data.get("description") or "", status=status, url=web,
            head_sha=(data.get("lastMergeSourceCommit") or {}).get("commitId", ""),
            merge_sha=(data.get("lastMergeCommit") or {}).get("commitId") if status is PullRequestStatus.MERGED
            else None,
            **({"created_at": datetime.fromisoformat(created.replace("Z", "+00:00"))} if created else {}))

    def _get(self, repository: str, number: int) -> dict[str, Any]:
        return self._call("GET", f"{self._prs(repository)}/{int(number)}", what=f"read pull request {number}",
                          repository=self._where(repository))

    def get_pull_request(self, repository: str, number: int) -> PullRequest:
        return self._record(repository, self._get(repository, number))

    def open_pull_request(self, repository: str, *, source: str, target: str, title: str,
                          description: str = "") -> PullRequest:
        """Open a pull request, or return the active one (or the one completed at this head) for ``source``.

        Raises:
            NotFound: the source branch does not exist.
        """
        head = self._source_head(repository, source, target)
        where = self._where(repository)
        existing = self._call("GET", self._prs(repository), what="list pull requests", repository=where, params={
            "searchCriteria.sourceRefName": f"refs/heads/{source}", "searchCriteria.targetRefName":
            f"refs/heads/{target}", "searchCriteria.status": "all"}).get("value", [])
        reusable = self._reusable((self._record(repository, item) for item in existing), head)
        if reusable is not None:
            return reusable
        data = self._call("POST", self._prs(repository), what="create pull request", repository=where, json={
            "sourceRefName": f"refs/heads/{source}", "targetRefName": f"refs/heads/{target}", "title": title,
            "description": description, "isDraft": False})
        return self._record(repository, data)

    # ------------------------------------------------------------------ checks

    def _project_id(self) -> str:
        if self.project_id:
            return self.project_id
        url = f"{self.base_url}/{self.organization}/_apis/projects/{quote(self.project)}"
        project = self._call("GET", url, what="read the project's id", repository=f"{self.organization}/{self.project}")
        return str(project["id"])

    def _remote_checks(self, repository: str, pr: PullRequest) -> list[tuple[CheckResult, bool]]:
        where = self._where(repository)
        data = self._get(repository, pr.number)
        merge_status = data.get("mergeStatus", "notSet")
        found = [(check("mergeable", _MERGE.get(merge_status, CheckStatus.FAILED), f"mergeStatus {merge_status}",
                        kind="branch_policy"), merge_status in ("notSet", "queued"))]
        artifact = f"vstfs:///CodeReview/CodeReviewId/{self._project_id()}/{pr.number}"
        evaluations = self._call("GET", "policy/evaluations", what=f"read policy evaluations of {pr.number}",
                                 repository=where, params={"artifactId": artifact, "api-version": "7.1-preview.1"})
        for item in evaluations.get("value", []):
            config = item.get("configuration") or {}
            if not config.get("isEnabled", True):
                continue
            name = ((config.get("type") or {}).get("displayName")) or f"policy {item.get('evaluationId', '?')}"
            state = item.get("status", "queued")
            status = _POLICY.get(state, CheckStatus.FAILED)
            if not config.get("isBlocking", True):  # optional policies are reported, never block
                found.append((check(name, CheckStatus.PASSED, f"optional policy {state}", kind="branch_policy"), False))
                continue
            found.append((check(name, status, f"policy {state}", kind="branch_policy"), state in ("queued", "running")))
        statuses = self._call("GET", f"git/repositories/{self._name(repository)}/pullRequests/{pr.number}/statuses",
                              what=f"read statuses of {pr.number}", repository=where).get("value", [])
        latest: dict[str, dict[str, Any]] = {}
        for item in sorted(statuses, key=lambda s: s.get("id", 0)):  # a later post of the same context replaces
            context = item.get("context") or {}
            latest["/".join(filter(None, (context.get("genre"), context.get("name"))))] = item
        for name, item in latest.items():
            state = item.get("state", "notSet")
            found.append((check(name or "status", _STATE.get(state, CheckStatus.FAILED),
                                f"status {state}: {item.get('description') or ''}".strip()),
                          state in ("pending", "notSet")))
        return found

    # ------------------------------------------------------------------ completion and comments

    def merge_pull_request(self, repository: str, number: int, *, message: str,
                           trailers: Sequence[tuple[str, str]]) -> MergeInfo:
        """Complete the pull request with ``merge_method``; idempotent once completed.

        Raises:
            CheckFailed: a check failed or is pending, or the head moved since its checks.
            MergeConflict: Azure refused to merge it (conflicts, policies).
        """
        where = self._where(repository)
        data = self._get(repository, number)
        pr = self._record(repository, data)
        if pr.status is PullRequestStatus.MERGED and pr.merge_sha:
            return MergeInfo(pull_request=number, merge_sha=pr.merge_sha, target_branch=pr.target_branch,
                             created=False)
        if pr.status is not PullRequestStatus.OPEN:
            raise PermanentError(f"Azure Repos: {where} pull request {number} is {pr.status.value}: "
                                 "it cannot be merged")
        failed = [f"{c.name}: {c.summary}" for c in self._finish(self._remote_checks(repository, pr)) if not c.passed]
        if failed:
            raise CheckFailed(f"Azure Repos: {where} pull request {number} cannot be merged: " + "; ".join(failed))
        if not (data.get("lastMergeSourceCommit") or {}).get("commitId"):
            raise TransientError(f"Azure Repos: {where} pull request {number} has no lastMergeSourceCommit yet")
        body = {"status": "completed", "lastMergeSourceCommit": data["lastMergeSourceCommit"],
                "completionOptions": {"mergeStrategy": self.merge_method, "deleteSourceBranch": False,
                                      "mergeCommitMessage": git_grammar.format_message(message, trailers)}}
        try:
            done = self._call("PATCH", f"{self._prs(repository)}/{int(number)}", what=f"complete pull request {number}",
                              repository=where, json=body)
        except PermanentError as exc:
            if "answered 409" in str(exc) or "(422)" in str(exc):
                raise CheckFailed(f"Azure Repos: {where} pull request {number}: refused ({exc}); its head may have "
                                  "moved since its checks ran") from None
            raise
        deadline = time.monotonic() + self.completion_timeout_seconds
        while done.get("status") != "completed":  # completion may be queued: read until it lands
            if done.get("mergeStatus") in ("conflicts", "rejectedByPolicy", "failure"):
                raise MergeConflict(f"Azure Repos: {where} pull request {number}: mergeStatus {done['mergeStatus']}")
            if time.monotonic() > deadline:
                raise TransientError(f"Azure Repos: {where} pull request {number} not completed after "
                                     f"{self.completion_timeout_seconds:g}s")
            time.sleep(min(self.checks_poll_seconds, 2.0))
            done = self._get(repository, number)
        merge_sha = (done.get("lastMergeCommit") or {}).get("commitId")
        if not merge_sha:
            raise ConflictError(f"Azure Repos: {where} pull request {number} completed without a merge commit yet")
        return MergeInfo(pull_request=number, merge_sha=merge_sha, target_branch=pr.target_branch, created=True)

    def _threads(self, repository: str, number: int) -> str:
        return f"git/repositories/{self._name(repository)}/pullRequests/{int(number)}/threads"

    def pull_request_comments(self, repository: str, number: int) -> list[str]:
        threads = self._call("GET", self._threads(repository, number), what=f"read comments of {number}",
                             repository=self._where(repository)).get("value", [])
        return [c.get("content", "") for t in threads for c in t.get("comments", []) if c.get("commentType", 1) != 2]

    def comment_pull_request(self, repository: str, number: int, body: str) -> bool:
        if body in self.pull_request_comments(repository, number):
            return False
        self._call("POST", self._threads(repository, number), what=f"comment on {number}",
                   repository=self._where(repository),
                   json={"comments": [{"parentCommentId": 0, "content": body, "commentType": 1}], "status": "closed"})
        return True


__all__ = ["AzureReposHost"]
