"""Reading local git repositories: refs, files, trees and the commits a release left.

Reads open the bare repository directly (``repo_path`` arguments must be a local repository). Every
gitpython/OS error is translated into :mod:`delivery.errors` at this boundary (:func:`translated`);
writes live in :mod:`blocks.git_writes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from git import Repo
from git.exc import BadName, GitCommandError, InvalidGitRepositoryError, NoSuchPathError
from git.objects import Commit

from delivery.errors import ConflictError, DeliveryError, NotFound, PermanentError, TransientError
from delivery.git_grammar import parse_trailers
from delivery.models import CommitInfo

_CONFLICT_MARKERS = ("non-fast-forward", "fetch first", "stale info", "cannot lock ref", "[rejected]")
_TRANSIENT_MARKERS = ("could not resolve host", "connection", "timed out", "temporarily unavailable")


@dataclass(frozen=True)
class TrailedCommit:
    """A commit found by one of its trailers: when, by whom, its subject and every trailer."""

    sha: str
    at: datetime
    author: str
    subject: str
    trailers: dict[str, list[str]]


# --------------------------------------------------------------------------- errors


def translate(exc: Exception, action: str) -> DeliveryError:
    """Turn a gitpython/OS error into the product's hierarchy.

    Args:
        exc: the foreign exception.
        action: what was being done, for the message.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, GitCommandError):
        text = f"{exc.stderr or ''} {exc.stdout or ''}".strip().lower()
        detail = re.sub(r"^\s*std(err|out): '|'\s*$", "", (exc.stderr or exc.stdout or str(exc)).strip()).strip()
        if any(marker in text for marker in _CONFLICT_MARKERS):
            return ConflictError(f"{action}: another writer moved the branch first ({detail})")
        if any(marker in text for marker in _TRANSIENT_MARKERS):
            return TransientError(f"{action}: {detail}")
        if any(marker in text for marker in ("does not appear to be a git repository", "not found", "does not exist")):
            return NotFound(f"{action}: {detail}")
        return PermanentError(f"{action}: {detail}")
    if isinstance(exc, (NoSuchPathError, InvalidGitRepositoryError)):
        return NotFound(f"{action}: no git repository at {exc}")
    if isinstance(exc, OSError):
        return TransientError(f"{action}: {exc}")
    return PermanentError(f"{action}: {type(exc).__name__}: {exc}")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Context manager translating any foreign exception raised inside into :mod:`delivery.errors`.

    Args:
        action: what is being done, e.g. ``fetch <url>``; it starts the error message.
    """
    try:
        yield
    except DeliveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: everything foreign is translated
        raise translate(exc, action) from exc


# --------------------------------------------------------------------------- repositories and refs


def open_bare(repo_path: str | Path) -> Repo:
    """Open a local repository.

    Raises:
        NotFound: there is no repository at ``repo_path``.
    """
    path = Path(repo_path)
    if not path.exists():
        raise NotFound(f"no git repository at {path}")
    with translated(f"open repository {path}"):
        return Repo(path)


def resolve(repo_path: str | Path, ref: str) -> str | None:
    """Return the commit sha a branch, tag or sha names, or None when it names nothing."""
    repo = open_bare(repo_path)
    try:
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            try:
                return repo.commit(candidate).hexsha
            except (BadName, ValueError, GitCommandError):
                continue
        return None
    finally:
        repo.close()


def is_ancestor(repo_path: str | Path, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (true when they are the same commit).

    Raises:
        NotFound: either commit is not in the repository.
    """
    repo = open_bare(repo_path)
    try:
        first, second = (commit_at(repo, ref) for ref in (ancestor, descendant))
        with translated(f"compare {ancestor[:12]} with {descendant[:12]}"):
            return bool(repo.is_ancestor(first, second))
    finally:
        repo.close()


def commit_at(repo: Repo, ref: str) -> Commit:
    """The commit a branch, tag or sha names in an open repository.

    Raises:
        NotFound: ``ref`` names no commit.
    """
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        try:
            return repo.commit(candidate)
        except (BadName, ValueError, GitCommandError):
            continue
    raise NotFound(f"{repo.git_dir}: no branch, tag or commit {ref!r}")


# --------------------------------------------------------------------------- files


def read_file(repo_path: str | Path, path: str, *, ref: str) -> bytes | None:
    """Return a file's bytes at ``ref``, or None when the file is absent.

    Raises:
        NotFound: the repository or the ref does not exist.
    """
    repo = open_bare(repo_path)
    try:
        with translated(f"read {path} at {ref}"):
            tree = commit_at(repo, ref).tree
            try:
                obj = tree / path.strip("/")
            except KeyError:
                return None
            return obj.data_stream.read() if obj.type == "blob" else None
    finally:
        repo.close()


