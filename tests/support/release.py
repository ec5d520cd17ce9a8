"""The whole product wired for the release flow tests: every block a release loads, saved and pointed at.

Module-scoped (:func:`release_services`): the Kubernetes simulator and the runtime block on it; the
image registry is the session conftest's module-scoped ``registry`` fixture. Per test
(:func:`wire_release_stack`): the ``sample-app`` repository seeded from examples/sample-app on a
LocalGitHost whose pull-request check runs the service's tests, a GitOps repository with the
support.promotiondelivery.yaml (dev auto, staging 1 approver, prod 2, quick health gates) on
namespaces of this test only, a pipeline runner, a package feed and the registry block, all saved
under names of this test with the ``DELIVERY_<ROLE>_BLOCK`` variables pointing at them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from git import Repo
from pydantic import SecretStr
from sqlalchemy import MetaData, func, select
from support.promotion import delivery_yaml
from support.runtime import ROOT

from blocks.git_host import CheckCommand, LocalGitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.image_registry import OciImageRegistry
from blocks.kubernetes_runtime import KubernetesRuntime
from blocks.package_feed import DirectoryPackageFeed
from blocks.pipeline_runner import LocalPipelineRunner
from cli.local_registry import LocalRegistry
from delivery.labels import managed_selector
from delivery.ledger import Ledger
from delivery.models import Artifact, ReleaseRequest
from delivery.settings import block_setting
from kube_simulator import KubernetesSimulator

APP = "sample-app"
SAMPLE_APP = ROOT / "examples" / APP
PLANNER = "agent:release-manager"
ENVIRONMENTS = ("dev", "staging", "prod")
_SKIP = {"__pycache__", "test-results", "build", "dist", ".pytest_cache"}


def _number(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10_000


def sample_app_files(*, deploy: bool = True) -> dict[str, bytes]:
    """examples/sample-app as repository files (what ``delivery up`` seeds); ``deploy=False`` leaves out deploy/."""
    skip = _SKIP if deploy else _SKIP | {"deploy"}
    return {p.relative_to(SAMPLE_APP).as_posix(): p.read_bytes() for p in sorted(SAMPLE_APP.rglob("*"))
            if p.is_file() and not skip & set(p.relative_to(SAMPLE_APP).parts) and ".egg-info" not in str(p)}


def service_tests_check() -> CheckCommand:
    """The pull-request check: the service's own tests (tests/test_service.py) with this interpreter.

    The gate runs the service tests only; the build's pipeline runs the whole suite. So a change
    adding a new failing test file passes review and is stopped by the build, as in the tests of
    a failing build.
    """
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider tests/test_service.py"
    return CheckCommand(name="unit-tests", run=command, timeout_seconds=120, repositories=[APP])


@dataclass
class Services:
    """What a test module shares: the simulator, the saved runtime block on it, the registry."""

    sim: KubernetesSimulator
    runtime: KubernetesRuntime
    runtime_ref: str
    registry: LocalRegistry


@contextmanager
def release_services(registry: LocalRegistry, *, ready_delay: float = 0.2) -> Iterator[Services]:
    """Start a simulator and save a runtime block on it (needs the Prefect server); stop it after."""
    with KubernetesSimulator(ready_delay=ready_delay) as sim:
        runtime = KubernetesRuntime(kubeconfig=SecretStr(sim.kubeconfig()))
        name = f"release-rt-{uuid.uuid4().hex[:8]}"
        runtime.save(name, overwrite=True)
        yield Services(sim=sim, runtime=runtime, runtime_ref=f"kubernetes-runtime/{name}", registry=registry)


@dataclass
class ReleaseStack:
    """One test's wired product: its repositories, blocks and ledger, on the module's services."""

    services: Services
    root: Path
    suffix: str
    host: LocalGitHost
    repo: GitOpsRepo
    runner: LocalPipelineRunner
    feed: DirectoryPackageFeed
    image_registry: OciImageRegistry
    ledger: Ledger

    def namespace(self, environment: str) -> str:
        """The environment's namespace: of this test only, so tests sharing the simulator do not meet."""
        return f"t{self.suffix}-{environment}"

    def request(self, release_id: str | None = None, *, artifacts: list[Artifact] | None = None,
                **fields: Any) -> ReleaseRequest:
        """A release of the sample app by the planner agent (default: a new version and release notes)."""
        rid = release_id or f"rel-{uuid.uuid4().hex[:10]}"
        default = [
            Artifact.from_text("app-version", "src/sample_app/__init__.py",
                               f'"""The sample service."""\n\n__version__ = "0.3.{_number(rid)}"\n',
                               validator="ci-lint"),
            Artifact.from_text("release-notes", "CHANGES.md", f"- {rid}\n", validator="ci-lint"),
        ]
        return ReleaseRequest(release_id=rid, app=APP, requested_by=PLANNER, artifacts=artifacts or default, **fields)

    def live_deployments(self, environment: str) -> list[dict[str, Any]]:
        objects = self.services.runtime.list_managed(selector=managed_selector(app=APP),
                                                     namespace=self.namespace(environment))
        return [o for o in objects if o["kind"] == "Deployment"]

    def images(self, environment: str) -> set[str]:
        """The images the environment's live Deployments run."""
        return {c["image"] for d in self.live_deployments(environment)
                for c in d["spec"]["template"]["spec"]["containers"]}

    def registry_tags(self) -> list[str]:
        response = httpx.get(f"{self.services.registry.url}/v2/{APP}/tags/list", timeout=10)
        return sorted(response.json().get("tags") or []) if response.status_code == 200 else []

    def snapshot(self) -> dict[str, Any]:
        """Everything a release can write outside Prefect: what 'nothing was written' compares."""
        def refs(path: str) -> dict[str, str]:
            with Repo(path) as repo:
                return {ref.path: ref.commit.hexsha for ref in repo.references}

        def files(path: Path) -> list[str]:
            return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []

        records = Path(self.host.clone_url(APP)).with_suffix(".prs")
        return {
            "app": refs(self.host.clone_url(APP)),
            "pull_requests": files(records),
            "gitops": refs(self.repo.url),
            "feed": files(Path(self.feed.path)),
            "runs": sorted(p.name for p in Path(self.runner.work_dir).iterdir())
            if Path(self.runner.work_dir).exists() else [],
            "images": self.registry_tags(),
            "plans": [(p.plan_id, p.state.value) for p in self.ledger.plans()],
            "transitions": len(self.ledger.transitions()),
        }


