"""The git library (blocks.git_repository, blocks.git_writes, delivery.git_grammar) on real bare repositories."""

from __future__ import annotations

import pytest
from git import Repo

from blocks import git_repository, git_writes
from delivery import git_grammar
from delivery.errors import ConflictError, InvalidInput, MergeConflict, NotFound, PermanentError, TransientError


@pytest.fixture
def bare(tmp_path):
    path = tmp_path / "repo.git"
    assert git_writes.init_bare(path, initial_files={"a.txt": b"a\n", "dir/b.txt": b"b\n"})
    return path


def test_init_bare_is_idempotent_and_seeds_the_default_branch(bare):
    head = git_repository.resolve(bare, "main")
    assert not git_writes.init_bare(bare, initial_files={"other": b"x"})
    assert git_repository.resolve(bare, "main") == head
    assert git_repository.read_tree(bare, "", ref="main") == {"a.txt": b"a\n", "dir/b.txt": b"b\n"}
    assert git_repository.read_tree(bare, "dir", ref="main") == {"dir/b.txt": b"b\n"}
    assert git_repository.read_tree(bare, "missing", ref="main") == {}
    assert git_repository.read_file(bare, "dir", ref="main") is None
    assert git_repository.resolve(bare, "nope") is None


def test_an_empty_repository_takes_a_first_commit(tmp_path):
    path = tmp_path / "empty.git"
    git_writes.init_bare(path)
    commit = git_writes.commit_files(path, branch="main", files={"x": b"1"}, message="first", trailers=())
    assert commit.created and commit.parent is None
    assert git_repository.read_file(path, "x", ref="main") == b"1"


def test_trailers_round_trip_and_find_commit_picks_the_newest(bare):
    for n in (1, 2):
        git_writes.commit_files(bare, branch="feature", files={"n": str(n).encode()}, message=f"change {n}",
                               trailers=[("Release-Id", "rel-1"), ("Artifact-Id", f"a{n}"), ("Artifact-Id", "z")])
    found = git_repository.find_commit(bare, branch="feature", trailer=("Artifact-Id", "z"))
    assert found.trailers == {"Release-Id": ["rel-1"], "Artifact-Id": ["a2", "z"]}
    assert found.sha == git_repository.resolve(bare, "feature")
    assert git_repository.find_commit(bare, branch="feature", trailer=("Artifact-Id", "a1")).sha == found.parent
    # A value mentioned in the body is not a trailer.
    git_writes.commit_files(bare, branch="feature", files={"n": b"3"}, message="mentions Release-Id: rel-9 inline",
                           trailers=())
    assert git_repository.find_commit(bare, branch="feature", trailer=("Release-Id", "rel-9")) is None


def test_a_branch_can_start_at_a_commit_sha_with_a_commit_of_no_file_changes(bare):
    feature = git_writes.commit_files(bare, branch="feature", files={"a.txt": b"changed\n"}, message="change",
                                     trailers=())
    git_writes.commit_files(bare, branch="feature", files={"a.txt": b"later\n"}, message="later", trailers=())
    release = git_writes.commit_files(bare, branch="release/rel-1", files={}, message="release",
                                     trailers=[("Release-Id", "rel-1")], base=feature.sha)
    assert release.created and release.parent == feature.sha and release.trailers == {"Release-Id": ["rel-1"]}
    assert git_repository.read_file(bare, "a.txt", ref="release/rel-1") == b"changed\n"  # the sha's tree, not the tip's
    with pytest.raises(NotFound, match="does not exist"):
        git_writes.commit_files(bare, branch="release/rel-2", files={}, message="x", trailers=(), base="f" * 40)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("subject\n\nbody\n\nKey: v\nOther-Key: w x\n", {"Key": ["v"], "Other-Key": ["w x"]}),
        ("subject only\n", {}),
        ("subject\n\nnot: a trailer block\nbecause this line is prose\n", {}),
    ],
)
def test_parse_trailers(message, expected):
    assert git_grammar.parse_trailers(message) == expected


@pytest.mark.parametrize("name", ["", "a..b", "-x", "x/", "x.lock", "a b", "a:b", "a~1", "a^", "a?", "a@{1}", "/x"])
def test_invalid_branch_names_are_refused(name):
    with pytest.raises(InvalidInput, match="not a valid git branch name"):
        git_grammar.check_branch(name)


def test_valid_branch_names_pass():
    for name in ("main", "release/rel-1", "release/rel_2.3", "feature/a-b"):
        assert git_grammar.check_branch(name) == name


def test_merge_branches_makes_a_no_ff_merge_once(bare):
    feature = git_writes.commit_files(bare, branch="feature", files={"c.txt": b"c"}, message="c", trailers=())
    main_before = git_repository.resolve(bare, "main")
    assert git_repository.changed_paths(bare, base="main", head="feature") == ["c.txt"]
    first = git_writes.merge_branches(bare, source="feature", target="main", message="merge",
                                     trailers=[("Release-Id", "rel-1")], expected_source=feature.sha)
    second = git_writes.merge_branches(bare, source="feature", target="main", message="merge", trailers=())
    assert first.created and not second.created and second.sha == first.sha
    with Repo(bare) as repo:
        assert [p.hexsha for p in repo.commit(first.sha).parents] == [main_before, feature.sha]


def test_merge_refuses_a_moved_source_and_conflicts(bare):
    git_writes.commit_files(bare, branch="x", files={"a.txt": b"x\n"}, message="x", trailers=())
    git_writes.commit_files(bare, branch="y", files={"a.txt": b"y\n"}, message="y", trailers=())
    with pytest.raises(PermanentError, match="moved"):
        git_writes.merge_branches(bare, source="x", target="main", message="m", trailers=(), expected_source="0" * 40)
    git_writes.merge_branches(bare, source="x", target="main", message="m", trailers=())
    with pytest.raises(MergeConflict, match="a.txt"):
        git_writes.merge_branches(bare, source="y", target="main", message="m", trailers=())
    with pytest.raises(NotFound, match="ghost"):
        git_writes.merge_branches(bare, source="ghost", target="main", message="m", trailers=())


def test_translate_classifies_git_failures():
    from git.exc import GitCommandError

    rejected = GitCommandError(["git", "push"], 1, stderr="! [rejected] main -> main (non-fast-forward)")
    network = GitCommandError(["git", "fetch"], 128, stderr="fatal: Could not resolve host: example.com")
    other = GitCommandError(["git", "x"], 1, stderr="fatal: bad object")
    assert isinstance(git_repository.translate(rejected, "push"), ConflictError)
    assert type(git_repository.translate(network, "fetch")) is TransientError
    assert type(git_repository.translate(other, "x")) is PermanentError
    with pytest.raises(ConflictError, match="push main"):
        with git_repository.translated("push main"):
            raise rejected