def read_tree(repo_path: str | Path, prefix: str, *, ref: str) -> dict[str, bytes]:
    """Return every file under ``prefix`` at ``ref`` as ``{repository path: bytes}``.

    An empty prefix reads the whole tree; a missing prefix gives an empty dict.
    """
    repo = open_bare(repo_path)
    try:
        with translated(f"read {prefix or '/'} at {ref}"):
            tree = commit_at(repo, ref).tree
            prefix = prefix.strip("/")
            if prefix:
                try:
                    tree = tree / prefix
                except KeyError:
                    return {}
                if tree.type != "tree":
                    return {}
            return {blob.path: blob.data_stream.read() for blob in tree.traverse() if blob.type == "blob"}
    finally:
        repo.close()


def changed_paths(repo_path: str | Path, *, base: str, head: str) -> list[str]:
    """Paths that differ between the merge base of ``base`` and ``head``, and ``head``."""
    repo = open_bare(repo_path)
    try:
        with translated(f"diff {base}...{head}"):
            out = repo.git.diff("--name-only", f"{commit_at(repo, base).hexsha}...{commit_at(repo, head).hexsha}")
            return [line for line in out.splitlines() if line]
    finally:
        repo.close()


# --------------------------------------------------------------------------- commits and their trailers


def commit_info(repo_path: str | Path, sha: str, *, repository: str, branch: str, created: bool) -> CommitInfo:
    """Describe a commit of a local repository as a :class:`CommitInfo`."""
    repo = open_bare(repo_path)
    try:
        commit = repo.commit(sha)
        return describe_commit(commit, repository=repository, branch=branch, created=created)
    finally:
        repo.close()


def describe_commit(commit: Commit, *, repository: str, branch: str, created: bool) -> CommitInfo:
    """Describe an open commit as a :class:`CommitInfo`, its trailers parsed."""
    return CommitInfo(
        repository=repository,
        branch=branch,
        sha=commit.hexsha,
        parent=commit.parents[0].hexsha if commit.parents else None,
        trailers=parse_trailers(message_text(commit.message)),
        created=created,
    )


def message_text(message: str | bytes) -> str:
    """A commit message as text (gitpython may hand bytes)."""
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def find_commit(
    repo_path: str | Path, *, branch: str, trailer: tuple[str, str], repository: str | None = None,
    max_count: int = 500,
) -> CommitInfo | None:
    """Find the newest commit on ``branch`` carrying ``trailer`` (key and value match exactly).

    Args:
        repo_path: the local repository.
        branch: the branch whose history is searched; a missing branch finds nothing.
        trailer: ``(key, value)``, e.g. ``("Release-Id", "rel-1")``.
        repository: the name to put in the result (default: the path).
        max_count: how many commits back to look.
    """
    key, value = trailer
    repo = open_bare(repo_path)
    try:
        with translated(f"search {branch} for {key}: {value}"):
            if f"refs/heads/{branch}" not in {ref.path for ref in repo.references}:
                return None
            for commit in repo.iter_commits(f"refs/heads/{branch}", max_count=max_count,
                                            grep=f"{key}: {value}", fixed_strings=True):
                if value in parse_trailers(message_text(commit.message)).get(key, []):
                    name = repository or str(repo_path)
                    return describe_commit(commit, repository=name, branch=branch, created=False)
        return None
    finally:
        repo.close()


def commits_with_trailer(repo_path: str | Path, key: str, value: str) -> list[TrailedCommit]:
    """Every commit of any branch of a local repository whose trailer ``key`` is ``value``, oldest first.

    An absent or empty repository has none (a release may not have reached it).
    """
    if not Path(repo_path).exists():
        return []
    repo = open_bare(repo_path)
    try:
        # --grep narrows in git (a fixed string); the trailer itself is checked below, exactly
        log = repo.git.log("--all", "--reverse", "--fixed-strings", f"--grep={key}: {value}",
                           "--format=%H%x1f%aI%x1f%an%x1f%B%x1e")
    except GitCommandError:
        return []
    finally:
        repo.close()
    found = []
    for record in filter(str.strip, log.split("\x1e")):
        sha, at, author, message = record.strip("\n").split("\x1f", 3)
        trailers = parse_trailers(message)
        if value in trailers.get(key, []):
            found.append(TrailedCommit(sha=sha, at=datetime.fromisoformat(at), author=author,
                                       subject=message.strip().splitlines()[0], trailers=trailers))
    return found
