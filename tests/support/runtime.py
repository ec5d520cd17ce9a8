"""Shared by the runtime tests: a simulator over HTTP, a real GitOps bare repo, and the sample app."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery.labels import managed_selector
from delivery.manifest_files import dump_object, parse_objects
from delivery.manifests import ManifestSpec, templates_from_dir
from kube_simulator import KubernetesSimulator

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DEPLOY = ROOT / "examples" / "sample-app" / "deploy"
APP = "sample-app"
IMAGE_V1 = "127.0.0.1:5000/sample-app@sha256:" + "1" * 64
IMAGE_V2 = "127.0.0.1:5000/sample-app@sha256:" + "2" * 64
IMAGE_V3 = "127.0.0.1:5000/sample-app@sha256:" + "3" * 64
FAIL = {"podAnnotations": {"simulator.delivery.gitops/fail": "true"}}
# Short rollouts: ready after the simulator's delay, failed after a 1 s progress deadline.
FAST_VALUES = {"progressDeadlineSeconds": 1, "replicas": 4}

T = TypeVar("T")


def new_release_id() -> str:
    return f"rel-rt-{uuid.uuid4().hex[:10]}"


@dataclass
class RuntimeEnv:
    """One environment wired for a test: simulator, runtime block, GitOps repo, names."""

    sim: KubernetesSimulator
    runtime: KubernetesRuntime
    repo: GitOpsRepo
    environment: str
    namespace: str

    def target(self, release_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        return {
            "release_id": release_id or new_release_id(),
            "trace_id": uuid.uuid4().hex,
            "app": APP,
            "environment": self.environment,
            "namespace": self.namespace,
            **overrides,
        }

    def spec(self, *, image: str = IMAGE_V1, values: Mapping[str, Any] | None = None, **target: Any) -> ManifestSpec:
        return ManifestSpec(
            **self.target(**target), image=image, templates=templates_from_dir(SAMPLE_DEPLOY),
            values={**FAST_VALUES, **(values or {})},
        )

    def live(self) -> list[dict[str, Any]]:
        return self.runtime.list_managed(selector=managed_selector(app=APP, environment=self.environment))

    def live_by_name(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(o["kind"], o["metadata"]["name"]): o for o in self.live()}


def with_config_maps(files: Mapping[str, str], count: int, *, data: Mapping[str, str] | None = None
                     ) -> dict[str, str]:
    """The rendered sample app's files plus ConfigMaps ``extra-0`` .. ``extra-<count-1>`` shaped like its own.

    They carry the app's managed labels and annotations; ``extra-0`` holds ``data`` (default like the others).
    """
    template = parse_objects({"c.yaml": files[f"configmap-{APP}-config.yaml"]})[0]
    out = dict(files)
    for index in range(count):
        body = {**template, "metadata": {**template["metadata"], "name": f"extra-{index}"},
                "data": dict(data) if index == 0 and data is not None else {"GREETING": "same"}}
        out[f"configmap-extra-{index}.yaml"] = dump_object(body)
    return out


@contextmanager
def runtime_env(tmp_path: Path, *, environment: str = "dev", ready_delay: float = 0.2) -> Iterator[RuntimeEnv]:
    """Start a simulator and a bare GitOps repo for one test; stop everything after."""
    with KubernetesSimulator(ready_delay=ready_delay) as sim:
        runtime = KubernetesRuntime(kubeconfig=SecretStr(sim.kubeconfig()))
        repo = GitOpsRepo(url=str(tmp_path / "gitops.git"))
        repo.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
        yield RuntimeEnv(sim=sim, runtime=runtime, repo=repo, environment=environment, namespace=f"{environment}-ns")


def wait_until(
    condition: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def subset_equal(desired: Any, live: Any, path: str = "") -> list[str]:
    """Differences where ``live`` does not hold what ``desired`` says (the managed fields)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not a mapping"]
        out: list[str] = []
        for key, value in desired.items():
            out += subset_equal(value, live.get(key), f"{path}.{key}")
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [f"{path}: {live!r} != {desired!r}"]
        out = []
        for index, (d, item) in enumerate(zip(desired, live, strict=True)):
            out += subset_equal(d, item, f"{path}[{index}]")
        return out
    return [] if desired == live else [f"{path}: live {live!r} != Git {desired!r}"]


def wait_for_events(api_url: str, trace_id: str, names: list[str], *, deadline_s: float = 60) -> list[dict]:
    """Poll /api/events/filter by the related trace resource until every name in ``names`` arrived."""
    import httpx

    body = {"filter": {"related": {"id": [f"delivery.trace.{trace_id}"]}, "order": "ASC"}, "limit": 50}
    deadline = time.monotonic() + deadline_s
    events: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        events = response.json()["events"]
        if {f"delivery.{name}" for name in names} <= {e["event"] for e in events}:
            return events
        time.sleep(0.5)
    raise AssertionError(f"events {names} not all found for trace {trace_id}; got {[e['event'] for e in events]}")


def in_flow(fn: Callable[[], T]) -> T:
    """Run ``fn`` (which calls stage tasks) inside a throw-away Prefect flow."""
    from prefect import flow

    return flow(name="runtime-test")(fn)()
