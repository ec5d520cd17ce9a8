"""The GitOps repository: desired state per environment, ``delivery.yaml``, and healthy tags.

Layout: ``delivery.yaml`` at the root, ``environments/<env>/<app>/`` with one YAML file per
Kubernetes object, and the tag ``healthy/<env>/<app>`` on the last revision that passed its health
gates (the rollback target). Writes go through :mod:`blocks.git_writes` (temporary clone, push
without force); a push that loses a race is rebased onto the new head and tried again.
"""

from __future__ import annotations

import fcntl
import hashlib
import random
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from git import GitDB, Repo
from git.exc import GitCommandError
from git.objects import Commit
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from blocks import git_repository, git_writes
from blocks.remote_git import check_url, git_call, git_env
from delivery import git_grammar
from delivery.errors import ConflictError, InvalidInput, NotFound
from delivery.identity import ALLOWED_SIGNERS, REVOKED_KEYS
from delivery.models import CommitInfo
from delivery.provider_timing import timed_provider
from delivery.settings import state_dir

CONFIG_FILE = "delivery.yaml"
# The identity registry (delivery/identity.py reads the format): who may sign, and which keys are revoked.
IDENTITY_FILES = (ALLOWED_SIGNERS, REVOKED_KEYS)
_SEGMENT = r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$"


def environment_prefix(environment: str, app: str) -> str:
    """The folder of an application's desired state in an environment."""
    for field, value in (("environment", environment), ("app", app)):
        if not re.match(_SEGMENT, value or ""):
            raise InvalidInput(f"{field} {value!r} is not a valid name (lowercase letters, digits, '-')")
    return f"environments/{environment}/{app}"


def healthy_tag(environment: str, app: str) -> str:
    """The tag naming the last healthy revision of an application in an environment."""
    environment_prefix(environment, app)
    return f"healthy/{environment}/{app}"


def _is_commit(repo: Repo, sha: str) -> bool:
    try:
        return repo.git.cat_file("-t", sha).strip() == "commit"
    except GitCommandError:
        return False


