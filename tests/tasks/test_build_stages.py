"""Stages 6 and 7: run_pipeline and ingest_build_result, their refusals and their idempotency."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from blocks.git_host import LocalGitHost
from blocks.package_feed import DirectoryPackageFeed
from blocks.pipeline_runner import LocalPipelineRunner, PipelineRunResult
from delivery.errors import BuildFailed, InvalidInput, NotFound
from delivery.models import Artifact, BuildStatus, PublishedImage, PublishedPackage, ReleaseRequest, TestCounts
from tasks.build import ingest_build_result, run_pipeline
from tasks.pipeline import GeneratedPipeline

PIPELINE = b"steps:\n- script: echo built > out.txt && echo ok\n  displayName: Build\n"


def request(release_id: str) -> ReleaseRequest:
    return ReleaseRequest(release_id=release_id, app="app", requested_by="agent:test",
                          artifacts=[Artifact.from_text("a1", "notes.txt", "x")])


@pytest.fixture
def repo(tmp_path) -> tuple[LocalGitHost, str]:
    host = LocalGitHost(root=str(tmp_path / "repos"))
    host.ensure_repository("app", initial_files={"azure-pipelines.yml": PIPELINE})
    return host, host.resolve("app", "main")


def generated(commit: str, path: str = "azure-pipelines.yml") -> GeneratedPipeline:
    return GeneratedPipeline(repository="app", path=path, sha256="0" * 64, commit=commit, merge_commit=commit,
                             refreshed=False, jobs=["job"])


def runs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def test_run_pipeline_runs_once_per_release(prefect_server, repo, tmp_path):
    host, commit = repo
    runner = LocalPipelineRunner(work_dir=str(tmp_path / "runs"))
    first = run_pipeline(runner, request("rel-run-1"), generated(commit), clone_url=host.clone_url("app"))
    assert first.succeeded and first.commit == commit
    assert runs_in(tmp_path / "runs") == [tmp_path / "runs" / first.run_id]
    again = run_pipeline(runner, request("rel-run-1"), generated(commit), clone_url=host.clone_url("app"))
    assert again == first  # the same release: the persisted result, no second run
    assert len(runs_in(tmp_path / "runs")) == 1


@pytest.mark.parametrize(
    ("pipeline_path", "commit", "error", "message"),
    [
        ("missing.yml", None, InvalidInput, "pipeline file 'missing.yml' is not in app"),
        ("azure-pipelines.yml", "f" * 40, NotFound, "is not in"),
    ],
)
def test_run_pipeline_refuses_what_it_cannot_run(prefect_server, repo, tmp_path, pipeline_path, commit, error,
                                                 message):
    host, head = repo
    runner = LocalPipelineRunner(work_dir=str(tmp_path / "runs"))
    with pytest.raises(error, match=message):
        run_pipeline(runner, request(f"rel-bad-{pipeline_path[:4]}"), generated(commit or head, pipeline_path),
                     clone_url=host.clone_url("app"))


def run_result(**changes) -> PipelineRunResult:
    now = datetime.now(UTC)
    values = {"run_id": "local-1", "runner": "local", "commit": "a" * 40, "succeeded": True,
              "tests": TestCounts(total=2, passed=2), "started_at": now, "finished_at": now,
              "logs_url": "file:///tmp/logs"}
    return PipelineRunResult(**{**values, **changes})


def test_ingest_turns_a_run_into_a_build_result(prefect_server, tmp_path):
    feed = DirectoryPackageFeed(path=str(tmp_path / "feed"))
    wheel = tmp_path / "dist" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK")
    package = feed.publish(wheel)
    build = ingest_build_result(request("rel-ingest-ok"), run_result(packages=[package]), feed=feed)
    assert build.status is BuildStatus.SUCCEEDED and build.run_id == "local-1"
    assert build.packages == [package] and build.tests.passed == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"succeeded": False, "reason": "step 'Run tests' of job test failed (exit code 1)",
          "tests": TestCounts(total=3, passed=2, failed=1)},
         "step 'Run tests' of job test failed.*1 of 3 tests failed"),
        ({"packages": [PublishedPackage(name="ghost", version="9.9", location="/nowhere")]},
         "package ghost 9.9 is not in the feed"),
    ],
)
def test_ingest_fails_the_build_with_a_clear_reason(prefect_server, tmp_path, changes, message):
    feed = DirectoryPackageFeed(path=str(tmp_path / "feed"))
    with pytest.raises(BuildFailed, match=message):
        ingest_build_result(request(f"rel-ingest-{len(message)}"), run_result(**changes), feed=feed)


def test_an_image_the_registry_does_not_serve_fails_the_build(prefect_server):
    from blocks.image_registry import OciImageRegistry

    image = PublishedImage(repository="elsewhere.example/app", tag="t", digest="sha256:" + "1" * 64)
    with pytest.raises(BuildFailed, match="image elsewhere.example/app@sha256:1+ is not in the registry"):
        ingest_build_result(request("rel-ingest-image"), run_result(images=[image]),
                            registry=OciImageRegistry(url="http://127.0.0.1:9"))


class CountingFeed(DirectoryPackageFeed):
    """A directory feed that counts how often the stage asks it."""

    _block_type_slug = "counting-feed-for-tests"
    asked: ClassVar[list[str]] = []

    def has(self, package: PublishedPackage) -> bool:
        CountingFeed.asked.append(package.name)
        return super().has(package)


def test_ingest_runs_once_per_release(prefect_server, tmp_path):
    feed = CountingFeed(path=str(tmp_path / "feed"))
    wheel = tmp_path / "dist" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK")
    run = run_result(packages=[feed.publish(wheel)])
    first = ingest_build_result(request("rel-ingest-once"), run, feed=feed)
    again = ingest_build_result(request("rel-ingest-once"), run, feed=feed)
    assert again == first and CountingFeed.asked == ["demo"]  # the second call is the persisted result
