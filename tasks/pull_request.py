"""Stages 2-4: open the release's pull request, run its checks, merge it."""

from __future__ import annotations

from blocks.git_host import GitHost
from delivery.errors import CheckFailed, InvalidInput
from delivery.events import EventName, emit
from delivery.models import CommitInfo, MergeInfo, PullRequest, ReleaseRequest
from tasks.commit import release_trailers, require_git_host
from tasks.stage import stage


def _same_release(request: ReleaseRequest, pull_request: PullRequest) -> None:
    if pull_request.source_branch != request.branch or pull_request.repository != request.app:
        raise InvalidInput(
            f"pull_request {pull_request.repository}#{pull_request.number} ({pull_request.source_branch}) "
            f"is not release {request.release_id}'s ({request.app}, {request.branch})"
        )


@stage("open_pull_request")
def open_pull_request(
    git_host: GitHost, request: ReleaseRequest, commit: CommitInfo, *, target: str = "main"
) -> PullRequest:
    """Open the pull request of ``release/<release_id>`` into ``target``, or reuse the open one.

    Args:
        git_host: the block holding the application repository.
        request: the release request.
        commit: the release commit (stage 1's result).
        target: the protected branch to merge into.

    Returns:
        The pull request record.
    """
    host = require_git_host(git_host)
    if commit.branch != request.branch:
        raise InvalidInput(f"commit.branch {commit.branch!r} is not the release branch {request.branch!r}")
    description = "\n".join(
        [f"Release {request.release_id} of {request.app}, requested by {request.requested_by}.", "",
         *(["Artifacts:", *[f"- {a.artifact_id}: {a.path} (validated by {a.validation.validator})"
                            for a in request.artifacts]] if request.artifacts else
           [f"Source: {request.source.ref} at {', '.join(commit.trailers.get('Source-Commit', [])) or '?'}"]),
         "", f"Trace-Id: {request.trace_id}"]
    )
    pr = host.open_pull_request(request.app, source=request.branch, target=target,
                                title=f"Release {request.release_id} of {request.app}", description=description)
    emit(EventName.PULL_REQUEST_OPENED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"pull_request": pr, "commit": commit.sha})
    return pr


@stage("check_pull_request")
def check_pull_request(git_host: GitHost, request: ReleaseRequest, pull_request: PullRequest) -> PullRequest:
    """Run the pull request's checks (branch policy, policy gate, commands) and record them.

    Emits ``PullRequestChecked`` with what passed and what failed, then stops the release with
    :class:`CheckFailed` when anything failed; the pull request stays open.

    Returns:
        The pull request with its check results, all passed.

    Raises:
        CheckFailed: a check failed; the message names each failed check and why.
    """
    host = require_git_host(git_host)
    _same_release(request, pull_request)
    pr = host.run_checks(request.app, pull_request.number)
    failed = [check for check in pr.checks if not check.passed]
    emit(EventName.PULL_REQUEST_CHECKED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"pull_request": pr.number, "repository": pr.repository, "head_sha": pr.head_sha,
                  "passed": not failed and bool(pr.checks),
                  "checks": [{"name": c.name, "kind": c.kind, "status": c.status.value, "summary": c.summary}
                             for c in pr.checks],
                  "failed": [f"{c.name}: {c.summary}" for c in failed]})
    if failed or not pr.checks:
        reasons = "; ".join(f"{c.name}: {c.summary}" for c in failed) or "no checks ran"
        raise CheckFailed(f"pull request {pr.repository}#{pr.number} failed its checks: {reasons}",
                          reason="CheckFailed")
    return pr


@stage("merge_pull_request")
def merge_pull_request(git_host: GitHost, request: ReleaseRequest, pull_request: PullRequest) -> MergeInfo:
    """Merge the checked pull request with a merge commit carrying the release's trailers.

    Idempotent: an already merged pull request returns its merge with ``created=False``.

    Raises:
        CheckFailed: the checks did not pass on the current head.
        MergeConflict: the branches no longer merge cleanly.
    """
    host = require_git_host(git_host)
    _same_release(request, pull_request)
    message = f"Merge release {request.release_id} of {request.app} (#{pull_request.number})"
    merge = host.merge_pull_request(request.app, pull_request.number, message=message,
                                    trailers=release_trailers(request))
    emit(EventName.PULL_REQUEST_MERGED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"merge": merge, "source_branch": pull_request.source_branch})
    return merge
