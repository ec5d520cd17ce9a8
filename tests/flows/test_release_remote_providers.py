"""One release through remote providers: the application on GitHub, the wheel on an Azure Artifacts (PyPI protocol)
feed, the image on a registry that asks for bearer tokens, the GitOps repository local.

GitHub is an in-test server answering the documented REST shapes over a real Git smart HTTP
(``git http-backend``) that refuses unauthenticated git; the feed is a real ``pypiserver`` with
authentication; the registry is the real ``docker-registry`` in token mode with a token issuer of the
tests. The release flow runs as in production, on the session's Prefect server, to dev.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from git import Repo
from pydantic import SecretStr
from support.fake_github import FakeGitHub
from support.package_index import start_package_index
from support.promotion import delivery_yaml
from support.release import APP, PLANNER, Services, release_services, sample_app_files
from support.token_issuer import TokenIssuer

from blocks.azure_artifacts_feed import AzureArtifactsFeed
from blocks.github_host import GitHubHost
from blocks.gitops_repo import GitOpsRepo
from blocks.image_registry import OciImageRegistry
from blocks.pipeline_runner import LocalPipelineRunner
from cli.local_registry import start_registry
from delivery.models import Artifact, ReleaseRequest
from delivery.plan import PlanState
from delivery.settings import block_setting

GITHUB_TOKEN = "ghp_remoteReleaseToken0123456789"
FEED_USER, FEED_TOKEN = "ci-bot", "azure-artifacts-pat-5d1e"
REGISTRY_USER, REGISTRY_PASSWORD = "acr-push", "acr-password-9f2c"
SECRETS = (GITHUB_TOKEN, FEED_TOKEN, REGISTRY_PASSWORD)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path_factory.mktemp("issuer"), users={REGISTRY_USER: REGISTRY_PASSWORD}) as running:
        yield running


@pytest.fixture(scope="module")
def services(prefect_server, issuer, tmp_path_factory) -> Iterator[Services]:
    with start_registry(tmp_path_factory.mktemp("token-registry"), token_auth=issuer.token_auth) as registry, \
            release_services(registry) as running:
        yield running


def test_a_release_through_github_azure_artifacts_and_a_token_registry_reaches_dev(
        services: Services, issuer: TokenIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger) -> None:
    from flows.release import release

    suffix = uuid.uuid4().hex[:8]
    github = FakeGitHub(tmp_path / "github", GITHUB_TOKEN)
    github.create_repository(APP)
    with github.server as server, start_package_index(tmp_path / "feed", users={FEED_USER: FEED_TOKEN}) as index:
        host = GitHubHost(owner="acme", token=SecretStr(GITHUB_TOKEN), api_url=f"{server.url}/api",
                          git_url=f"{server.url}/git", cache_dir=str(tmp_path / "mirrors"), checks_poll_seconds=0.05,
                          required_checks=["build"])
        host.ensure_repository(APP, initial_files=sample_app_files())
        config = delivery_yaml(services.runtime_ref)
        config = {"path": ["dev"], "environments": {"dev": {**config["environments"]["dev"],
                                                            "namespace": f"t{suffix}-dev"}}}
        gitops = GitOpsRepo(url=str(tmp_path / "gitops.git"))
        gitops.ensure_exists(initial_files={"delivery.yaml": yaml.safe_dump(config, sort_keys=False).encode()})
        feed = AzureArtifactsFeed(upload_url=f"{index.url}/", index_url=index.index, username=FEED_USER,
                                  token=SecretStr(FEED_TOKEN), timeout_seconds=20)
        registry = OciImageRegistry(url=services.registry.url, username=REGISTRY_USER,
                                    password=SecretStr(REGISTRY_PASSWORD))
        blocks = {"git_host": host, "gitops_repo": gitops, "pipeline_runner": LocalPipelineRunner(
            work_dir=str(tmp_path / "runs")), "package_feed": feed, "image_registry": registry}
        for role, block in blocks.items():
            block.save(f"remote-{suffix}", overwrite=True)
            monkeypatch.setenv(block_setting(role), f"{block._block_type_slug}/remote-{suffix}")
        version = f"0.9.{int(suffix, 16) % 100000}"
        request = ReleaseRequest(app=APP, requested_by=PLANNER, artifacts=[Artifact.from_text(
            "app-version", "src/sample_app/__init__.py", f'"""The sample service."""\n\n__version__ = "{version}"\n',
            validator="ci-lint")])

        state = release(request, return_state=True)

        assert state.is_completed(), state
        summary = state.result()
        build = summary.build
        # the application: branch pushed, pull request opened with the trace, checked, merged, outcome commented
        [pull] = github.pulls[APP]
        assert pull["merged"] and f"Trace-Id: {request.trace_id}" in pull["body"]
        comments = [c["body"] for c in github.comments[(APP, pull["number"])]]
        assert any("merged" in body.lower() and request.release_id in body for body in comments), comments
        # the wheel is in the feed, the image in the token registry, both found again by the blocks
        [package] = build.packages
        assert package.version == version and feed.has(package)
        assert any(name.endswith(".whl") and version in name for name in (p.name for p in index.packages.iterdir()))
        [image] = build.images
        assert image.digest.startswith("sha256:") and registry.has(image)
        # the registry was reached with tokens the issuer gave for the app's repository, push included
        assert any(scope.startswith(f"repository:{APP}:") and "push" in scope and status == 200
                   for _path, scope, status in issuer.requests), issuer.requests
        # dev runs that image, and the ledger says Deployed
        [plan] = ledger.plans(release_id=request.release_id)
        assert plan.state is PlanState.DEPLOYED
        # no credential in the pipeline's logs and records, in the GitOps history or in the mirrors' config
        written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
        written += [p for p in (tmp_path / "mirrors").rglob("config") if p.is_file()]
        leaked = [str(p) for p in written for secret in SECRETS if secret.encode() in p.read_bytes()]
        assert leaked == []
        with Repo(gitops.url) as repository:
            gitops_log = "".join(c.message for c in repository.iter_commits("main"))
        assert not any(secret in gitops_log for secret in SECRETS)
