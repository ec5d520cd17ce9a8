"""Timing of the Kubernetes API simulator with many objects (figures printed; nothing asserted).

Usage: .venv/bin/python bench/simulator.py [N ...]    (default: 1000 10000)

Each run starts a fresh simulator in its own process (`delivery simulator`, so the client's work
does not share its interpreter), creates N ConfigMaps and N/10 Deployments in 10 namespaces
through the official client, then times single GETs, a labelled LIST, a full LIST and a
server-side apply, as raw HTTP bodies and through the typed client. It then times the store
alone, in process, without HTTP.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _machine import print_machine
from kubernetes import client, config

from kube_simulator.resources import BY_PATH
from kube_simulator.store import Store

NAMESPACES = 10


def _timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def _configmap(i: int) -> dict:
    labels = {"app": f"app-{i % 50}", "tier": "web" if i % 2 else "db"}
    return {"metadata": {"name": f"cm-{i:06d}", "labels": labels}, "data": {"index": str(i), "payload": "x" * 200}}


def _deployment(i: int) -> dict:
    labels = {"app": f"dep-{i}"}
    pod = {"containers": [{"name": "web", "image": f"registry.local/web:{i}", "ports": [{"containerPort": 8080}]}]}
    spec = {
        "replicas": 2,
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"dep-{i:06d}", "labels": labels},
        "spec": spec,
    }


_SERVE = "import typer; from cli.simulator import simulator; typer.run(simulator)"


def _serve(kubeconfig: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", _SERVE, "--port", "0", "--kubeconfig", str(kubeconfig), "--ready-delay", "0.5"]
    env = {**os.environ, "DELIVERY_HOME": str(kubeconfig.parent)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not (kubeconfig.exists() and kubeconfig.stat().st_size):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the simulator did not start")
        time.sleep(0.1)
    return process


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = _serve(Path(tmp) / "kubeconfig")
        try:
            _over_http(n, Path(tmp) / "kubeconfig")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    _in_process(n)


def _in_process(n: int) -> None:
    store = Store()
    namespaces, configmaps = BY_PATH[("", "v1", "namespaces")], BY_PATH[("", "v1", "configmaps")]
    for k in range(NAMESPACES):
        store.create(namespaces, None, {"metadata": {"name": f"ns-{k}"}}, manager="bench")
    start = time.perf_counter()
    for i in range(n):
        store.create(configmaps, f"ns-{i % NAMESPACES}", _configmap(i), manager="bench")
    create_s = time.perf_counter() - start
    get_s, _ = _timed(lambda: store.get(configmaps, "ns-7", "cm-000007"), repeat=1000)
    list_s, _ = _timed(lambda: store.list(configmaps, None), repeat=5)
    ns_s, _ = _timed(lambda: store.list(configmaps, "ns-3"), repeat=20)
    print(f"  store only: create {create_s / n * 1e6:.0f} us/object, get {get_s * 1e6:.1f} us, ", end="")
    print(f"list one namespace {ns_s * 1000:.1f} ms, list all {list_s * 1000:.1f} ms")


def _over_http(n: int, kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    for k in range(NAMESPACES):
        core.create_namespace({"metadata": {"name": f"ns-{k}"}})

    def create(i: int) -> None:
        core.create_namespaced_config_map(f"ns-{i % NAMESPACES}", _configmap(i), _preload_content=False).read()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, range(n)))
    create_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n // 10):
        apps.create_namespaced_deployment(f"ns-{i % NAMESPACES}", _deployment(i), _preload_content=False).read()
    deploy_s = time.perf_counter() - start

    def raw(fn: Callable[..., object], *args: object, **kwargs: object) -> Callable[[], int]:
        return lambda: len(fn(*args, _preload_content=False, **kwargs).read())

    get_raw, _ = _timed(raw(core.read_namespaced_config_map, "cm-000007", "ns-7"), repeat=200)
    get_typed, _ = _timed(lambda: core.read_namespaced_config_map("cm-000007", "ns-7"), repeat=100)
    sel_raw, _ = _timed(raw(core.list_namespaced_config_map, "ns-3", label_selector="app=app-3,tier=web"), 20)
    all_raw, size = _timed(raw(core.list_config_map_for_all_namespaces), repeat=3)
    all_typed, listed = _timed(lambda: core.list_config_map_for_all_namespaces(), repeat=1)
    field_raw, _ = _timed(raw(core.list_config_map_for_all_namespaces, field_selector="metadata.name=cm-000042"), 20)
    body = {**_configmap(5), "apiVersion": "v1", "kind": "ConfigMap"}
    body["data"] = {"index": "changed"}
    apply_raw, _ = _timed(
        raw(
            core.patch_namespaced_config_map,
            "cm-000005",
            "ns-5",
            body,
            field_manager="bench",
            force=True,
            _content_type="application/apply-patch+yaml",
        ),
        repeat=50,
    )

    print(f"N={n} ConfigMaps in {NAMESPACES} namespaces, {n // 10} Deployments")
    print(f"  create ConfigMaps (4 client threads) {create_s:8.2f} s  ({n / create_s:8.0f} objects/s)")
    print(f"  create Deployments (sequential)     {deploy_s:8.2f} s  ({(n // 10) / deploy_s:8.0f} objects/s)")
    print(f"  GET one object, raw                 {get_raw * 1000:8.2f} ms")
    print(f"  GET one object, typed client        {get_typed * 1000:8.2f} ms")
    print(f"  LIST one namespace + label selector {sel_raw * 1000:8.2f} ms (raw)")
    print(f"  LIST all namespaces, fieldSelector  {field_raw * 1000:8.2f} ms (raw, metadata.name)")
    print(f"  LIST all namespaces, raw            {all_raw * 1000:8.2f} ms ({size / 1e6:.1f} MB)")
    print(f"  LIST all namespaces, typed client   {all_typed * 1000:8.2f} ms ({len(listed.items)} items)")
    print(f"  server-side apply (force), raw      {apply_raw * 1000:8.2f} ms")
    api.close()


if __name__ == "__main__":
    print_machine()
    for count in [int(a) for a in sys.argv[1:]] or [1000, 10000]:
        run(count)
