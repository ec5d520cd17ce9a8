"""Plain git operations over bare repositories, shared by every block that writes to git.

Writes go through a temporary clone and a push without force, so a concurrent writer makes the
push fail instead of being overwritten: the rejected non-fast-forward push becomes
:class:`~delivery.errors.ConflictError` (retryable). Reads open the bare repository directly.

``url`` arguments accept anything ``git clone`` accepts (a local bare repository path included);
``repo_path`` arguments must be a local repository.
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
from git.exc import BadName, GitCommandError, InvalidGitRepositoryError, NoSuchPathError
from git.index.typ import BaseIndexEntry, IndexEntry
from git.objects import Commit
from gitdb.base import IStream

from delivery.errors import (
    ConflictError,
    DeliveryError,
    InvalidInput,
    MergeConflict,
    NotFound,
    PermanentError,
    TransientError,
)
from delivery.models import CommitInfo

DEFAULT_AUTHOR = "gitops-delivery <delivery@localhost>"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*): (.*)$")
_BRANCH_BAD = re.compile(r"(^[./-])|(\.\.)|([\s~^:?*\[\\])|(@\{)|(/\.)|(//)|(\.lock$)|([./]$)")
_CONFLICT_MARKERS = ("non-fast-forward", "fetch first", "stale info", "cannot lock ref", "[rejected]")
_TRANSIENT_MARKERS = ("could not resolve host", "connection", "timed out", "temporarily unavailable")


@dataclass(frozen=True)
class MergeResult:
    """The outcome of :func:`merge_branches`."""

    sha: str
    created: bool


# --------------------------------------------------------------------------- names, messages


def check_branch(name: str) -> str:
    """Validate a branch name the way ``git check-ref-format --branch`` would, without a process.

    Raises:
        InvalidInput: the name cannot be a branch.
    """
    if not name or len(name) > 200 or _BRANCH_BAD.search(name) or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"branch {name!r} is not a valid git branch name")
    return name


def format_message(message: str, trailers: Sequence[tuple[str, str]]) -> str:
    """Return ``message`` with a trailer block (``Key: value`` lines) appended.

    Raises:
        InvalidInput: a trailer key or value would break the trailer block.
    """
    lines = []
    for key, value in trailers:
        if not _TRAILER_LINE.match(f"{key}: x") or "\n" in str(value) or not str(value).strip():
            raise InvalidInput(f"trailer {key!r}: {value!r} is not a valid one-line trailer")
        lines.append(f"{key}: {value}")
    body = message.strip()
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else body + "\n"


def parse_trailers(message: str) -> dict[str, list[str]]:
    """Read the trailers of a commit message: the ``Key: value`` lines of its last paragraph."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    trailers: dict[str, list[str]] = {}
    for line in paragraphs[-1].splitlines():
        match = _TRAILER_LINE.match(line.strip())
        if not match:
            return {}
        trailers.setdefault(match.group(1), []).append(match.group(2).strip())
    return trailers


def _actor(identity: str) -> Actor:
    match = re.match(r"^\s*(.+?)\s*<([^<>]+)>\s*$", identity)
    if not match:
        raise InvalidInput(f"author {identity!r} must look like 'Name <email>'")
    return Actor(match.group(1), match.group(2))


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


_translated = translated  # the original private name, still used by callers


# --------------------------------------------------------------------------- repositories


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
    with _translated(f"create repository {path}"):
        if (path / "HEAD").exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = Repo.init(path, bare=True, initial_branch=default_branch)
        repo.close()
    if initial_files:
        commit_files(path, branch=default_branch, files=initial_files, message=message, trailers=(),
                     base=default_branch, author=author)
    return True


def open_bare(repo_path: str | Path) -> Repo:
    """Open a local repository.

    Raises:
        NotFound: there is no repository at ``repo_path``.
    """
    path = Path(repo_path)
    if not path.exists():
        raise NotFound(f"no git repository at {path}")
    with _translated(f"open repository {path}"):
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
        first, second = (_commit_at(repo, ref) for ref in (ancestor, descendant))
        with translated(f"compare {ancestor[:12]} with {descendant[:12]}"):
            return bool(repo.is_ancestor(first, second))
    finally:
        repo.close()


