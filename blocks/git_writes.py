"""Writing to git repositories: creating them, committing files and merging branches.

Writes go through a temporary clone and a push without force, so a concurrent writer makes the
push fail instead of being overwritten: the rejected non-fast-forward push becomes
:class:`~delivery.errors.ConflictError` (retryable). ``url`` arguments accept anything ``git clone``
accepts (a local bare repository path included).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from git import Actor, IndexFile, Repo
from git.exc import BadName, GitCommandError
from git.index.typ import BaseIndexEntry, IndexEntry
from git.objects import Commit
from gitdb.base import IStream

from blocks.git_repository import describe_commit, translated
from delivery.errors import InvalidInput, MergeConflict, NotFound, PermanentError
from delivery.git_grammar import check_branch, check_path, format_message
from delivery.models import CommitInfo

DEFAULT_AUTHOR = "gitops-delivery <delivery@localhost>"
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class MergeResult:
    """The outcome of :func:`merge_branches`."""

    sha: str
    created: bool


def actor_of(identity: str) -> Actor:
    """The git author and committer of a ``Name <email>`` identity.

    Raises:
        InvalidInput: the identity does not look like ``Name <email>``.
    """
    match = re.match(r"^\s*(.+?)\s*<([^<>]+)>\s*$", identity)
    if not match:
        raise InvalidInput(f"author {identity!r} must look like 'Name <email>'")
    return Actor(match.group(1), match.group(2))


def init_bare(
    repo_path: str | Path,
    *,
    default_branch: str = "main",
    initial_files: Mapping[str, bytes] | None = None,
    message: str = "Initial commit",
    author: str = DEFAULT_AUTHOR,
) -> bool:
    """Create a bare repository unless it exists; seed ``default_branch`` with files.

    Args:
        repo_path: where the bare repository lives.
        default_branch: the branch HEAD points at.
        initial_files: files of the first commit (none: the repository starts empty).
        message: the first commit's message.
        author: ``Name <email>`` of the first commit.

    Returns:
        True when the repository was created, False when it already existed.
    """
    check_branch(default_branch)
    path = Path(repo_path)
    with translated(f"create repository {path}"):
        if (path / "HEAD").exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = Repo.init(path, bare=True, initial_branch=default_branch)
        repo.close()
    if initial_files:
        commit_files(path, branch=default_branch, files=initial_files, message=message, trailers=(),
                     base=default_branch, author=author)
    return True


# --------------------------------------------------------------------------- commits


@contextmanager
def _clone(url: str | Path, env: Mapping[str, str] | None = None) -> Iterator[Repo]:
    with tempfile.TemporaryDirectory(prefix="delivery-git-") as tmp:
        with translated(f"clone {url}"):
            repo = Repo.clone_from(str(url), os.path.join(tmp, "work"), no_checkout=True, env=env)
            if env:  # credentials for the push, in the environment only (never in the remote URL or config)
                repo.git.update_environment(**env)
        try:
            yield repo
        finally:
            repo.close()


def _base_commit(repo: Repo, base: str) -> Commit | None:
    """The commit a new branch starts from: ``base`` is a branch of origin, or a full commit sha."""
    if not _SHA.fullmatch(base):
        return _remote_head(repo, base)
    try:
        return repo.commit(base)
    except (BadName, ValueError, GitCommandError):
        return None


def _remote_head(repo: Repo, branch: str) -> Commit | None:
    try:
        return repo.commit(f"refs/remotes/origin/{branch}")
    except (BadName, ValueError, GitCommandError):
        return None


def push(repo: Repo, sha: str, branch: str) -> None:
    """Push ``sha`` to ``branch`` of ``origin`` without force.

    Raises:
        ConflictError: the push was rejected because the branch moved (non-fast-forward).
    """
    with translated(f"push {branch}"):
        repo.git.push("--porcelain", "origin", f"{sha}:refs/heads/{branch}")


def commit_files(
    url: str | Path,
    *,
    branch: str,
    files: Mapping[str, bytes | None],
    message: str,
    trailers: Sequence[tuple[str, str]],
    base: str = "main",
    author: str = DEFAULT_AUTHOR,
    repository: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CommitInfo:
    """Commit files to ``branch`` (created from ``base`` when missing) and push, in one attempt.

    Args:
        url: the repository to write to (a bare repository path or any git URL).
        branch: the branch to commit to.
        files: repository path -> new bytes; None deletes the file.
        message: the commit message; the trailers are appended.
        trailers: ``(key, value)`` pairs, e.g. ``[("Release-Id", "rel-1")]``.
        base: the branch a missing ``branch`` starts from (an empty repository starts an orphan), or a
            full commit sha (a release of an existing commit).
        author: ``Name <email>`` for author and committer.
        repository: the name to put in the result (default: the URL).
        env: environment of the git processes (a remote's credentials, see :mod:`blocks.remote_git`).

    Returns:
        The commit; ``created=False`` (and nothing written) when the branch already holds exactly
        these contents.

    Raises:
        ConflictError: another writer moved the branch between our read and our push.
        InvalidInput: a bad branch, path, trailer or author.
        NotFound: the repository or ``base`` does not exist.
    """
    check_branch(branch)
    if not _SHA.fullmatch(base):
        check_branch(base)
    paths = {check_path(path): data for path, data in files.items()}
    full_message = format_message(message, trailers)
    actor = actor_of(author)
    name = repository or str(url)
    with _clone(url, env) as repo, translated(f"commit to {branch}"):
        parent = _remote_head(repo, branch)
        if parent is None and base != branch:
            parent = _base_commit(repo, base)
            if parent is None and (_SHA.fullmatch(base) or any(r.name.startswith("origin/")
                                                               for r in repo.remote().refs)):
                raise NotFound(f"{url}: base {base!r} does not exist")
        branch_exists = _remote_head(repo, branch) is not None
        tree_sha = write_tree(repo, parent, paths)
        if branch_exists and parent is not None and parent.tree.hexsha == tree_sha:
            return describe_commit(parent, repository=name, branch=branch, created=False)
        commit = Commit.create_from_tree(
            repo, repo.tree(tree_sha), full_message, parent_commits=[parent] if parent else [],
            head=False, author=actor, committer=actor,
        )
        push(repo, commit.hexsha, branch)
        return describe_commit(commit, repository=name, branch=branch, created=True)


def write_tree(repo: Repo, parent: Commit | None, files: Mapping[str, bytes | None]) -> str:
    """Build the tree of ``parent`` with ``files`` applied, in a throw-away index."""
    if parent is not None:
        index = IndexFile.from_tree(repo, parent.tree)
    else:
        index = IndexFile(repo, os.path.join(repo.git_dir, "delivery-empty-index"))
    for path, data in files.items():
        existing = index.entries.pop((path, 0), None)
        if data is None:
            continue
        stream = repo.odb.store(IStream("blob", len(data), BytesIO(data)))
        mode = existing.mode if existing is not None else 0o100644
        index.entries[(path, 0)] = IndexEntry.from_base(BaseIndexEntry((mode, stream.binsha, 0, path)))
    return index.write_tree().hexsha


# --------------------------------------------------------------------------- merging


@contextmanager
def merged_checkout(url: str | Path, *, source: str, target: str) -> Iterator[Repo]:
    """Yield a temporary working tree of ``target`` with ``source`` merged in (staged, not committed).

    Used to run pull-request checks against the merge result and to make the merge commit.

    Raises:
        MergeConflict: the branches do not merge cleanly.
        NotFound: a branch does not exist.
    """
    with tempfile.TemporaryDirectory(prefix="delivery-merge-") as tmp:
        with translated(f"clone {url}"):
            repo = Repo.clone_from(str(url), os.path.join(tmp, "work"), branch=target)
        try:
            if _remote_head(repo, source) is None:
                raise NotFound(f"{url}: branch {source!r} does not exist")
            try:
                repo.git.merge("--no-ff", "--no-commit", f"origin/{source}")
            except GitCommandError as exc:
                conflicted = sorted({path for path, _ in repo.index.unmerged_blobs().items()}) if _merging(repo) else []
                detail = ", ".join(conflicted) or (exc.stdout or exc.stderr or "").strip()
                raise MergeConflict(f"{source} does not merge cleanly into {target}: conflict in {detail}") from exc
            yield repo
        finally:
            repo.close()


def _merging(repo: Repo) -> bool:
    return os.path.exists(os.path.join(repo.git_dir, "MERGE_HEAD"))


def merge_branches(
    url: str | Path,
    *,
    source: str,
    target: str,
    message: str,
    trailers: Sequence[tuple[str, str]],
    author: str = DEFAULT_AUTHOR,
    expected_source: str | None = None,
) -> MergeResult:
    """Merge ``source`` into ``target`` with a merge commit (``--no-ff``) and push it.

    Idempotent: when ``source``'s head is already in ``target``, nothing is written and the merge
    commit that brought it (or ``target``'s head) is returned with ``created=False``.

    Args:
        url: the repository.
        source: the branch to merge.
        target: the branch merged into.
        message: the merge commit's message; trailers are appended.
        trailers: ``(key, value)`` pairs.
        author: ``Name <email>``.
        expected_source: refuse when ``source`` is no longer at this sha.

    Raises:
        MergeConflict: the merge needs a human.
        ConflictError: ``target`` moved during the merge (retry).
        PermanentError: ``source`` moved away from ``expected_source``.
    """
    check_branch(source)
    check_branch(target)
    full_message = format_message(message, trailers)
    actor = actor_of(author)
    with merged_checkout(url, source=source, target=target) as repo, translated(f"merge {source} into {target}"):
        source_head = repo.commit(f"refs/remotes/origin/{source}")
        if expected_source and source_head.hexsha != expected_source:
            raise PermanentError(f"{source} moved to {source_head.hexsha[:12]} since it was checked "
                                 f"at {expected_source[:12]}")
        target_head = repo.commit(f"refs/remotes/origin/{target}")
        if repo.is_ancestor(source_head, target_head):
            for commit in repo.iter_commits(target_head, first_parent=True, max_count=500):
                if len(commit.parents) > 1 and commit.parents[1].hexsha == source_head.hexsha:
                    return MergeResult(sha=commit.hexsha, created=False)
            return MergeResult(sha=target_head.hexsha, created=False)
        tree = repo.index.write_tree()
        commit = Commit.create_from_tree(repo, tree, full_message, parent_commits=[target_head, source_head],
                                         head=False, author=actor, committer=actor)
        push(repo, commit.hexsha, target)
        return MergeResult(sha=commit.hexsha, created=True)
