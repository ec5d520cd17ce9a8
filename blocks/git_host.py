"""The ``GitHost`` block: repositories, branches, pull requests, checks and merges.

``LocalGitHost`` is the embedded default: bare repositories under ``root`` and pull requests kept
as JSON records beside them (``<repository>.prs/<number>.json``, written atomically). Its checks
are configured on the block: a branch policy, a declarative policy gate (forbidden paths, trailers
the head commit must carry) and commands run against the pull request's merge result in a
temporary checkout. Every foreign error is translated into :mod:`delivery.errors` here.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field

from blocks import git_repository, git_writes
from delivery import git_grammar
from delivery.errors import CheckFailed, ConflictError, InvalidInput, MergeConflict, NotFound, PermanentError
from delivery.models import CheckResult, CheckStatus, CommitInfo, MergeInfo, PullRequest, PullRequestStatus, utcnow
from delivery.provider_timing import timed_provider

_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LOG_LIMIT = 20_000


class CheckCommand(BaseModel):
    """A command run in a checkout of the pull request's merge result; exit code 0 passes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Shown in the check results, e.g. unit-tests")
    run: str = Field(min_length=1, description="Shell command, run with /bin/sh -c in the checkout root")
    timeout_seconds: float = Field(default=600, gt=0, description="The command fails after this many seconds")
    repositories: list[str] = Field(default_factory=list, description="Only these repositories; empty: all")


class GitHost(Block):
    """Where application repositories and their pull requests live."""

    _block_type_name = "Git Host"

    def ensure_repository(self, repository: str, *, default_branch: str = "main",
                          initial_files: Mapping[str, bytes] | None = None) -> None:
        raise NotImplementedError

    def clone_url(self, repository: str) -> str:
        raise NotImplementedError

    def clone_env(self) -> dict[str, str]:
        """What a git process needs in its environment to clone :meth:`clone_url` (credentials; never in the URL).

        A runner that clones on this machine (``LocalPipelineRunner``) adds it to its git's environment.
        """
        return {}

    def read_file(self, repository: str, path: str, *, ref: str) -> bytes | None:
        raise NotImplementedError

    def read_tree(self, repository: str, prefix: str, *, ref: str) -> dict[str, bytes]:
        raise NotImplementedError

    def resolve(self, repository: str, ref: str) -> str | None:
        raise NotImplementedError

    def is_ancestor(self, repository: str, ancestor: str, descendant: str) -> bool:
        """Whether commit ``ancestor`` is reachable from ``descendant`` (merge order on a branch)."""
        raise NotImplementedError

    def commit_files(self, repository: str, *, branch: str, files: Mapping[str, bytes | None], message: str,
                     trailers: Sequence[tuple[str, str]], base: str = "main",
                     author: str = git_writes.DEFAULT_AUTHOR) -> CommitInfo:
        raise NotImplementedError

    def find_commit(self, repository: str, *, branch: str, trailer: tuple[str, str]) -> CommitInfo | None:
        raise NotImplementedError

    def open_pull_request(self, repository: str, *, source: str, target: str, title: str,
                          description: str = "") -> PullRequest:
        raise NotImplementedError

    def get_pull_request(self, repository: str, number: int) -> PullRequest:
        raise NotImplementedError

    def run_checks(self, repository: str, number: int) -> PullRequest:
        raise NotImplementedError

    def merge_pull_request(self, repository: str, number: int, *, message: str,
                           trailers: Sequence[tuple[str, str]]) -> MergeInfo:
        raise NotImplementedError

    def comment_pull_request(self, repository: str, number: int, body: str) -> bool:
        """Comment on the pull request unless a comment with exactly ``body`` is there; True when posted."""
        raise NotImplementedError

    def pull_request_comments(self, repository: str, number: int) -> list[str]:
        """The pull request's comments' bodies, oldest first."""
        raise NotImplementedError


