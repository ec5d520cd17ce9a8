"""promote: desired state committed to environments/<env>/<app>/ with the release trailers, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from git import Repo
from support.runtime import APP, IMAGE_V1, SAMPLE_DEPLOY, in_flow, new_release_id

from blocks.gitops_repo import GitOpsRepo
from delivery.errors import InvalidInput
from delivery.manifests import ManifestSpec, render, templates_from_dir
from tasks.promote import Promotion, promote


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    block = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    block.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
    return block


def manifest(release_id: str):
    return render(ManifestSpec(release_id=release_id, trace_id="c" * 32, app=APP, environment="dev",
                               namespace="dev", image=IMAGE_V1, templates=templates_from_dir(SAMPLE_DEPLOY)))


def test_promote_commits_the_rendered_objects_with_trailers_and_a_second_run_commits_nothing(
    prefect_server: str, repo: GitOpsRepo
) -> None:
    rendered = manifest(new_release_id())
    promotion = Promotion.of(rendered, artifact_ids=["art-1", "art-2"], planned_by="agent:planner",
                             approved_by=["user:alice"])

    result = in_flow(lambda: promote(repo, promotion))

    assert result.created and result.git_revision == repo.head()
    assert result.files == sorted(rendered.files)
    stored = repo.read_environment("dev", APP, ref=result.git_revision)
    assert {name: data.decode() for name, data in stored.items()} == rendered.files
    assert yaml.safe_load(stored[f"deployment-{APP}.yaml"])["spec"]["template"]["spec"]["containers"][0][
        "image"] == IMAGE_V1
    message = Repo(repo.url).commit(result.git_revision).message
    for line in (f"Release-Id: {rendered.release_id}", "Trace-Id: " + "c" * 32, "Artifact-Id: art-1",
                 "Artifact-Id: art-2", "Planned-By: agent:planner", "Approved-By: user:alice",
                 "Environment: dev", "Delivery-Phase: deploy"):
        assert line in message

    again = promote.fn(repo, promotion)

    assert not again.created and again.git_revision == result.git_revision == repo.head()


def test_a_promotion_of_fewer_objects_removes_the_others_from_git(repo: GitOpsRepo) -> None:
    rendered = manifest(new_release_id())
    promote.fn(repo, Promotion.of(rendered))
    fewer = {name: text for name, text in rendered.files.items() if not name.startswith("ingress-")}
    result = promote.fn(repo, Promotion(**rendered.target().model_dump(), files=fewer, phase="shrink"))
    assert result.created and sorted(repo.read_environment("dev", APP)) == sorted(fewer)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"files": {"../escape.yaml": "a: 1\n"}}, "files"),
        ({"files": {"notes.txt": "a"}}, "files"),
        ({"phase": "Bad Phase"}, "phase"),
        ({"environment": ""}, "environment"),
        ({"trace_id": ""}, "trace_id"),
        ({"approved_by": "user:alice"}, "approved_by"),
        ({"other": 1}, "other"),
    ],
)
def test_validation_table(repo: GitOpsRepo, change: dict[str, Any], field: str) -> None:
    head = repo.head()
    base = {"release_id": "rel-1", "trace_id": "t" * 32, "app": APP, "environment": "dev", "namespace": "dev",
            "files": {"a.yaml": "a: 1\n"}}
    with pytest.raises(InvalidInput, match=f"promote: invalid input: {field}"):
        promote.fn(repo, {**base, **change})
    assert repo.head() == head