@timed_provider
class GitOpsRepo(Block):
    """A GitOps repository (a bare repository on disk, or any git URL mirrored locally)."""

    _block_type_name = "GitOps Repo"
    _block_type_slug = "gitops-repo"
    _description = "Desired state per environment, delivery.yaml and healthy tags, in one git repository."

    url: str = Field(description="A local bare repository path, or any git URL")
    branch: str = Field(default="main", description="The branch that holds the desired state")
    author: str = Field(default=git_writes.DEFAULT_AUTHOR, description="Name <email> of the commits")
    push_attempts: int = Field(default=5, ge=1, description="Rebase-and-retry attempts when a push loses a race")
    token: SecretStr | None = Field(
        default=None, description="Token for a remote over HTTPS; sent as a Basic Authorization header through "
        "git's environment, never in the URL or a git config")
    username: str = Field(default="x-access-token", description="User name sent with the token (GitHub: "
                          "x-access-token; Azure Repos: any, e.g. empty)")
    direct_writes: bool = Field(
        default=True,
        description="For a local bare repository, commit in place with a compare-and-swap ref update instead of "
        "clone + push (same race semantics, several times faster; server-side hooks do not run)",
    )

    @model_validator(mode="after")
    def _credentials_over_https(self) -> GitOpsRepo:
        if self.token is not None:  # a token goes only to an https:// remote (http:// to a loopback one)
            check_url(self.url, "url")
        elif "://" in self.url and "@" in self.url.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("url must not carry credentials; give them as token (and username)")
        return self

    def _env(self) -> dict[str, str] | None:
        """Git's environment for the remote: the credentials, when a token is configured."""
        return git_env(self.username, self.token) if self.token is not None else None

    def _is_remote_http(self) -> bool:
        return self.url.startswith(("https://", "http://"))

    # ------------------------------------------------------------------ local access

    def _is_local(self) -> bool:
        return Path(self._path_of_url()).is_dir()

    def _path_of_url(self) -> str:
        return self.url[len("file://"):] if self.url.startswith("file://") else self.url

    def local_copy(self) -> str:
        """A local repository to read from: the bare repository itself, or a refreshed mirror."""
        if self._is_local():
            return self._path_of_url()
        mirror = state_dir() / "gitops-mirrors" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        git_writes.init_bare(mirror, default_branch=self.branch)
        repo = git_repository.open_bare(mirror)
        try:
            if self._env():
                repo.git.update_environment(**self._env())
            with git_call(f"fetch {self.url}"):
                repo.git.fetch("--prune", "--force", self.url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
        finally:
            repo.close()
        return str(mirror)

    def ensure_exists(self, *, initial_files: Mapping[str, bytes] | None = None) -> bool:
        """Create the bare repository when the URL is a local path that holds none yet.

        Args:
            initial_files: files of the first commit (for example ``delivery.yaml``).

        A remote over HTTP(S) is not created: its still empty branch is seeded with ``initial_files``.

        Returns:
            True when created (or seeded).
        """
        if self._is_remote_http():
            if not initial_files or self.resolve(self.branch) is not None:
                return False
            return self.write_files(initial_files, message="Initialise the GitOps repository", trailers=()).created
        return git_writes.init_bare(
            self._path_of_url(), default_branch=self.branch, initial_files=initial_files, author=self.author,
            message="Initialise the GitOps repository",
        )

    # ------------------------------------------------------------------ reading

    def head(self) -> str:
        """The sha at the tip of the branch.

        Raises:
            NotFound: the branch has no commit yet.
        """
        sha = git_repository.resolve(self.local_copy(), self.branch)
        if sha is None:
            raise NotFound(f"{self.url}: branch {self.branch!r} has no commit yet")
        return sha

    def resolve(self, ref: str) -> str | None:
        """The sha a branch, tag or sha names, or None."""
        return git_repository.resolve(self.local_copy(), ref)

    def read_config(self, *, ref: str = "main") -> bytes | None:
        """``delivery.yaml`` at ``ref``, or None when absent (or the branch is still empty)."""
        local = self.local_copy()
        if git_repository.resolve(local, ref) is None:
            return None
        return git_repository.read_file(local, CONFIG_FILE, ref=ref)

    def read_identities(self, *, ref: str = "main") -> tuple[str, str]:
        """The identity registry at ``ref``: ``identities/allowed_signers`` and ``identities/revoked_keys``.

        Returns:
            Both files as text; an absent file (or a still-empty branch) reads as empty.
        """
        local = self.local_copy()
        if git_repository.resolve(local, ref) is None:
            return "", ""
        files = (git_repository.read_file(local, path, ref=ref) for path in IDENTITY_FILES)
        allowed, revoked = (data.decode() if data else "" for data in files)
        return allowed, revoked

    def read_environment(self, environment: str, app: str, *, ref: str = "main") -> dict[str, bytes]:
        """The files of ``environments/<env>/<app>/`` at ``ref``, by name relative to that folder.

        An empty branch or a missing folder gives an empty dict.

        Raises:
            NotFound: ``ref`` names nothing (and is not the still-empty branch).
        """
        prefix = environment_prefix(environment, app)
        local = self.local_copy()
        if git_repository.resolve(local, ref) is None:
            if ref == self.branch:
                return {}
            raise NotFound(f"{self.url}: no branch, tag or commit {ref!r}")
        tree = git_repository.read_tree(local, prefix, ref=ref)
        return {path[len(prefix) + 1:]: data for path, data in sorted(tree.items())}

    # ------------------------------------------------------------------ writing

    def write_files(
        self, files: Mapping[str, bytes | None], *, message: str, trailers: Sequence[tuple[str, str]]
    ) -> CommitInfo:
        """Commit repository files (None deletes) to the branch; idempotent, rebased on a lost race."""
        return self._commit_with_retry(lambda: dict(files), message=message, trailers=trailers)

    def write_environment(
        self,
        environment: str,
        app: str,
        files: Mapping[str, bytes],
        *,
        message: str,
        trailers: Sequence[tuple[str, str]],
    ) -> CommitInfo:
        """Make ``environments/<env>/<app>/`` hold exactly ``files`` (others there are deleted).

        Args:
            environment: the environment.
            app: the application.
            files: name relative to the folder -> bytes.
            message: the commit message.
            trailers: ``Release-Id``, ``Trace-Id`` and the others that apply.

        Returns:
            The commit, ``created=False`` when Git already held exactly this content.

        Raises:
            ConflictError: the push kept losing races after ``push_attempts`` rebases.
            InvalidInput: a bad name, path or trailer.
        """
        prefix = environment_prefix(environment, app)
        for name in files:
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise InvalidInput(f"file name {name!r} must be relative to {prefix}/")

        def changes() -> dict[str, bytes | None]:
            current = self.read_environment(environment, app, ref=self.branch)
            delta: dict[str, bytes | None] = {f"{prefix}/{name}": None for name in current if name not in files}
            delta.update({f"{prefix}/{name}": bytes(data) for name, data in files.items()})
            return delta

        return self._commit_with_retry(changes, message=message, trailers=trailers)

    def _commit_with_retry(self, changes, *, message: str, trailers: Sequence[tuple[str, str]]) -> CommitInfo:
        last: ConflictError | None = None
        direct = self.direct_writes and self._is_local()
        for attempt in range(self.push_attempts):
            try:
                if direct:
                    return self._commit_in_place(changes(), message=message, trailers=trailers)
                with git_call(f"push {self.branch} to {self.url}"):
                    return git_writes.commit_files(
                        self.url, branch=self.branch, files=changes(), message=message, trailers=trailers,
                        base=self.branch, author=self.author, repository=self.url, env=self._env(),
                    )
            except ConflictError as exc:  # another writer moved the branch: rebase onto it and retry
                last = exc
                time.sleep(min(0.05 * 2**attempt, 1.0) * random.uniform(0.5, 1.5))
        raise ConflictError(f"{self.url}: push lost {self.push_attempts} races in a row: {last}")

    def _commit_in_place(
        self, files: Mapping[str, bytes | None], *, message: str, trailers: Sequence[tuple[str, str]]
    ) -> CommitInfo:
        """Commit into the local bare repository; the branch moves only if nobody moved it meanwhile."""
        git_grammar.check_branch(self.branch)
        paths = {git_grammar.check_path(path): data for path, data in files.items()}
        full_message = git_grammar.format_message(message, trailers)
        actor = git_writes.actor_of(self.author)
        git_repository.open_bare(self._path_of_url()).close()  # NotFound when there is no repository
        # GitDB writes blobs in-process (1,000 files: ~1 s); the default object database starts one
        # git process per blob (~8 s). It is deprecated for reading packs, which this write does not do.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            repo = Repo(self._path_of_url(), odbt=GitDB)
        lock = open(Path(repo.git_dir) / "delivery-write.lock", "w")  # noqa: SIM115 - held for the block below
        try:
            # Building the tree swaps the repository's index file: one in-place writer at a time.
            fcntl.flock(lock, fcntl.LOCK_EX)
            with git_repository.translated(f"commit to {self.branch}"):
                parent_sha = git_repository.resolve(self._path_of_url(), self.branch)
                parent = repo.commit(parent_sha) if parent_sha else None
                tree_sha = git_writes.write_tree(repo, parent, paths)
                if parent is not None and parent.tree.hexsha == tree_sha:
                    return git_repository.describe_commit(parent, repository=self.url, branch=self.branch,
                                                          created=False)
                commit = Commit.create_from_tree(
                    repo, repo.tree(tree_sha), full_message, parent_commits=[parent] if parent else [],
                    head=False, author=actor, committer=actor,
                )
                # Compare-and-swap: fails with "cannot lock ref" (a ConflictError) if the branch moved.
                repo.git.update_ref(f"refs/heads/{self.branch}", commit.hexsha, parent_sha or "0" * 40)
                return git_repository.describe_commit(commit, repository=self.url, branch=self.branch, created=True)
        finally:
            lock.close()
            repo.close()

    # ------------------------------------------------------------------ healthy tags

    def tag_healthy(self, environment: str, app: str, revision: str) -> None:
        """Move ``healthy/<env>/<app>`` to ``revision``.

        Raises:
            NotFound: ``revision`` is not a commit of the repository.
        """
        tag = healthy_tag(environment, app)
        local = self.local_copy()
        sha = git_repository.resolve(local, revision)
        if sha is None:
            raise NotFound(f"{self.url}: no commit {revision!r} to tag {tag}")
        repo: Repo = git_repository.open_bare(local)
        try:
            if not _is_commit(repo, sha):
                raise NotFound(f"{self.url}: no commit {revision!r} to tag {tag}")
            if self._env():
                repo.git.update_environment(**self._env())
            with git_call(f"tag {tag}"):
                if self._is_local():
                    repo.git.update_ref(f"refs/tags/{tag}", sha)
                else:
                    repo.git.push("--force", self.url, f"{sha}:refs/tags/{tag}")
        finally:
            repo.close()

    def healthy_revision(self, environment: str, app: str) -> str | None:
        """The revision tagged ``healthy/<env>/<app>``, or None when none passed yet."""
        tag = healthy_tag(environment, app)
        local = self.local_copy()
        repo = git_repository.open_bare(local)
        try:
            if f"refs/tags/{tag}" not in {ref.path for ref in repo.tags}:
                return None
        finally:
            repo.close()
        return git_repository.resolve(local, f"refs/tags/{tag}")
