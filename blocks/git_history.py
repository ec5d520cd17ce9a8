"""Reading a local repository's history: the commits a release left, found by their trailers.

The product writes ``Release-Id`` and ``Trace-Id`` trailers on every commit it makes, in the
application repositories and in the GitOps repository, so Git alone tells a release's story.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from git.exc import GitCommandError

from blocks.git_local import open_bare, parse_trailers


@dataclass(frozen=True)
class TrailedCommit:
    """A commit found by one of its trailers: when, by whom, its subject and every trailer."""

    sha: str
    at: datetime
    author: str
    subject: str
    trailers: dict[str, list[str]]


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


__all__ = ["TrailedCommit", "commits_with_trailer"]
