"""Cost of promoting and syncing an environment of N objects (figures printed, never asserted).

Usage: .venv/bin/python bench/runtime_sync.py [N ...]    (default: 10 100 1000)

Per size: a Kubernetes simulator (in this process, ready delay 0.1 s), a bare GitOps repo, and
an environment holding the sample app's objects plus N-4 ConfigMaps. Measured with the stage
bodies (no Prefect around them): the promotion commit, a first sync (everything created), a
second sync of the same revision (a no-op: nothing changes, no resourceVersion moves), and the
rollback to a healthy revision that differs in one ConfigMap. Requests are those the simulator
served; writes are its PATCH, PUT, POST and DELETE requests. It prints the machine it ran on.

A sync lists each managed kind once and compares the live objects with Git; it applies only the
objects that differ (one PATCH each; the namespace is checked only when none of its objects is
live) and prunes. A no-op sync is one LIST per kind whatever N; a one-object rollback adds one PATCH.

Figures (2026-12-03, other work running: wall times are noisy, request counts are exact):

machine: 2 cores, 23.5 GiB memory, Python 3.11.7 (CPython), Linux x86_64
 objects  promote s | sync: requests  wall s | no-op: requests  wall s | rollback: requests  wall s
      10       0.08 |             22    0.33 |               5    0.04 |                  6    0.11
     100       0.11 |            112    0.16 |               5    0.06 |                  6    0.21
    1000       0.91 |           1012    1.19 |               5    0.36 |                  6    1.31

The rollback's wall time is mostly its Git commit of N files (compare the promote column).
Before the comparison (every object applied on every sync), same machine and day: no-op
16 / 106 / 1006 requests (0.05 / 0.20 / 1.53 s), rollback 16 / 106 / 1006 (0.10 / 0.34 / 2.35 s);
and the no-op check failed now and then, when the kubelet's status write landed between the LIST
and the Deployment's apply.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

from _machine import print_machine
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blocks.gitops_repo import GitOpsRepo  # noqa: E402
from blocks.kubernetes_runtime import KubernetesRuntime  # noqa: E402
from delivery.manifest_files import dump_object, parse_objects  # noqa: E402
from delivery.manifests import ManifestSpec, render, templates_from_dir  # noqa: E402
from kube_simulator import KubernetesSimulator  # noqa: E402
from tasks.promote import Promotion, write_promotion  # noqa: E402
from tasks.rollback import RollbackSpec, restore_healthy  # noqa: E402
from tasks.sync import SyncSpec, reconcile  # noqa: E402


def files_with(n: int, target: dict, *, greeting: str) -> dict[str, str]:
    spec = ManifestSpec(**target, image="127.0.0.1:5000/sample-app@sha256:" + "1" * 64,
                        templates=templates_from_dir(ROOT / "examples/sample-app/deploy"), values={"replicas": 1})
    files = dict(render(spec).files)
    template = parse_objects({"c.yaml": files["configmap-sample-app-config.yaml"]})[0]
    for index in range(max(0, n - len(files))):
        extra = {**template, "metadata": {**template["metadata"], "name": f"extra-{index}"},
                 "data": {"GREETING": greeting if index == 0 else "same"}}
        files[f"configmap-extra-{index}.yaml"] = dump_object(extra)
    return files


def measure(n: int) -> tuple[float, ...]:
    with tempfile.TemporaryDirectory() as tmp, KubernetesSimulator(ready_delay=0.1) as sim:
        runtime = KubernetesRuntime(kubeconfig=SecretStr(sim.kubeconfig()))
        repo = GitOpsRepo(url=str(Path(tmp) / "gitops.git"))
        repo.ensure_exists(initial_files={"delivery.yaml": b"path: [bench]\n"})
        target = {"release_id": f"bench-{uuid.uuid4().hex[:6]}", "trace_id": uuid.uuid4().hex, "app": "sample-app",
                  "environment": "bench", "namespace": "bench"}
        start = time.perf_counter()
        good = write_promotion(repo, Promotion(**target, files=files_with(n, target, greeting="v1"))).git_revision
        promote_s = time.perf_counter() - start
        sim.reset_request_count()
        start = time.perf_counter()
        reconcile(runtime, repo, SyncSpec(**target, git_revision=good))
        first_s, first_requests = time.perf_counter() - start, sim.request_count
        repo.tag_healthy("bench", "sample-app", good)
        sim.reset_request_count()
        start = time.perf_counter()
        again = reconcile(runtime, repo, SyncSpec(**target, git_revision=good))
        second_s, second_requests = time.perf_counter() - start, sim.request_count
        assert again.no_op and writes(sim) == 0
        bad = write_promotion(repo, Promotion(**target, files=files_with(n, target, greeting="v2"))).git_revision
        reconcile(runtime, repo, SyncSpec(**target, git_revision=bad))
        sim.reset_request_count()
        start = time.perf_counter()
        rolled = restore_healthy(runtime, repo, RollbackSpec(**target, failed_revision=bad, wait=False))
        rollback_s, rollback_requests = time.perf_counter() - start, sim.request_count
        assert len(rolled.changed) == writes(sim) == (1 if n > 4 else 0)
        return (promote_s, first_requests, first_s, second_requests, second_s, rollback_requests, rollback_s)


def writes(sim: KubernetesSimulator) -> int:
    """Requests that could change the store, since the last reset."""
    return sum(count for method, count in sim.requests_by_method.items() if method != "GET")


def main(sizes: list[int]) -> None:
    print_machine()
    print(f"{'objects':>8} {'promote s':>10} | {'sync: requests':>14} {'wall s':>7} | "
          f"{'no-op: requests':>15} {'wall s':>7} | {'rollback: requests':>18} {'wall s':>7}")
    for n in sizes:
        promote_s, r1, s1, r2, s2, r3, s3 = measure(n)
        print(f"{n:>8} {promote_s:>10.2f} | {r1:>14} {s1:>7.2f} | {r2:>15} {s2:>7.2f} | {r3:>18} {s3:>7.2f}")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10, 100, 1000])