def _commit_at(repo: Repo, ref: str) -> Commit:
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        try:
            return repo.commit(candidate)
        except (BadName, ValueError, GitCommandError):
            continue
    raise NotFound(f"{repo.git_dir}: no branch, tag or commit {ref!r}")


def read_file(repo_path: str | Path, path: str, *, ref: str) -> bytes | None:
    """Return a file's bytes at ``ref``, or None when the file is absent.

    Raises:
        NotFound: the repository or the ref does not exist.
    """
    repo = open_bare(repo_path)
    try:
        with _translated(f"read {path} at {ref}"):
            tree = _commit_at(repo, ref).tree
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
        with _translated(f"read {prefix or '/'} at {ref}"):
            tree = _commit_at(repo, ref).tree
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


def commit_info(repo_path: str | Path, sha: str, *, repository: str, branch: str, created: bool) -> CommitInfo:
    """Describe a commit of a local repository as a :class:`CommitInfo`."""
    repo = open_bare(repo_path)
    try:
        commit = repo.commit(sha)
        return _info(commit, repository=repository, branch=branch, created=created)
    finally:
        repo.close()


def _info(commit: Commit, *, repository: str, branch: str, created: bool) -> CommitInfo:
    return CommitInfo(
        repository=repository,
        branch=branch,
        sha=commit.hexsha,
        parent=commit.parents[0].hexsha if commit.parents else None,
        trailers=parse_trailers(_text(commit.message)),
        created=created,
    )


def _text(message: str | bytes) -> str:
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
        with _translated(f"search {branch} for {key}: {value}"):
            if f"refs/heads/{branch}" not in {ref.path for ref in repo.references}:
                return None
            for commit in repo.iter_commits(f"refs/heads/{branch}", max_count=max_count,
                                            grep=f"{key}: {value}", fixed_strings=True):
                if value in parse_trailers(_text(commit.message)).get(key, []):
                    return _info(commit, repository=repository or str(repo_path), branch=branch, created=False)
        return None
    finally:
        repo.close()


# --------------------------------------------------------------------------- writing


@contextmanager
def _clone(url: str | Path) -> Iterator[Repo]:
    with tempfile.TemporaryDirectory(prefix="delivery-git-") as tmp:
        with _translated(f"clone {url}"):
            repo = Repo.clone_from(str(url), os.path.join(tmp, "work"), no_checkout=True)
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
    with _translated(f"push {branch}"):
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
    paths = {_check_path(path): data for path, data in files.items()}
    full_message = format_message(message, trailers)
    actor = _actor(author)
    name = repository or str(url)
    with _clone(url) as repo, _translated(f"commit to {branch}"):
        parent = _remote_head(repo, branch)
        if parent is None and base != branch:
            parent = _base_commit(repo, base)
            if parent is None and (_SHA.fullmatch(base) or any(r.name.startswith("origin/")
                                                               for r in repo.remote().refs)):
                raise NotFound(f"{url}: base {base!r} does not exist")
        branch_exists = _remote_head(repo, branch) is not None
        tree_sha = _write_tree(repo, parent, paths)
        if branch_exists and parent is not None and parent.tree.hexsha == tree_sha:
            return _info(parent, repository=name, branch=branch, created=False)
        commit = Commit.create_from_tree(
            repo, repo.tree(tree_sha), full_message, parent_commits=[parent] if parent else [],
            head=False, author=actor, committer=actor,
        )
        push(repo, commit.hexsha, branch)
        return _info(commit, repository=name, branch=branch, created=True)


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or p.casefold() == ".git" for p in parts):
        raise InvalidInput(f"path {path!r} is not a relative path inside the repository")
    return path


def _write_tree(repo: Repo, parent: Commit | None, files: Mapping[str, bytes | None]) -> str:
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
        with _translated(f"clone {url}"):
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
    actor = _actor(author)
    with merged_checkout(url, source=source, target=target) as repo, _translated(f"merge {source} into {target}"):
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


def changed_paths(repo_path: str | Path, *, base: str, head: str) -> list[str]:
    """Paths that differ between the merge base of ``base`` and ``head``, and ``head``."""
    repo = open_bare(repo_path)
    try:
        with _translated(f"diff {base}...{head}"):
            out = repo.git.diff("--name-only", f"{_commit_at(repo, base).hexsha}...{_commit_at(repo, head).hexsha}")
            return [line for line in out.splitlines() if line]
    finally:
        repo.close()
