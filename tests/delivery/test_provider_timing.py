"""Provider calls are timed once each, attributed to their stage and environment, and only when asked.

``bench/release.py`` reads these records to set a release's wall time against its provider work.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.blocks.core import Block

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery import provider_timing
from tasks.stage import stage


@pytest.fixture
def timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "timings.jsonl"
    monkeypatch.setenv(provider_timing.SETTING, str(path))
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "run-1")
    return path


def test_a_block_method_is_one_call_of_its_stage_and_environment(tmp_path: Path, timings: Path) -> None:
    repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    repo.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})

    @stage("promote")
    def promote(repo: GitOpsRepo, promotion: SimpleNamespace) -> str:
        return repo.write_environment(promotion.environment, "app", {"a.yaml": b"a: 1\n"}, message="m",
                                      trailers=[]).sha

    sha = promote.fn(repo, SimpleNamespace(environment="dev", release_id="rel-1"))  # the stage body, as Prefect runs it
    rows = provider_timing.read_timings(timings)
    assert [(r["call"], r["stage"], r["environment"], r["flow_run"]) for r in rows] == [
        ("GitOpsRepo.ensure_exists", None, None, "run-1"),
        ("GitOpsRepo.write_environment", "promote", "dev", "run-1"),
    ]
    assert all(r["seconds"] > 0 for r in rows) and rows[0]["start"] < rows[1]["start"]
    assert repo.resolve("main") == sha


def test_a_call_inside_another_is_not_counted_again(timings: Path) -> None:
    @provider_timing.timed_provider
    class Provider:
        def outer(self) -> int:
            return self.inner() + 1

        def inner(self) -> int:
            return 1

    assert Provider().outer() == 2
    assert [r["call"] for r in provider_timing.read_timings(timings)] == ["Provider.outer"]


def test_only_public_provider_methods_are_timed() -> None:
    assert hasattr(GitOpsRepo.write_environment, "__wrapped__")
    assert hasattr(KubernetesRuntime.apply, "__wrapped__")
    assert GitOpsRepo.save is Block.save  # Prefect's own method: no provider call
    assert not hasattr(GitOpsRepo._path_of_url, "__wrapped__")


def test_nothing_is_recorded_unless_a_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(provider_timing.SETTING, raising=False)
    GitOpsRepo(url=str(tmp_path / "gitops.git")).ensure_exists()
    with provider_timing.provider_call("probe"):
        pass
    assert list(tmp_path.iterdir()) == [tmp_path / "gitops.git"]
