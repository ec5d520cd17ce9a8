"""GitOpsRepo on a real bare repository: environment folders, idempotent writes, races, healthy tags."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from git import Repo

from blocks.gitops_repo import GitOpsRepo
from delivery.errors import InvalidInput, NotFound


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    block = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    assert block.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
    return block


TRAILERS = [("Release-Id", "rel-1"), ("Trace-Id", "t" * 32)]


def test_write_environment_commits_the_folder_with_trailers_and_reads_it_back(repo: GitOpsRepo) -> None:
    commit = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n", "b.yaml": b"b: 1\n"},
                                    message="Promote web", trailers=TRAILERS)
    assert commit.created and commit.trailers == {"Release-Id": ["rel-1"], "Trace-Id": ["t" * 32]}
    assert repo.head() == commit.sha
    assert repo.read_environment("dev", "web") == {"a.yaml": b"a: 1\n", "b.yaml": b"b: 1\n"}
    assert repo.read_environment("staging", "web") == {}
    assert repo.read_config() == b"path: [dev]\n"
    message = Repo(repo.url).commit(commit.sha).message
    assert message.startswith("Promote web") and "Release-Id: rel-1" in message


def test_writing_content_git_already_holds_commits_nothing(repo: GitOpsRepo) -> None:
    first = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="m", trailers=TRAILERS)
    again = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="m", trailers=TRAILERS)
    assert not again.created and again.sha == first.sha == repo.head()


def test_the_folder_holds_exactly_the_files_written_and_old_revisions_stay_readable(repo: GitOpsRepo) -> None:
    first = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n", "b.yaml": b"b: 1\n"}, message="m",
                                   trailers=TRAILERS)
    repo.write_environment("dev", "other", {"x.yaml": b"x\n"}, message="m", trailers=TRAILERS)
    repo.write_environment("dev", "web", {"a.yaml": b"a: 2\n"}, message="m", trailers=TRAILERS)
    assert repo.read_environment("dev", "web") == {"a.yaml": b"a: 2\n"}
    assert repo.read_environment("dev", "other") == {"x.yaml": b"x\n"}
    assert repo.read_environment("dev", "web", ref=first.sha) == {"a.yaml": b"a: 1\n", "b.yaml": b"b: 1\n"}


@pytest.mark.parametrize("direct_writes", [True, False], ids=["in-place", "clone-and-push"])
def test_concurrent_writers_are_rebased_and_all_land(repo: GitOpsRepo, direct_writes: bool) -> None:
    repo = repo.model_copy(update={"direct_writes": direct_writes})
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            repo.write_environment("dev", f"app{index}", {"x.yaml": f"i: {index}\n".encode()},
                                   message=f"w{index}", trailers=TRAILERS)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [repo.read_environment("dev", f"app{i}") for i in range(5)] == [{"x.yaml": f"i: {i}\n".encode()}
                                                                          for i in range(5)]


def test_healthy_tag_moves_and_is_read_back(repo: GitOpsRepo) -> None:
    assert repo.healthy_revision("dev", "web") is None
    first = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="m", trailers=TRAILERS)
    repo.tag_healthy("dev", "web", first.sha)
    second = repo.write_environment("dev", "web", {"a.yaml": b"a: 2\n"}, message="m", trailers=TRAILERS)
    assert repo.healthy_revision("dev", "web") == first.sha
    repo.tag_healthy("dev", "web", second.sha)
    assert repo.healthy_revision("dev", "web") == second.sha
    assert "healthy/dev/web" in {tag.name for tag in Repo(repo.url).tags}
    with pytest.raises(NotFound):
        repo.tag_healthy("dev", "web", "0" * 40)


def test_an_empty_repository_reads_as_empty(tmp_path: Path) -> None:
    block = GitOpsRepo(url=str(tmp_path / "empty.git"))
    block.ensure_exists()
    assert block.read_environment("dev", "web") == {}
    assert block.read_config() is None
    with pytest.raises(NotFound):
        block.head()


@pytest.mark.parametrize(
    ("environment", "app", "files", "message"),
    [
        ("Dev", "web", {"a.yaml": b""}, "environment"),
        ("dev", "../web", {"a.yaml": b""}, "app"),
        ("dev", "web", {"../a.yaml": b""}, "file name"),
        ("dev", "web", {"/a.yaml": b""}, "file name"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(repo: GitOpsRepo, environment: str, app: str,
                                                          files: dict, message: str) -> None:
    head = repo.head()
    with pytest.raises(InvalidInput, match=message):
        repo.write_environment(environment, app, files, message="m", trailers=TRAILERS)
    assert repo.head() == head


def test_a_missing_repository_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        GitOpsRepo(url=str(tmp_path / "absent.git")).write_environment(
            "dev", "web", {"a.yaml": b""}, message="m", trailers=TRAILERS)


def test_a_write_that_lost_a_race_is_rebased_onto_the_new_head(repo: GitOpsRepo, monkeypatch) -> None:
    """Another writer pushes between our read and our ref update: we re-read the head and retry."""
    from blocks import git_writes

    other = repo.model_copy(update={"direct_writes": False})
    real_write_tree = git_writes.write_tree
    theirs: list = []
    raced: list[bool] = []

    def push_first(*args, **kwargs):
        if not raced:
            raced.append(True)
            theirs.append(other.write_environment("dev", "other", {"x.yaml": b"x\n"}, message="theirs",
                                                  trailers=TRAILERS))
        return real_write_tree(*args, **kwargs)

    monkeypatch.setattr(git_writes, "write_tree", push_first)
    ours = repo.write_environment("dev", "web", {"a.yaml": b"a: 1\n"}, message="ours", trailers=TRAILERS)
    monkeypatch.undo()
    assert ours.created and ours.parent == theirs[0].sha == Repo(repo.url).commit(ours.sha).parents[0].hexsha
    assert repo.read_environment("dev", "other") == {"x.yaml": b"x\n"}
    assert repo.read_environment("dev", "web") == {"a.yaml": b"a: 1\n"}