def wire_release_stack(services: Services, root: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger, *,
                       config: Mapping[str, Any] | None = None, check: bool = True) -> ReleaseStack:
    """Seed the repositories, save every block under this test's names and point the variables at them.

    Args:
        services: the module's simulator, runtime block and registry.
        root: this test's folder.
        monkeypatch: sets ``DELIVERY_<ROLE>_BLOCK`` for this test only.
        ledger: this test's ledger (already the default through ``DELIVERY_LEDGER_URL``).
        config: delivery.yaml as a mapping; default support.promotion's, on this test's namespaces.
        check: run the service tests as the pull request's check.
    """
    suffix = uuid.uuid4().hex[:8]
    host = LocalGitHost(root=str(root / "repos"), check_commands=[service_tests_check()] if check else [])
    host.ensure_repository(APP, initial_files=sample_app_files())
    if config is None:
        config = delivery_yaml(services.runtime_ref)
        for name, environment in config["environments"].items():
            environment["namespace"] = f"t{suffix}-{name}"
    repo = GitOpsRepo(url=str(root / "gitops.git"))
    repo.ensure_exists(initial_files={"delivery.yaml": yaml.safe_dump(dict(config), sort_keys=False).encode()})
    stack = ReleaseStack(
        services=services, root=root, suffix=suffix, host=host, repo=repo,
        runner=LocalPipelineRunner(work_dir=str(root / "runs")),
        feed=DirectoryPackageFeed(path=str(root / "feed")),
        image_registry=OciImageRegistry(url=services.registry.url),
        ledger=ledger,
    )
    roles = {"git_host": stack.host, "gitops_repo": stack.repo, "pipeline_runner": stack.runner,
             "package_feed": stack.feed, "image_registry": stack.image_registry}
    for role, block in roles.items():
        name = f"release-{suffix}"
        block.save(name, overwrite=True)
        monkeypatch.setenv(block_setting(role), f"{block._block_type_slug}/{name}")
    return stack


def bare_repositories(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.git") if (p / "HEAD").is_file() and (p / "objects").is_dir())


def git_state(repository: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repository), *args], check=True, capture_output=True,
                              text=True).stdout

    objects = dict(line.split(": ", 1) for line in git("count-objects", "-v").splitlines())
    return {"refs": git("for-each-ref", "--format=%(refname) %(objectname)"),
            "objects": (objects["count"], objects["in-pack"])}


def ledger_rows(stack: ReleaseStack) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(stack.ledger.engine)
    with stack.ledger.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in metadata.tables.items()}


def simulator_state(stack: ReleaseStack) -> tuple[int, list[str]]:
    store = stack.services.sim.store
    with store.lock:
        return store.rv, sorted(f"{rt}/{namespace}/{name}" for rt, by_namespace in store._objects.items()
                                for namespace, names in by_namespace.items() for name in names)


def everything(stack: ReleaseStack) -> dict[str, Any]:
    """Everything a release can write, to compare before and after a refusal: every ref and object count of
    every bare repository, the row count of every ledger table, the simulator's objects, ``stack.snapshot()``."""
    repositories = bare_repositories(stack.root)
    assert len(repositories) >= 2, repositories  # the application's and the GitOps repository
    return {"git": {str(p.relative_to(stack.root)): git_state(p) for p in repositories},
            "ledger": ledger_rows(stack), "simulator": simulator_state(stack), "stack": stack.snapshot()}
