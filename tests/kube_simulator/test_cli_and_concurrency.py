"""`delivery simulator` as a process, and the server under concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from k8s_helpers import configmap, wait_for
from kubernetes import client, config
from typer.testing import CliRunner

# The command's own module, run as a process (the full CLI would also import Prefect: slow to start).
_RUN_COMMAND = "import typer; from cli.simulator import simulator; typer.run(simulator)"


def test_cli_serves_writes_a_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kube" / "config"
    env = {**os.environ, "DELIVERY_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-c", _RUN_COMMAND, "--port", "0", "--kubeconfig", str(kubeconfig), "--ready-delay", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: kubeconfig.exists() and kubeconfig.stat().st_size > 0, timeout=60, interval=0.1)
        with config.new_client_from_config(config_file=str(kubeconfig)) as api:
            names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
        assert "default" in names
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "listening on http://127.0.0.1:" in out and "simulator stopped" in out


def test_cli_is_registered_and_validates_its_options() -> None:
    from cli.main import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["simulator", "--help"], env={"COLUMNS": "200"})
    assert help_text.exit_code == 0 and "--ready-delay" in help_text.output and "--kubeconfig" in help_text.output
    refused = runner.invoke(app, ["simulator", "--ready-delay", "-1"], env={"COLUMNS": "200"})
    assert refused.exit_code != 0 and "--ready-delay" in refused.output


def test_concurrent_writers_get_unique_versions_and_lose_nothing(sim, api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, configmap("counter", data={"n": "0"}))
    versions: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        try:
            for i in range(15):
                created = core.create_namespaced_config_map(ns, configmap(f"w{worker}-{i}", {"worker": str(worker)}))
                while True:  # optimistic concurrency on one shared object, retried on 409
                    current = core.read_namespaced_config_map("counter", ns)
                    current.data["n"] = str(int(current.data["n"]) + 1)
                    try:
                        updated = core.replace_namespaced_config_map("counter", ns, current)
                        break
                    except client.ApiException as exc:
                        if exc.status != 409:
                            raise
                with lock:
                    versions.extend([int(created.metadata.resource_version), int(updated.metadata.resource_version)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(versions) == len(set(versions)) == 6 * 15 * 2
    assert core.read_namespaced_config_map("counter", ns).data["n"] == str(6 * 15)
    assert len(core.list_namespaced_config_map(ns, label_selector="worker").items) == 6 * 15
