"""Cost of a drift check with 100, 1,000 and 10,000 managed objects (figures printed; nothing asserted).

Usage: .venv/bin/python bench/drift.py [N ...]    (default: 100 1000 10000)

Per size: a fresh Kubernetes simulator in a child process (so its work and memory are not
counted here), a GitOps repo whose ``environments/bench/web/`` holds N objects (a Deployment,
a Service and N-2 ConfigMaps), the same objects applied to the simulator. Then one drift check of
the environment (``tasks.drift.check_environment``, the function the flow's task runs, without
Prefect around it) is measured three times:

- ``clean``: nothing drifted (detect mode): requests, wall time;
- ``reconcile``: one ConfigMap edited out of band, reconcile mode: requests, wall time;
- ``memory``: the clean check again under tracemalloc: peak Python memory of the check.

Each check uses a new KubernetesRuntime block, as a flow run does; the block caches API discovery
per API server and process, so after the first check the requests are the LISTs (one per kind),
plus, when reconciling, the namespace check, the apply of what drifted and the LISTs again.

Figures on the 2-core machine the project was built on (2026-11-27):

     objects  requests   wall s  peak MiB |  reconcile: requests  wall s  drift  fixed
         100         5     0.08       0.7 |                   12    0.07      1   True
        1000         5     0.43       6.4 |                   12    0.72      1   True
       10000         5     6.96      63.3 |                   12    7.16      1   True
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _machine import print_machine

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery.config import EnvironmentConfig
from delivery.labels import APP_LABEL, ENVIRONMENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from delivery.ledger import Ledger
from delivery.manifest_files import files_for
from delivery.sync_state_store import SyncStateStore
from tasks.drift import check_environment

ENVIRONMENT, NAMESPACE, APP = "bench", "bench", "web"


def _serve(conn: Any) -> None:
    """Child process: run a simulator and answer url/count/reset/stop over a pipe."""
    from kube_simulator import KubernetesSimulator

    sim = KubernetesSimulator(ready_delay=0.05)
    sim.start()
    conn.send((sim.kubeconfig(), sim.url))
    while True:
        command = conn.recv()
        if command == "count":
            conn.send(sim.request_count)
        elif command == "reset":
            sim.reset_request_count()
            conn.send(None)
        else:
            sim.stop()
            conn.send(None)
            return


class RemoteSimulator:
    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        self.kubeconfig, self.url = self.conn.recv()

    def call(self, command: str) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        self.call("stop")
        self.process.join(timeout=10)


def objects(n: int) -> list[dict[str, Any]]:
    def meta(name: str) -> dict[str, Any]:
        labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, APP_LABEL: APP, ENVIRONMENT_LABEL: ENVIRONMENT}
        return {"name": name, "namespace": NAMESPACE, "labels": labels}

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(APP), "spec": {
        "replicas": 2, "selector": {"matchLabels": {APP_LABEL: APP}},
        "template": {"metadata": {"labels": {APP_LABEL: APP}},
                     "spec": {"containers": [{"name": APP, "image": "registry.local/web:1"}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta(APP),
               "spec": {"selector": {APP_LABEL: APP}, "ports": [{"name": "http", "port": 80}]}}
    maps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{APP}-config-{i:05d}"),
             "data": {"INDEX": str(i), "GREETING": "hello"}} for i in range(n - 2)]
    return [deployment, service, *maps]


def seed_git(folder: Path, files: dict[str, str]) -> GitOpsRepo:
    """A bare GitOps repo whose environment holds ``files``, committed in one go with plain git."""
    work = folder / "work"
    target = work / "environments" / ENVIRONMENT / APP
    target.mkdir(parents=True)
    for name, text in files.items():
        (target / name).write_text(text)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "bench"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(folder / "gitops.git")], check=True)
    return GitOpsRepo(url=str(folder / "gitops.git"))


def measure(n: int, workdir: Path) -> dict[str, Any]:
    sim = RemoteSimulator()
    try:
        desired = objects(n)
        gitops = seed_git(workdir / f"gitops-{n}", files_for(desired))
        seeding = KubernetesRuntime(kubeconfig=sim.kubeconfig)
        seeding.ensure_namespace(NAMESPACE)
        start = time.perf_counter()
        seeding.apply(desired)
        seed_seconds = time.perf_counter() - start
        store = SyncStateStore(Ledger(f"sqlite:///{workdir / f'ledger-{n}.db'}").engine)
        revision = gitops.head()

        def check(mode: str) -> Any:
            config = EnvironmentConfig(namespace=NAMESPACE, runtime="kubernetes-runtime/bench", drift={"mode": mode})
            runtime = KubernetesRuntime(kubeconfig=sim.kubeconfig)
            return check_environment(ENVIRONMENT, config, gitops=gitops, runtime=runtime, revision=revision,
                                     store=store, emitter=None)

        figures: dict[str, Any] = {"objects": n, "seed_s": seed_seconds}
        sim.call("reset")
        start = time.perf_counter()
        report = check("detect")
        figures.update(clean_s=time.perf_counter() - start, clean_requests=sim.call("count"),
                       clean_drift=len(report.drift))

        edited = dict(desired[2], data={"INDEX": "tampered"})
        seeding.apply([edited])
        sim.call("reset")
        start = time.perf_counter()
        report = check("reconcile")
        figures.update(reconcile_s=time.perf_counter() - start, reconcile_requests=sim.call("count"),
                       reconcile_drift=len(report.drift), reconciled=report.reconciled)

        tracemalloc.start()
        check("detect")
        figures["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return figures
    finally:
        sim.stop()


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [100, 1000, 10000]
    print_machine()
    print(f"{'objects':>8} {'requests':>9} {'wall s':>8} {'peak MiB':>9} | {'reconcile: requests':>20} "
          f"{'wall s':>7} {'drift':>6} {'fixed':>6} | {'seed s':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        for n in sizes:
            f = measure(n, Path(tmp))
            print(f"{f['objects']:>8} {f['clean_requests']:>9} {f['clean_s']:>8.2f} {f['peak_mib']:>9.1f} | "
                  f"{f['reconcile_requests']:>20} {f['reconcile_s']:>7.2f} {f['reconcile_drift']:>6} "
                  f"{str(f['reconciled']):>6} | {f['seed_s']:>7.1f}", flush=True)
    print("requests: HTTP requests the simulator served during one check; peak MiB: tracemalloc peak of the"
          " check in this process (the simulator runs in a child process)")


if __name__ == "__main__":
    main(sys.argv[1:])
