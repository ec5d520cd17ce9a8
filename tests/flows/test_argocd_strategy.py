"""A rolling deployment through its stages (sync_environment, check_health, roll_back) with ArgoCDRuntime.

Argo CD is the in-test API of tests/support/argocd.py; the GitOps repository is a real bare repository.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.argocd import ENVIRONMENT, FakeArgo, runtime_for, serve_argo
from support.runtime import APP, FAST_VALUES, IMAGE_V1, IMAGE_V2, SAMPLE_DEPLOY

from blocks.argocd_runtime import ArgoCDRuntime
from blocks.gitops_repo import GitOpsRepo
from delivery.config import HealthGates
from delivery.errors import InvalidInput
from delivery.manifests import ManifestSpec, templates_from_dir
from delivery.models import BlueGreenStrategy, RollingStrategy
from delivery.plan import PromotionCause
from flows.strategies import DeploymentOutcome, deploy_with_strategy


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    with serve_argo() as state:
        yield state


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    gitops = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    gitops.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
    return gitops


def deploy(runtime: ArgoCDRuntime, repo: GitOpsRepo, image: str, strategy: Any = None) -> DeploymentOutcome:
    from prefect import flow

    spec = ManifestSpec(release_id=f"rel-argo-{uuid.uuid4().hex[:8]}", trace_id=uuid.uuid4().hex, app=APP,
                        environment=ENVIRONMENT, namespace=f"{ENVIRONMENT}-ns", image=image,
                        templates=templates_from_dir(SAMPLE_DEPLOY), values=FAST_VALUES)

    @flow(name="argocd-deploy-test")
    def one_environment() -> DeploymentOutcome:
        return deploy_with_strategy(runtime, repo, spec, strategy=strategy or RollingStrategy(),
                                    health=HealthGates(timeout_seconds=10), poll_seconds=0.02)

    return one_environment()


def test_a_degraded_release_fails_its_health_gate_and_argo_cd_syncs_the_last_healthy_revision_back(
    prefect_server: str, argo: FakeArgo, repo: GitOpsRepo
) -> None:
    runtime = runtime_for(argo)
    good = deploy(runtime, repo, IMAGE_V1)
    assert good.healthy and not good.rolled_back, good.message
    assert repo.healthy_revision(ENVIRONMENT, APP) == good.git_revision
    assert [body["revision"] for body in argo.syncs()] == [good.git_revision]

    argo.degrade_next_sync = True
    bad = deploy(runtime, repo, IMAGE_V2)

    assert not bad.healthy and bad.rolled_back and bad.cause is PromotionCause.HEALTH_FAILED, bad.message
    assert "Degraded: " in bad.message and "exceeded its progress deadline" in bad.message
    assert bad.rollback is not None and bad.rollback.restored_from == good.git_revision and bad.rollback.healthy
    assert [body["revision"] for body in argo.syncs()] == [good.git_revision, bad.failed_revision,
                                                           bad.rollback.git_revision]
    assert repo.read_environment(ENVIRONMENT, APP, ref=bad.rollback.git_revision) == \
        repo.read_environment(ENVIRONMENT, APP, ref=good.git_revision)
    assert repo.healthy_revision(ENVIRONMENT, APP) == good.git_revision


def test_blue_green_is_refused_before_anything_is_committed(
    prefect_server: str, argo: FakeArgo, repo: GitOpsRepo
) -> None:
    head = repo.head()

    with pytest.raises(InvalidInput, match="strategy blue_green needs direct cluster access.*supports rolling"):
        deploy(runtime_for(argo), repo, IMAGE_V1, BlueGreenStrategy())

    assert repo.head() == head and argo.requests == []


def test_a_saved_argocd_runtime_loads_as_an_environments_runtime(prefect_server: str, argo: FakeArgo) -> None:
    from pydantic import SecretStr

    from blocks.loading import load_runtime

    name = f"argo-{uuid.uuid4().hex[:8]}"
    ArgoCDRuntime(server_url=argo.url, username="admin", password=SecretStr("pw-saved"), prune=False).save(name)

    loaded = load_runtime(f"argocd-runtime/{name}", source="delivery.yaml environments.dev.runtime")

    assert isinstance(loaded, ArgoCDRuntime) and loaded.prune is False
    assert loaded.password is not None and loaded.password.get_secret_value() == "pw-saved"


def test_the_drift_check_leaves_an_argo_cd_environment_to_argo_cd(
    prefect_server: str, argo: FakeArgo, repo: GitOpsRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from delivery.config import parse_config
    from tasks.drift import check_environment_drift

    name = f"argo-drift-{uuid.uuid4().hex[:8]}"
    runtime_for(argo).save(name)
    repo.save(name)
    monkeypatch.setenv("DELIVERY_GITOPS_REPO_BLOCK", f"gitops-repo/{name}")
    config = parse_config({"path": ["dev"], "environments": {
        "dev": {"namespace": "dev-ns", "runtime": f"argocd-runtime/{name}"}}}).environment("dev")

    report = flow(name="argocd-drift-test")(lambda: check_environment_drift(ENVIRONMENT, config, repo.head()))()

    assert "Argo CD reconciles this environment" in report["skipped_reason"]
    assert argo.requests == []
