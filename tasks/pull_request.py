"""Stages 2-4: open the release's pull request, run its checks, merge it.

The checks' results and the merge are decisions of the release: each is kept in the ledger as an
action of the release (``pull-request-checks-passed`` or ``-failed`` by ``system:pull-request-checks``,
``pull-request-merged`` by the planner the release flow merges for), once: a stage run again after
a crash finds its record under the same key (the head and the checks' outcomes; the merge commit).
"""

from __future__ import annotations

import hashlib
import json
import logging

from blocks.git_host import GitHost
from delivery.errors import CheckFailed, InvalidInput, PermanentError
from delivery.events import EventName, emit
from delivery.ledger import PULL_REQUEST_CHECKS_FAILED, PULL_REQUEST_CHECKS_PASSED, PULL_REQUEST_MERGED, Ledger
from delivery.models import CommitInfo, MergeInfo, PullRequest, ReleaseRequest
from tasks.commit import release_trailers, require_git_host
from tasks.stage import stage

# Who decides whether a pull request's checks passed: the product's checks (branch policy, policy gate, commands).
CHECKS_ACTOR = "system:pull-request-checks"
_log = logging.getLogger(__name__)


def comment_outcome(host: GitHost, request: ReleaseRequest, number: int, outcome: str) -> None:
    """Say the stage's outcome on the pull request, once (the host skips a comment already there).

    A comment the host refuses for good (a token without the right, a host without comments) is logged,
    not raised: the outcome itself is already decided and recorded. A transient failure is raised: the
    stage runs again and finds its effect done.
    """
    body = f"{outcome}\n\nRelease {request.release_id} of {request.app}. Trace-Id: {request.trace_id}"
    try:
        host.comment_pull_request(request.app, number, body)
    except (PermanentError, NotImplementedError) as exc:
        _log.warning("could not comment on %s#%s: %s", request.app, number, exc)


def _same_release(request: ReleaseRequest, pull_request: PullRequest) -> None:
    if pull_request.source_branch != request.branch or pull_request.repository != request.app:
        raise InvalidInput(
            f"pull_request {pull_request.repository}#{pull_request.number} ({pull_request.source_branch}) "
            f"is not release {request.release_id}'s ({request.app}, {request.branch})"
        )


def _check_rows(pr: PullRequest) -> list[dict[str, str]]:
    return [{"name": c.name, "kind": c.kind, "status": c.status.value, "summary": c.summary} for c in pr.checks]


def _failures(pr: PullRequest) -> list[str]:
    return [f"{c.name}: {c.summary}" for c in pr.checks if not c.passed]


def record_checks(request: ReleaseRequest, pr: PullRequest) -> None:
    """Keep the checks' results in the ledger, once per head and outcome (a crash re-run records nothing new)."""
    passed = pr.checks_passed
    outcome = [(check.name, check.kind, check.status.value) for check in pr.checks]
    key = hashlib.sha256(json.dumps([pr.repository, pr.number, pr.head_sha, outcome]).encode()).hexdigest()
    failed = _failures(pr)
    names = ", ".join(c.name for c in pr.checks if c.passed)
    where = f"{pr.repository}#{pr.number} at {pr.head_sha[:12]}"
    if passed:
        reason = f"{where}: {len(pr.checks)} check(s) passed ({names})"
    else:
        reason = f"{where}: failed {'; '.join(failed) or 'no checks ran'}" + (f"; passed {names}" if names else "")
    Ledger().record_action(
        request.release_id, action=PULL_REQUEST_CHECKS_PASSED if passed else PULL_REQUEST_CHECKS_FAILED,
        actor=CHECKS_ACTOR, reason=reason, key=f"checks:{key}",
        detail={"pull_request": pr.number, "repository": pr.repository, "head_sha": pr.head_sha, "passed": passed,
                "requested_by": request.requested_by, "checks": _check_rows(pr)})


def record_merge(request: ReleaseRequest, pull_request: PullRequest, merge: MergeInfo) -> None:
    """Keep the merge in the ledger, once per merge commit, as done for the release's planner."""
    Ledger().record_action(
        request.release_id, action=PULL_REQUEST_MERGED, actor=request.requested_by,
        reason=f"{pull_request.repository}#{merge.pull_request} ({pull_request.source_branch}, checks passed at "
               f"{pull_request.head_sha[:12]}) merged into {merge.target_branch} as {merge.merge_sha[:12]} by the "
               f"release flow for {request.requested_by}",
        key=f"merge:{pull_request.repository}#{merge.pull_request}:{merge.merge_sha}",
        detail={"pull_request": merge.pull_request, "repository": pull_request.repository,
                "source_branch": pull_request.source_branch, "target_branch": merge.target_branch,
                "head_sha": pull_request.head_sha, "merge_sha": merge.merge_sha, "created": merge.created})


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

    Keeps the results in the ledger (:func:`record_checks`), emits ``PullRequestChecked`` with what
    passed and what failed, then stops the release with :class:`CheckFailed` when anything failed;
    the pull request stays open.

    Returns:
        The pull request with its check results, all passed.

    Raises:
        CheckFailed: a check failed; the message names each failed check and why.
    """
    host = require_git_host(git_host)
    _same_release(request, pull_request)
    pr = host.run_checks(request.app, pull_request.number)
    failed = _failures(pr)
    record_checks(request, pr)
    emit(EventName.PULL_REQUEST_CHECKED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"pull_request": pr.number, "repository": pr.repository, "head_sha": pr.head_sha,
                  "passed": pr.checks_passed, "checks": _check_rows(pr), "failed": failed})
    if not pr.checks_passed:
        reasons = "; ".join(failed) or "no checks ran"
        comment_outcome(host, request, pr.number, f"Checks failed at {pr.head_sha[:12]}: {reasons}")
        raise CheckFailed(f"pull request {pr.repository}#{pr.number} failed its checks: {reasons}",
                          reason="CheckFailed")
    return pr


@stage("merge_pull_request")
def merge_pull_request(git_host: GitHost, request: ReleaseRequest, pull_request: PullRequest) -> MergeInfo:
    """Merge the checked pull request with a merge commit carrying the release's trailers.

    Idempotent: an already merged pull request returns its merge with ``created=False``. The merge
    is kept in the ledger once (:func:`record_merge`).

    Raises:
        CheckFailed: the checks did not pass on the current head.
        MergeConflict: the branches no longer merge cleanly.
    """
    host = require_git_host(git_host)
    _same_release(request, pull_request)
    message = f"Merge release {request.release_id} of {request.app} (#{pull_request.number})"
    merge = host.merge_pull_request(request.app, pull_request.number, message=message,
                                    trailers=release_trailers(request))
    record_merge(request, pull_request, merge)
    comment_outcome(host, request, merge.pull_request,
                    f"Merged into {merge.target_branch} as {merge.merge_sha} by the release flow.")
    emit(EventName.PULL_REQUEST_MERGED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"merge": merge, "source_branch": pull_request.source_branch})
    return merge