@timed_provider
class LocalGitHost(GitHost):
    """Bare repositories on disk (``<root>/<repository>.git``), pull requests as records.

    Attributes:
        root: the folder holding the bare repositories.
        protected_branch: the only branch pull requests may target.
        source_branch_patterns: globs a pull request's source branch must match.
        check_commands: commands run against the merge result.
        forbidden_paths: globs no pull request may change (e.g. ``.github/**``).
        required_trailers: trailers the pull request's head commit must carry.
    """

    _block_type_name = "Local Git Host"
    _block_type_slug = "local-git-host"
    _description = "Bare git repositories on local disk with pull requests kept as records (embedded default)."

    root: str = Field(description="Folder holding the bare repositories")
    protected_branch: str = Field(default="main", description="The only branch pull requests may target")
    source_branch_patterns: list[str] = Field(default_factory=lambda: ["release/*"],
                                              description="Globs a pull request's source branch must match")
    check_commands: list[CheckCommand] = Field(default_factory=list,
                                               description="Commands run against the merge result (PR checks)")
    forbidden_paths: list[str] = Field(default_factory=lambda: [".git/**", ".github/**"],
                                       description="Globs no pull request may change")
    required_trailers: list[str] = Field(default_factory=lambda: ["Release-Id", "Trace-Id"],
                                         description="Trailers the pull request's head commit must carry")

    # ------------------------------------------------------------------ repositories

    def _repo_path(self, repository: str, *, must_exist: bool = True) -> Path:
        if not _REPOSITORY.match(repository or "") or ".." in repository:
            raise InvalidInput(f"repository {repository!r} is not a valid repository name")
        path = Path(self.root) / f"{repository}.git"
        if must_exist and not (path / "HEAD").exists():
            raise NotFound(f"repository {repository!r} does not exist under {self.root}")
        return path

    def ensure_repository(self, repository: str, *, default_branch: str = "main",
                          initial_files: Mapping[str, bytes] | None = None) -> None:
        """Create the bare repository unless it exists, seeding ``default_branch`` with files."""
        git_writes.init_bare(self._repo_path(repository, must_exist=False), default_branch=default_branch,
                            initial_files=initial_files)

    def clone_url(self, repository: str) -> str:
        """The repository's path, which ``git clone`` accepts."""
        return str(self._repo_path(repository))

    def read_file(self, repository: str, path: str, *, ref: str) -> bytes | None:
        """Return a file at ``ref`` or None."""
        return git_repository.read_file(self._repo_path(repository), path, ref=ref)

    def read_tree(self, repository: str, prefix: str, *, ref: str) -> dict[str, bytes]:
        """Return the files under ``prefix`` at ``ref``."""
        return git_repository.read_tree(self._repo_path(repository), prefix, ref=ref)

    def resolve(self, repository: str, ref: str) -> str | None:
        """Return the sha ``ref`` names, or None."""
        return git_repository.resolve(self._repo_path(repository), ref)

    def is_ancestor(self, repository: str, ancestor: str, descendant: str) -> bool:
        """Whether commit ``ancestor`` is reachable from ``descendant``."""
        return git_repository.is_ancestor(self._repo_path(repository), ancestor, descendant)

    def commit_files(self, repository: str, *, branch: str, files: Mapping[str, bytes | None], message: str,
                     trailers: Sequence[tuple[str, str]], base: str = "main",
                     author: str = git_writes.DEFAULT_AUTHOR) -> CommitInfo:
        """Commit ``files`` to ``branch`` in one push attempt; see :func:`blocks.git_writes.commit_files`.

        Raises:
            ConflictError: another writer moved the branch first (retry).
        """
        return git_writes.commit_files(self._repo_path(repository), branch=branch, files=files, message=message,
                                      trailers=trailers, base=base, author=author, repository=repository)

    def find_commit(self, repository: str, *, branch: str, trailer: tuple[str, str]) -> CommitInfo | None:
        """Return the newest commit on ``branch`` with ``trailer``, or None."""
        return git_repository.find_commit(self._repo_path(repository), branch=branch, trailer=trailer,
                                     repository=repository)

    # ------------------------------------------------------------------ pull request records

    def _records(self, repository: str) -> Path:
        return self._repo_path(repository).with_suffix(".prs")

    @contextmanager
    def _locked(self, repository: str) -> Iterator[Path]:
        folder = self._records(repository)
        folder.mkdir(exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _all(self, folder: Path) -> list[PullRequest]:
        records = [PullRequest.model_validate_json(p.read_text()) for p in folder.glob("*.json")]
        return sorted(records, key=lambda pr: pr.number)

    def _save(self, folder: Path, pr: PullRequest) -> PullRequest:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{pr.number}-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(pr.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / f"{pr.number}.json")
        return pr

    def get_pull_request(self, repository: str, number: int) -> PullRequest:
        """Return a pull request record.

        Raises:
            NotFound: no such pull request.
        """
        path = self._records(repository) / f"{int(number)}.json"
        if not path.exists():
            raise NotFound(f"{repository}: no pull request #{number}")
        return PullRequest.model_validate_json(path.read_text())

    def open_pull_request(self, repository: str, *, source: str, target: str, title: str,
                          description: str = "") -> PullRequest:
        """Open a pull request, or return the one already open (or merged at this head) for ``source``.

        Raises:
            NotFound: the source or target branch does not exist.
        """
        git_grammar.check_branch(source)
        git_grammar.check_branch(target)
        head = self.resolve(repository, f"refs/heads/{source}")
        if head is None:
            raise NotFound(f"{repository}: source branch {source!r} does not exist")
        if self.resolve(repository, f"refs/heads/{target}") is None:
            raise NotFound(f"{repository}: target branch {target!r} does not exist")
        with self._locked(repository) as folder:
            existing = [pr for pr in self._all(folder) if pr.source_branch == source and pr.target_branch == target]
            for pr in existing:
                if pr.status is PullRequestStatus.OPEN:
                    if pr.head_sha != head:  # the branch moved: earlier checks no longer apply
                        pr = self._save(folder, pr.model_copy(update={"head_sha": head, "checks": []}))
                    return pr
                if pr.status is PullRequestStatus.MERGED and pr.head_sha == head:
                    return pr
            number = max((pr.number for pr in self._all(folder)), default=0) + 1
            pr = PullRequest(number=number, repository=repository, source_branch=source, target_branch=target,
                             title=title, description=description, head_sha=head,
                             url=f"file://{folder / f'{number}.json'}")
            return self._save(folder, pr)

    # ------------------------------------------------------------------ checks

    def run_checks(self, repository: str, number: int) -> PullRequest:
        """Run the branch policy, the policy gate and the commands; record and return the results.

        A merge conflict is recorded as a failed ``mergeable`` check. Commands run only when the
        pull request merges cleanly.

        Raises:
            ConflictError: the source branch moved while the checks were being prepared (retry).
            NotFound: the pull request or its source branch does not exist.
        """
        pr = self.get_pull_request(repository, number)
        if pr.status is not PullRequestStatus.OPEN:
            return pr
        head = self.resolve(repository, f"refs/heads/{pr.source_branch}")
        if head is None:
            raise NotFound(f"{repository}: source branch {pr.source_branch!r} of #{number} is gone")
        checks = [self._branch_policy(pr), self._policy_gate(repository, pr, head)]
        checks.extend(self._run_commands(repository, pr, head))
        with self._locked(repository) as folder:
            current = self.get_pull_request(repository, number)
            updated = current.model_copy(update={"checks": checks, "head_sha": head})
            return self._save(folder, updated)

    def _branch_policy(self, pr: PullRequest) -> CheckResult:
        problems = []
        if pr.target_branch != self.protected_branch:
            problems.append(f"target {pr.target_branch!r} is not the protected branch {self.protected_branch!r}")
        if not any(fnmatch.fnmatchcase(pr.source_branch, pattern) for pattern in self.source_branch_patterns):
            problems.append(f"source {pr.source_branch!r} matches none of {self.source_branch_patterns}")
        return _result("branch-policy", "branch_policy", problems, ok=f"{pr.source_branch} -> {pr.target_branch}")

    def _policy_gate(self, repository: str, pr: PullRequest, head: str) -> CheckResult:
        path = self._repo_path(repository)
        changed = git_repository.changed_paths(path, base=pr.target_branch, head=head)
        problems = [
            f"changes forbidden path {name} ({pattern})"
            for name in changed
            for pattern in self.forbidden_paths
            if fnmatch.fnmatchcase(name, pattern)
        ]
        info = git_repository.commit_info(path, head, repository=repository, branch=pr.source_branch, created=False)
        problems += [f"head commit lacks trailer {key}" for key in self.required_trailers if key not in info.trailers]
        return _result("policy-gate", "policy_gate", problems, ok=f"{len(changed)} changed paths allowed")

    def _run_commands(self, repository: str, pr: PullRequest, head: str) -> list[CheckResult]:
        commands = [c for c in self.check_commands if not c.repositories or repository in c.repositories]
        started = utcnow()
        try:
            with git_writes.merged_checkout(self.clone_url(repository), source=pr.source_branch,
                                           target=pr.target_branch) as work:
                if work.commit(f"refs/remotes/origin/{pr.source_branch}").hexsha != head:
                    raise ConflictError(f"{repository}#{pr.number}: {pr.source_branch} moved while being checked")
                results = [_run(command, Path(work.working_dir)) for command in commands]
        except MergeConflict as exc:
            return [CheckResult(name="mergeable", kind="branch_policy", status=CheckStatus.FAILED, summary=str(exc),
                                started_at=started, finished_at=utcnow())]
        mergeable = CheckResult(name="mergeable", kind="branch_policy", status=CheckStatus.PASSED,
                                summary=f"{pr.source_branch} merges cleanly into {pr.target_branch}",
                                started_at=started, finished_at=utcnow())
        return [mergeable, *results]

    # ------------------------------------------------------------------ merge

    def merge_pull_request(self, repository: str, number: int, *, message: str,
                           trailers: Sequence[tuple[str, str]]) -> MergeInfo:
        """Merge an open pull request whose checks passed on its current head, with a merge commit.

        Idempotent: a merged pull request returns its merge with ``created=False``.

        Raises:
            CheckFailed: checks have not run, failed, or ran on an older head.
            MergeConflict: the branches do not merge cleanly.
            ConflictError: the target moved during the merge (retry).
        """
        pr = self.get_pull_request(repository, number)
        if pr.status is PullRequestStatus.MERGED and pr.merge_sha:
            return MergeInfo(pull_request=number, merge_sha=pr.merge_sha, target_branch=pr.target_branch,
                             created=False)
        if pr.status is not PullRequestStatus.OPEN:
            raise PermanentError(f"{repository}#{number} is {pr.status.value}: it cannot be merged")
        if not pr.checks_passed:
            failed = [f"{c.name}: {c.summary}" for c in pr.checks if not c.passed] or ["checks have not run"]
            raise CheckFailed(f"{repository}#{number} cannot be merged: " + "; ".join(failed))
        head = self.resolve(repository, f"refs/heads/{pr.source_branch}")
        if head != pr.head_sha:
            raise CheckFailed(f"{repository}#{number}: {pr.source_branch} moved since its checks ran; run them again")
        result = git_writes.merge_branches(self.clone_url(repository), source=pr.source_branch,
                                          target=pr.target_branch, message=message, trailers=trailers,
                                          expected_source=pr.head_sha)
        with self._locked(repository) as folder:
            current = self.get_pull_request(repository, number)
            self._save(folder, current.model_copy(update={"status": PullRequestStatus.MERGED,
                                                          "merge_sha": result.sha}))
        return MergeInfo(pull_request=number, merge_sha=result.sha, target_branch=pr.target_branch,
                         created=result.created)


    # ------------------------------------------------------------------ comments

    def pull_request_comments(self, repository: str, number: int) -> list[str]:
        """The comments kept beside the record (``comments/<number>.json``), oldest first."""
        self.get_pull_request(repository, number)
        path = self._records(repository) / "comments" / f"{int(number)}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def comment_pull_request(self, repository: str, number: int, body: str) -> bool:
        """Keep a comment unless the same one is there (a stage run again comments once)."""
        with self._locked(repository) as folder:
            comments = self.pull_request_comments(repository, number)
            if body in comments:
                return False
            (folder / "comments").mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder / "comments", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump([*comments, body], handle)
            os.replace(tmp, folder / "comments" / f"{int(number)}.json")
            return True


def _result(name: str, kind: str, problems: list[str], *, ok: str) -> CheckResult:
    now = utcnow()
    return CheckResult(name=name, kind=kind, status=CheckStatus.FAILED if problems else CheckStatus.PASSED,
                       summary="; ".join(problems) if problems else ok, started_at=now, finished_at=now)


def _run(command: CheckCommand, workdir: Path) -> CheckResult:
    started = utcnow()
    try:
        proc = subprocess.run(["/bin/sh", "-c", command.run], cwd=workdir, capture_output=True, text=True,
                              timeout=command.timeout_seconds, check=False)
    except subprocess.TimeoutExpired as exc:
        log = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
        return CheckResult(name=command.name, status=CheckStatus.FAILED, log=log[-_LOG_LIMIT:],
                           summary=f"timed out after {command.timeout_seconds:g}s", started_at=started,
                           finished_at=utcnow())
    except OSError as exc:
        return CheckResult(name=command.name, status=CheckStatus.ERROR, summary=f"could not start: {exc}",
                           started_at=started, finished_at=utcnow())
    log = (proc.stdout + proc.stderr)[-_LOG_LIMIT:]
    status = CheckStatus.PASSED if proc.returncode == 0 else CheckStatus.FAILED
    return CheckResult(name=command.name, status=status, summary=f"exit code {proc.returncode}", log=log,
                       started_at=started, finished_at=utcnow())


__all__ = ["CheckCommand", "GitHost", "LocalGitHost"]
