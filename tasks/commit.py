"""Stage 1: commit the release's validated artifacts to its feature branch ``release/<release_id>``.

A release of ``source.ref`` (an existing branch, tag or commit) has no artifacts: its branch starts
at the commit the ref resolved to and gets one commit of no file changes carrying the release's
trailers, ``Source-Commit`` among them, so the checks and the merge see the same shape of branch.
"""

from __future__ import annotations

from blocks.git_host import GitHost
from delivery.errors import InvalidInput
from delivery.events import EventName, emit
from delivery.models import CommitInfo, ReleaseRequest
from tasks.stage import stage


def release_trailers(request: ReleaseRequest) -> list[tuple[str, str]]:
    """The trailers every commit of a release carries: Release-Id, Trace-Id, per artifact Artifact-Id and
    ``Artifact-Sha256: <id> <hex>`` (the digest given, or computed when the request left it out), Source-Ref."""
    trailers = [("Release-Id", request.release_id), ("Trace-Id", request.trace_id)]
    for artifact_id, sha256 in request.artifact_digests().items():
        trailers += [("Artifact-Id", artifact_id), ("Artifact-Sha256", f"{artifact_id} {sha256}")]
    if request.source.ref:
        trailers.append(("Source-Ref", request.source.ref))
    return trailers


def require_git_host(git_host: object) -> GitHost:
    """Refuse anything that is not a :class:`GitHost` block, naming the parameter."""
    if not isinstance(git_host, GitHost):
        raise InvalidInput(f"git_host must be a GitHost block, got {type(git_host).__name__}")
    return git_host


@stage("create_commit")
def create_commit(git_host: GitHost, request: ReleaseRequest, *, base: str = "main",
                  source_commit: str | None = None) -> CommitInfo:
    """Commit ``request``'s artifacts to ``release/<release_id>`` of the app's repository.

    Idempotent: a commit of this release already on the branch (found by its ``Release-Id``
    trailer) whose artifacts are unchanged is returned with ``created=False``.

    Args:
        git_host: the block holding the application repository (named after ``request.app``).
        request: the release request; its artifacts were validated when it was built.
        base: the branch a new release branch starts from.
        source_commit: for a release of ``source.ref``, the commit it resolved to: the release branch
            starts there instead (recorded as the ``Source-Commit`` trailer and the commit's parent).

    Returns:
        The commit on the release branch.

    Raises:
        NotFound: the application repository, ``base`` or ``source_commit`` does not exist.
        InvalidInput: ``source_commit`` given for a release of artifacts, or missing for one of a source.
        ConflictError: another writer moved the branch first (the stage retries).
    """
    host = require_git_host(git_host)
    if bool(request.source.ref) != bool(source_commit):
        raise InvalidInput("source_commit: give the resolved commit exactly when the request has a source.ref")
    files = {artifact.path: artifact.data() for artifact in request.artifacts}
    trailers = release_trailers(request)
    commit = host.find_commit(request.app, branch=request.branch, trailer=("Release-Id", request.release_id))
    if commit is None or not _holds(host, request, files):
        if source_commit:
            what = f"{request.source.ref} ({source_commit[:12]})"
            trailers.append(("Source-Commit", source_commit))
            base = source_commit
        else:
            what = f"{len(files)} artifact(s)"
        message = f"Release {request.release_id}: {what} for {request.app}\n\nRequested by {request.requested_by}."
        commit = host.commit_files(request.app, branch=request.branch, files=files, message=message,
                                   trailers=trailers, base=base)
    emit(EventName.COMMIT_CREATED, release_id=request.release_id, trace_id=request.trace_id,
         payload={"commit": commit, "artifacts": [a.artifact_id for a in request.artifacts],
                  "artifact_sha256": request.artifact_digests(),
                  "source": {"ref": request.source.ref, "commit": commit.trailers.get("Source-Commit", [""])[0]}
                  if request.source.ref else None})
    return commit


def _holds(host: GitHost, request: ReleaseRequest, files: dict[str, bytes]) -> bool:
    return all(host.read_file(request.app, path, ref=request.branch) == data for path, data in files.items())
