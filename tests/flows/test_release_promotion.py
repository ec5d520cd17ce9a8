"""The whole release flow of the sample app: commit -> PR -> merge -> build -> dev -> staging -> prod."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from governance_support import PLANNER, Approver, Step
from promotion_support import delivery_yaml
from pydantic import SecretStr

from blocks.git_host import LocalGitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.image_registry import OciImageRegistry
from blocks.kubernetes_runtime import KubernetesRuntime
from blocks.package_feed import DirectoryPackageFeed
from blocks.pipeline_runner import LocalPipelineRunner
from delivery.cli.stack import EXAMPLES, _app_files
from delivery.errors import InvalidInput
from delivery.local_registry import start_registry
from delivery.models import Artifact, ReleaseRequest
from delivery.plan import PlanState
from delivery.simulator import KubernetesSimulator
from flows.release import release

ROLES = ("git_host", "gitops_repo", "pipeline_runner", "package_feed", "image_registry")


@pytest.fixture
def wired(prefect_server, ledger, tmp_path: Path) -> Iterator[LocalGitHost]:
    """Every block a release loads, saved under names of this test, on a fresh simulator and registry."""
    suffix = uuid.uuid4().hex[:8]
    with KubernetesSimulator(ready_delay=0.2) as sim, start_registry(tmp_path / "registry") as registry:
        runtime_name = f"gov-release-{suffix}"
        KubernetesRuntime(kubeconfig=SecretStr(sim.kubeconfig())).save(runtime_name, overwrite=True)
        host = LocalGitHost(root=str(tmp_path / "repos"))
        host.ensure_repository("sample-app", initial_files=_app_files(EXAMPLES / "sample-app"))
        repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
        config = delivery_yaml(f"kubernetes-runtime/{runtime_name}")
        repo.ensure_exists(initial_files={"delivery.yaml": yaml.safe_dump(config).encode()})
        blocks = {
            "git_host": host, "gitops_repo": repo,
            "pipeline_runner": LocalPipelineRunner(work_dir=str(tmp_path / "runs")),
            "package_feed": DirectoryPackageFeed(path=str(tmp_path / "feed")),
            "image_registry": OciImageRegistry(url=registry.url),
        }
        saved = {role: os.environ.get(f"DELIVERY_{role.upper()}_BLOCK") for role in ROLES}
        for role, block in blocks.items():
            block.save(f"gov-{suffix}", overwrite=True)
            os.environ[f"DELIVERY_{role.upper()}_BLOCK"] = f"{block._block_type_slug}/gov-{suffix}"
        try:
            yield host
        finally:
            for role, value in saved.items():
                if value is None:
                    os.environ.pop(f"DELIVERY_{role.upper()}_BLOCK", None)
                else:
                    os.environ[f"DELIVERY_{role.upper()}_BLOCK"] = value


def _request(**fields) -> ReleaseRequest:
    text = '"""A small web service the delivery demo releases."""\n\n__version__ = "0.4.0"\n'
    return ReleaseRequest(
        release_id=f"rel-e2e-{uuid.uuid4().hex[:8]}", app="sample-app", requested_by=PLANNER,
        artifacts=[Artifact.from_text("version", "src/sample_app/__init__.py", text, validator="lint")], **fields,
    )


def test_a_release_goes_from_commit_to_prod_with_approvals(wired, prefect_server, ledger) -> None:
    request = _request()
    approver = Approver(prefect_server, request.release_id, [
        Step("user:bob", environment="staging"),
        Step("user:alice", environment="prod"),
        Step("user:carol", environment="prod"),
    ], timeout=300).start()
    summary = release(request)
    approver.join(timeout=300)
    assert summary.build.succeeded and summary.promotion.deployed
    assert [e.approvers for e in summary.promotion.environments] == [[], ["user:bob"], ["user:alice", "user:carol"]]

    plans = ledger.plans(release_id=request.release_id)
    assert [(p.environment, p.state) for p in plans] == [
        ("dev", PlanState.DEPLOYED), ("staging", PlanState.DEPLOYED), ("prod", PlanState.DEPLOYED)]
    assert all(p.build.succeeded and p.build.images for p in plans)
    actors = [(t.plan_id.rsplit("/", 1)[-1], t.to_state.value, t.actor)
              for t in ledger.transitions(release_id=request.release_id)]
    assert ("staging", "Approved", "user:bob") in actors and ("prod", "Approved", "user:carol") in actors
    assert {a for _, _, a in actors} == {PLANNER, "system:policy-gate", "system:promotion", "user:bob", "user:carol"}


def test_an_unknown_target_environment_is_refused_before_anything_is_written(wired, ledger) -> None:
    request = _request(target_environment="qa")
    head = wired.resolve("sample-app", "main")
    with pytest.raises(InvalidInput, match="target_environment: unknown environment 'qa'"):
        release(request)
    assert wired.resolve("sample-app", request.branch) is None
    assert wired.resolve("sample-app", "main") == head
    assert ledger.plans(release_id=request.release_id) == []
