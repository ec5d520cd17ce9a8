"""Shared by the promotion tests: a wired local stack (git host, GitOps repo, simulator, saved blocks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, tags
from pydantic import SecretStr
from support.runtime import FAIL, ROOT, SAMPLE_DEPLOY

from blocks.git_host import LocalGitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery.ids import release_tags
from delivery.models import BuildResult, BuildStatus, PublishedImage, ReleaseRequest, TestCounts
from flows.promotion import PromotionSummary, promote_path
from kube_simulator import KubernetesSimulator

FAST = {"progressDeadlineSeconds": 2, "replicas": 2}
__all__ = ["FAIL", "FAST", "ROOT", "SAMPLE_DEPLOY", "Stack", "delivery_yaml", "promote", "promotion_stack"]


@flow(name="promote-under-test")
def _promote_flow(request: ReleaseRequest, build: BuildResult) -> PromotionSummary:
    return promote_path(request, build)


def promote(request: ReleaseRequest, build: BuildResult) -> PromotionSummary:
    """Promote along the path in a flow run tagged like a release run (the release flow does this in its own)."""
    with tags(*release_tags(request.release_id, request.trace_id)):
        return _promote_flow(request, build)


def delivery_yaml(runtime_ref: str, *, prod_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """dev (auto) -> staging (1 approver) -> prod (2 distinct approvers), quick health gates."""
    def env(name: str, strategy: Any, approval: dict[str, Any], values: Mapping[str, Any] | None = None):
        return {
            "namespace": f"sample-{name}",
            "runtime": runtime_ref,
            "strategy": strategy,
            "values": {**FAST, **(values or {})},
            "policies": {"tests-passed": "build.tests.failed == 0"},
            "approval": approval,
            "health": {"timeout_seconds": 20},
        }

    return {
        "path": ["dev", "staging", "prod"],
        "environments": {
            "dev": env("dev", "rolling", {"required": False}),
            "staging": env("staging", "blue_green",
                           {"required": True, "approvers": ["user:alice", "user:bob"], "min_approvers": 1}),
            "prod": env("prod", {"name": "canary", "steps": [50, 100]},
                        {"required": True, "approvers": ["user:alice", "user:bob", "user:carol"],
                         "min_approvers": 2},
                        prod_values),
        },
    }


@dataclass
class Stack:
    sim: KubernetesSimulator
    runtime: KubernetesRuntime
    host: LocalGitHost
    repo: GitOpsRepo
    build: BuildResult

    def live_deployments(self, namespace: str) -> list[dict[str, Any]]:
        from delivery.labels import managed_selector

        return [o for o in self.runtime.list_managed(selector=managed_selector(), namespace=namespace)
                if o["kind"] == "Deployment"]


@contextmanager
def promotion_stack(tmp_path: Path, *, prod_values: Mapping[str, Any] | None = None,
                    config: dict[str, Any] | None = None) -> Iterator[Stack]:
    """Save the blocks a promotion loads, point the block references at them, and clean up after."""
    suffix = uuid.uuid4().hex[:8]
    runtime_name, host_name, repo_name = f"gov-rt-{suffix}", f"gov-git-{suffix}", f"gov-gitops-{suffix}"
    with KubernetesSimulator(ready_delay=0.2) as sim:
        runtime = KubernetesRuntime(kubeconfig=SecretStr(sim.kubeconfig()))
        runtime.save(runtime_name, overwrite=True)
        host = LocalGitHost(root=str(tmp_path / "git"))
        files = {f"deploy/{p.name}": p.read_bytes() for p in sorted(SAMPLE_DEPLOY.iterdir()) if p.is_file()}
        host.ensure_repository("sample-app", initial_files=files)
        host.save(host_name, overwrite=True)
        repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
        body = config or delivery_yaml(f"kubernetes-runtime/{runtime_name}", prod_values=prod_values)
        repo.ensure_exists(initial_files={"delivery.yaml": yaml.safe_dump(body).encode()})
        repo.save(repo_name, overwrite=True)
        build = BuildResult(
            status=BuildStatus.SUCCEEDED, commit=host.resolve("sample-app", "main"), run_id=f"run-{suffix}",
            tests=TestCounts(total=3, passed=3),
            images=[PublishedImage(repository="127.0.0.1:5000/sample-app", tag=suffix, digest="sha256:" + "d" * 64)],
        )
        saved = {key: os.environ.get(key) for key in ("DELIVERY_GIT_HOST_BLOCK", "DELIVERY_GITOPS_REPO_BLOCK")}
        os.environ["DELIVERY_GIT_HOST_BLOCK"] = f"local-git-host/{host_name}"
        os.environ["DELIVERY_GITOPS_REPO_BLOCK"] = f"gitops-repo/{repo_name}"
        try:
            yield Stack(sim=sim, runtime=runtime, host=host, repo=repo, build=build)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
