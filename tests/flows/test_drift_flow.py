"""The drift-check flow against the Kubernetes simulator (over HTTP), a real GitOps repo and Prefect.

Out-of-band edits are made with the official Kubernetes client, as an operator with kubectl would.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from support.runtime import wait_until

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from cli.client import default_api_url
from cli.drift import setup_drift_alerts
from delivery.errors import InvalidInput
from delivery.events import EventName, emit
from delivery.labels import (
    APP_LABEL,
    ENVIRONMENT_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RELEASE_ID_ANNOTATION,
    TRACE_ID_ANNOTATION,
    managed_selector,
)
from delivery.ledger import DRIFT_RECONCILED
from delivery.manifest_files import files_for, parse_objects
from delivery.sync_state import SyncState
from delivery.sync_state_store import SyncStateStore
from flows.drift import drift_check
from kube_simulator import KubernetesSimulator
from tasks.drift import DRIFT_ACTOR, check_environment

NAMESPACE = "drift-dev"
REPO_ROOT = Path(__file__).resolve().parents[2]


def manifests(release_id: str, *, image: str = "registry.local/web:1", config_maps: int = 1) -> list[dict]:
    """What a release of app `web` put in Git for `dev` (labelled and annotated like render does)."""

    def meta(name: str) -> dict:
        return {
            "name": name, "namespace": NAMESPACE,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, APP_LABEL: "web", ENVIRONMENT_LABEL: "dev"},
            "annotations": {RELEASE_ID_ANNOTATION: release_id, TRACE_ID_ANNOTATION: "a" * 32},
        }

    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {APP_LABEL: "web"}},
            "template": {
                "metadata": {"labels": {APP_LABEL: "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"name": "http",
                                                                                     "containerPort": 8080}]}]},
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
        "spec": {"selector": {APP_LABEL: "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    maps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"web-config-{i}"), "data": {"GREETING": "hi"}}
            for i in range(config_maps)]
    return [deployment, service, *maps]


@dataclass
class DriftWorld:
    sim: KubernetesSimulator
    runtime: KubernetesRuntime
    gitops: GitOpsRepo
    release_id: str
    store: SyncStateStore

    def configure(self, drift: dict | None = None, **settings) -> None:
        """Write delivery.yaml with the dev environment's drift section (and other settings)."""
        config = {"path": ["dev"], "environments": {"dev": {
            "namespace": NAMESPACE, "runtime": self.runtime_ref, "drift": drift or {}, **settings}}}
        self.gitops.write_files({"delivery.yaml": yaml.safe_dump(config).encode()}, message="Configure drift",
                                trailers=[("Release-Id", self.release_id), ("Trace-Id", "a" * 32)])

    def promote(self, objects: list[dict]) -> None:
        """Put objects in Git for dev/web, apply them and prune the rest, as a promotion and a sync would."""
        files = {name: text.encode() for name, text in files_for(objects).items()}
        self.gitops.write_environment("dev", "web", files, message="Promote web to dev",
                                      trailers=[("Release-Id", self.release_id), ("Trace-Id", "a" * 32)])
        self.runtime.ensure_namespace(NAMESPACE)
        self.runtime.apply(objects)
        self.runtime.prune(objects, selector=managed_selector(environment="dev"))

    @property
    def runtime_ref(self) -> str:
        return f"kubernetes-runtime/{self.name}"

    name: str = ""

    def apps_api(self):
        from kubernetes import client, config

        return client.AppsV1Api(config.new_client_from_config_dict(yaml.safe_load(self.sim.kubeconfig())))

    def core_api(self):
        from kubernetes import client, config

        return client.CoreV1Api(config.new_client_from_config_dict(yaml.safe_load(self.sim.kubeconfig())))

    def set_image(self, image: str) -> None:
        """An operator's out-of-band edit (strategic merge patch by container name)."""
        self.apps_api().patch_namespaced_deployment(
            "web", NAMESPACE, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})

    def live_deployment(self):
        return self.apps_api().read_namespaced_deployment("web", NAMESPACE)

    def check(self) -> dict:
        (report,) = drift_check(environment="dev")
        return report

@pytest.fixture
def world(prefect_server, ledger, tmp_path: Path, monkeypatch) -> Iterator[DriftWorld]:
    name = f"drift-{uuid.uuid4().hex[:8]}"
    with KubernetesSimulator(ready_delay=0.05) as sim:
        runtime = KubernetesRuntime(kubeconfig=sim.kubeconfig())
        runtime.save(name, overwrite=True)
        gitops = GitOpsRepo(url=str(tmp_path / "gitops.git"))
        gitops.ensure_exists()
        gitops.save(name, overwrite=True)
        monkeypatch.setenv("DELIVERY_GITOPS_REPO_BLOCK", f"gitops-repo/{name}")
        world = DriftWorld(sim=sim, runtime=runtime, gitops=gitops, release_id=f"rel-{name}",
                           store=SyncStateStore(ledger.engine), name=name)
        world.configure()
        world.promote(manifests(world.release_id))
        yield world


def _fields(report: dict) -> dict[str, list[str]]:
    return {f"{d['change']} {d['object']['kind']} {d['object']['name']}": d["fields"] for d in report["drift"]}


def test_clean_environment_is_synced(world):
    report = world.check()
    assert report["drift"] == [] and report["status"]["state"] == "Synced"
    assert report["desired_objects"] == 3 and report["live_objects"] == 3


def test_the_sample_apps_rendered_manifests_show_no_false_drift(world):
    from delivery.manifests import ManifestSpec, render, templates_from_dir

    rendered = render(ManifestSpec(
        release_id=world.release_id, trace_id="a" * 32, app="web", environment="dev", namespace=NAMESPACE,
        image="registry.local/web@sha256:" + "b" * 64,
        templates=templates_from_dir(REPO_ROOT / "examples/sample-app/deploy"),
    ))
    objects = rendered.objects()
    world.promote(objects)
    report = world.check()
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap", "Ingress"}
    assert report["drift"] == [] and report["desired_objects"] == len(objects)
    world.apps_api().patch_namespaced_deployment("web", NAMESPACE, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "resources": {"limits": {"cpu": "2"}}}]}}}})
    report = world.check()
    assert _fields(report) == {"changed Deployment web": ["spec.template.spec.containers[web].resources.limits.cpu"]}


def test_out_of_band_edit_is_detected_with_its_path_and_reconciled(world, ledger):
    world.set_image("registry.local/web:hacked")
    report = world.check()
    assert _fields(report) == {"changed Deployment web": ["spec.template.spec.containers[web].image"]}
    assert report["reconciled"] is True and report["remaining"] == []
    assert world.live_deployment().spec.template.spec.containers[0].image == "registry.local/web:1"
    assert report["status"]["state"] == "Synced" and report["status"]["reason"] == "Reconciled"
    assert world.check()["drift"] == []  # second run: nothing left to do
    # the reconcile is a decision of the release dev runs, kept once with its actor and reason
    [kept] = ledger.actions(release_id=world.release_id)
    assert (kept["action"], kept["actor"], kept["detail"]["environment"]) == (DRIFT_RECONCILED, DRIFT_ACTOR, "dev")
    assert kept["reason"] == (f"dev: drift from GitOps revision {report['revision'][:12]} reconciled; re-applied "
                              "changed Deployment drift-dev/web: spec.template.spec.containers[web].image; "
                              "pruned nothing")


def test_detect_mode_reports_but_changes_nothing(world, ledger):
    world.configure({"mode": "detect"})
    world.set_image("registry.local/web:hacked")
    generation = world.live_deployment().metadata.generation
    report = world.check()
    assert _fields(report) == {"changed Deployment web": ["spec.template.spec.containers[web].image"]}
    assert report["reconciled"] is False and len(report["remaining"]) == 1
    live = world.live_deployment()
    assert live.spec.template.spec.containers[0].image == "registry.local/web:hacked"
    assert live.metadata.generation == generation  # no spec write (the kubelet still updates status)
    assert ledger.actions(release_id=world.release_id) == []  # nothing reconciled: no decision taken
    status = world.store.get("dev")
    assert status.state is SyncState.OUT_OF_SYNC and status.reason == "DriftDetected"
    assert "Deployment drift-dev/web" in status.message


def test_each_check_refreshes_the_environments_artifact_with_the_sync_state(world):
    world.configure({"mode": "detect"})
    world.set_image("registry.local/web:hacked")
    world.check()
    response = httpx.get(f"{default_api_url()}/artifacts/environments/latest", timeout=30)
    markdown = response.json()["data"]
    # Git was written directly (no plan in this ledger): the environment is not deployed as far as the
    # ledger knows, and its drift shows with the check's time
    row = next(line for line in markdown.splitlines() if line.startswith("| dev |"))
    assert "not deployed" in row and "| Drifted |" in row  # the overview says Drifted for OutOfSync
    assert world.store.get("dev").checked_at.strftime("%Y-%m-%d %H:%M:%S") in row


def test_missing_and_extra_objects_are_restored_and_pruned(world, ledger):
    core = world.core_api()
    core.delete_namespaced_config_map("web-config-0", NAMESPACE)
    stray = manifests(world.release_id)[2]
    stray["metadata"]["name"] = "web-stray"
    world.runtime.apply([stray])
    report = world.check()
    assert _fields(report) == {"missing ConfigMap web-config-0": [], "extra ConfigMap web-stray": []}
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(NAMESPACE).items}
    assert "web-config-0" in names and "web-stray" not in names
    [kept] = ledger.actions(release_id=world.release_id)
    assert kept["detail"]["applied"] == ["missing ConfigMap drift-dev/web-config-0"]
    assert kept["detail"]["pruned"] == ["extra ConfigMap drift-dev/web-stray"]


def test_unmanaged_objects_are_never_reported_or_touched(world):
    from kubernetes import client

    core = world.core_api()
    core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="someone-elses", labels={"team": "other"}), data={"k": "v"}))
    core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(  # same app and env labels, not ours
        metadata=client.V1ObjectMeta(name="lookalike", labels={APP_LABEL: "web", ENVIRONMENT_LABEL: "dev"})))
    report = world.check()
    assert report["drift"] == [] and report["status"]["state"] == "Synced"
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(NAMESPACE).items}
    assert {"someone-elses", "lookalike"} <= names
    assert core.read_namespaced_config_map("someone-elses", NAMESPACE).data == {"k": "v"}


def test_ignored_fields_are_not_drift_and_are_left_alone(world):
    world.configure({"ignore": ["spec.replicas"]})
    world.apps_api().patch_namespaced_deployment("web", NAMESPACE, {"spec": {"replicas": 5}})  # an autoscaler
    report = world.check()
    assert report["drift"] == [] and report["status"]["state"] == "Synced"
    assert world.live_deployment().spec.replicas == 5


def test_requests_of_a_check_do_not_grow_with_the_number_of_objects(world, ledger):
    counts = {}
    for size in (5, 60):
        world.promote(manifests(world.release_id, config_maps=size))
        runtime = KubernetesRuntime(kubeconfig=world.sim.kubeconfig())
        config = _dev_config(world)
        kwargs = dict(gitops=world.gitops, runtime=runtime, revision=world.gitops.head(), store=world.store,
                      emitter=None)
        check_environment("dev", config, **kwargs)  # warms the client's discovery cache
        world.sim.reset_request_count()
        report = check_environment("dev", config, **kwargs)
        counts[size] = world.sim.request_count
        assert report.desired_objects == size + 2 and report.drift == ()
    assert counts[5] == counts[60] == len(runtime.managed_kinds)  # one LIST per kind, nothing per object


def _dev_config(world: DriftWorld):
    from delivery.config import load_config

    return load_config(world.gitops.read_config(ref=world.gitops.head())).environment("dev")


def test_an_environment_under_promotion_is_skipped_not_taken_for_drift(world, monkeypatch):
    from prefect.concurrency.sync import concurrency

    import tasks.drift
    from tasks.locks import ensure_environment_lock

    default_wait = tasks.drift.LOCK_WAIT_SECONDS
    monkeypatch.setattr(tasks.drift, "LOCK_WAIT_SECONDS", 1.0)
    world.set_image("registry.local/web:2")  # as if a promotion were between its commit and its sync
    with concurrency(ensure_environment_lock("dev"), occupy=1, strict=True):
        (report,) = drift_check(environment="dev")
    assert "promotion holds delivery-env-dev" in report["skipped_reason"]
    assert world.live_deployment().spec.template.spec.containers[0].image == "registry.local/web:2"
    assert world.store.get("dev") is None  # nothing counted
    # The slot is released by a background service: the next check waits for it as a drift run would.
    monkeypatch.setattr(tasks.drift, "LOCK_WAIT_SECONDS", default_wait)
    assert world.check()["reconciled"] is True  # the lock is free again


def test_a_check_that_waited_for_a_promotion_compares_with_what_it_committed(world, monkeypatch):
    from prefect.concurrency.sync import concurrency

    import tasks.drift
    from tasks.locks import ensure_environment_lock

    monkeypatch.setattr(tasks.drift, "LOCK_WAIT_SECONDS", 120.0)
    reports: list[dict] = []
    with concurrency(ensure_environment_lock("dev"), occupy=1, strict=True):  # a promotion holds dev
        checking = threading.Thread(target=lambda: reports.append(world.check()))
        checking.start()
        wait_until(checking_waits_for_lock, timeout=60, what="the drift check waiting for the lock")
        world.promote(manifests(world.release_id, image="registry.local/web:2"))  # its commit and its sync
    checking.join(timeout=120)
    [report] = reports
    assert report["drift"] == [] and report["revision"] == world.gitops.head()
    assert world.live_deployment().spec.template.spec.containers[0].image == "registry.local/web:2"


def checking_waits_for_lock() -> bool:
    """The drift check's task is waiting on the environment lock (its flow run started and reached the lock)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="check_environment_drift"),
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=["RUNNING"]))))
    return bool(runs)


def test_unknown_environment_and_bad_drift_settings_are_refused_naming_the_field(world):
    with pytest.raises(InvalidInput, match="unknown environment 'nope'"):
        drift_check(environment="nope")
    world.configure({"ignore": ["spec..replicas"]})
    with pytest.raises(InvalidInput, match=r"environments\.dev\.drift\.ignore"):
        world.check()


@pytest.mark.parametrize(
    "files,message",
    [
        ({"web/a.yaml": b"kind: [unclosed"}, "web/a.yaml: not valid YAML"),
        ({"web/a.yaml": b"- just\n- a list\n"}, "web/a.yaml: holds something that is not a Kubernetes object"),
    ],
)
def test_malformed_manifests_in_git_are_refused_naming_the_file(files, message):
    with pytest.raises(InvalidInput, match=message):
        parse_objects(files)


def test_manifests_parse_every_document_and_skip_other_files():
    files = {"web/a.yaml": b"kind: ConfigMap\nmetadata: {name: a}\n---\nkind: Secret\nmetadata: {name: b}\n",
             "web/README.md": b"# not a manifest"}
    assert [o["metadata"]["name"] for o in parse_objects(files)] == ["a", "b"]


# --------------------------------------------------------------------------- infrastructure


class FakeStackHandle:
    """The Pulumi CLI boundary answering a refresh preview with a fixed change summary."""

    def __init__(self, summary: dict[str, int]) -> None:
        self.summary = summary

    def set_all_config(self, config) -> None:
        pass

    def preview_refresh(self, *, expect_no_changes: bool) -> dict[str, int]:
        assert expect_no_changes
        return self.summary


class FakeStackBackend:
    def __init__(self, summary: dict[str, int]) -> None:
        self.summary = summary

    def open(self, target, program) -> FakeStackHandle:
        return FakeStackHandle(self.summary)


def test_infrastructure_drift_is_skipped_with_a_reason_without_the_pulumi_cli(world, tmp_path):
    from blocks.pulumi_stack import PulumiStack

    PulumiStack(stack="dev", passphrase="pass", cli_root=str(tmp_path / "no-pulumi")).save(world.name, overwrite=True)
    world.configure(infrastructure=f"pulumi-stack/{world.name}")
    report = world.check()
    infrastructure = report["infrastructure"]
    assert infrastructure["checked"] is False and "Pulumi CLI was not found" in infrastructure["skipped_reason"]
    assert report["status"]["state"] == "Synced"


@pytest.mark.parametrize(
    "summary,changes,state",
    [({"same": 4}, [], "Synced"), ({"same": 3, "update": 1, "delete": 1}, ["delete: 1", "update: 1"], "OutOfSync")],
)
def test_infrastructure_drift_is_reported_like_runtime_drift(world, summary, changes, state):
    from blocks.pulumi_stack import PulumiStack

    world.configure(infrastructure="pulumi-stack/dev-infra")
    stack = PulumiStack(stack="dev", passphrase="pass").use_backend(FakeStackBackend(summary))
    report = check_environment("dev", _dev_config(world), gitops=world.gitops, runtime=world.runtime,
                               revision=world.gitops.head(), store=world.store, emitter=None,
                               load_stack=lambda ref: stack if ref == "pulumi-stack/dev-infra" else None)
    assert report.drift == () and report.infrastructure.checked is True
    assert list(report.infrastructure.changes) == changes
    assert report.status.state.value == state
    if changes:
        assert "infrastructure pulumi-stack/dev-infra: update: 1" in report.summary()
        assert report.status.reason == "DriftDetected"  # the drift check never changes infrastructure


# --------------------------------------------------------------------------- alerts


class WebhookListener:
    """An HTTP listener on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.condition = threading.Condition()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with listener.condition:
                    listener.received.append({"body": json.loads(body), "headers": dict(self.headers)})
                    listener.condition.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate, *, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for item in self.received:
                    if predicate(item["body"]):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching webhook call within {timeout}s; got {self.received}")
                self.condition.wait(remaining)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookListener]:
    listener = WebhookListener()
    yield listener
    listener.close()


def degraded(release_id: str, environment: str) -> None:
    emit(EventName.SYNC_DEGRADED, release_id=release_id, trace_id="t" * 32,
         payload={"environment": environment, "state": "Degraded", "reason": "PersistentDrift",
                  "message": "1 drifted object(s) in 3 consecutive check(s)", "revision": "abc123"},
         resource={"delivery.environment": environment})


def alerts_live(webhook: WebhookListener, **options) -> None:
    """Set up the alert and wait until the server's trigger service has loaded it.

    The trigger service learns of a new or updated automation asynchronously, and an event it
    evaluates before that is not matched: probe with events until one reaches the webhook.
    """
    setup_drift_alerts(webhook.url, **options)
    probe = f"rel-probe-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 90
    while True:
        degraded(probe, "probe")
        try:
            webhook.wait_for(lambda body: body.get("release_id") == probe, timeout=3)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_sync_degraded_event_calls_the_webhook(prefect_server, webhook):
    first = setup_drift_alerts("http://127.0.0.1:9/unused")
    alerts_live(webhook, headers={"Authorization": "Bearer t0ken"})
    assert setup_drift_alerts(webhook.url, headers={"Authorization": "Bearer t0ken"}) == first  # updated in place
    alerts_live(webhook, headers={"Authorization": "Bearer t0ken"})
    degraded("rel-alert-1", "staging")
    call = webhook.wait_for(lambda body: body.get("environment") == "staging")
    assert call["body"]["alert"] == "delivery.SyncDegraded"
    assert call["body"]["reason"] == "PersistentDrift" and call["body"]["release_id"] == "rel-alert-1"
    assert call["headers"].get("Authorization") == "Bearer t0ken"


def test_alert_setup_refuses_a_non_http_url(prefect_server):
    with pytest.raises(InvalidInput, match="webhook_url"):
        setup_drift_alerts("ftp://example.invalid/hook")


def _events(name: str, release_id: str) -> list[dict]:
    import httpx
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"delivery.release.{release_id}"]}}, "limit": 50}
    response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


def _wait_for_events(name: str, release_id: str, *, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = _events(name, release_id)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_drift_that_keeps_coming_back_degrades_alerts_and_recovers(world, webhook):
    alerts_live(webhook)
    world.configure({"degraded_after": 2})
    states = []
    for attempt in range(2):  # someone keeps setting the image back after every reconcile
        world.set_image(f"registry.local/web:hotfix-{attempt}")
        report = world.check()
        assert report["reconciled"] is True
        states.append((report["status"]["state"], report["status"]["consecutive_drift"]))
    assert states == [("Synced", 1), ("Degraded", 2)]
    status = world.store.get("dev")
    assert status.reason == "PersistentDrift" and "2 consecutive check(s)" in status.message

    alert = webhook.wait_for(lambda body: body.get("release_id") == world.release_id)
    assert alert["body"]["alert"] == "delivery.SyncDegraded" and alert["body"]["state"] == "Degraded"
    assert "spec.template.spec.containers[web].image" in alert["body"]["message"]

    report = world.check()  # the culprit stopped: nothing drifts
    assert report["drift"] == [] and report["status"]["state"] == "Synced"
    assert world.store.get("dev").state is SyncState.SYNCED
    recovered = _wait_for_events("delivery.SyncRecovered", world.release_id)
    assert recovered and recovered[0]["payload"]["state"] == "Synced"
    assert len(_wait_for_events("delivery.DriftDetected", world.release_id)) == 2


# --------------------------------------------------------------------------- the scheduled deployment


def _drift_deployment_entry() -> dict:
    document = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    (entry,) = [d for d in document["deployments"] if d["name"] == "drift-check"]
    return entry


def test_prefect_yaml_schedules_the_drift_check_every_five_minutes():
    from prefect.flows import load_flow_from_entrypoint

    entry = _drift_deployment_entry()
    assert [s["cron"] for s in entry["schedules"]] == ["*/5 * * * *"]
    assert load_flow_from_entrypoint(str(REPO_ROOT / entry["entrypoint"])).name == "drift-check"


def test_the_deployment_from_prefect_yaml_runs_the_check_through_the_cli(world):
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from cli.main import app

    pool = f"drift-test-{world.name}"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    prefect = [sys.executable, "-m", "prefect"]
    deployed = subprocess.run([*prefect, "--no-prompt", "deploy", "--name", "drift-check", "--pool", pool],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("drift-check/drift-check")
    assert [s.schedule.cron for s in deployment.schedules] == ["*/5 * * * *"]

    world.set_image("registry.local/web:hacked")
    worker = subprocess.Popen([*prefect, "worker", "start", "--pool", pool, "--type", "process"], cwd=REPO_ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = CliRunner().invoke(app, ["drift", "check", "--env", "dev", "--json", "--timeout", "240"])
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert result.exit_code == 0, result.output
    output = json.loads(result.output)
    (report,) = output["reports"]
    assert _fields(report) == {"changed Deployment web": ["spec.template.spec.containers[web].image"]}
    assert report["reconciled"] is True
    assert world.live_deployment().spec.template.spec.containers[0].image == "registry.local/web:1"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(output["flow_run_id"])
    assert run.deployment_id == deployment.id


# --------------------------------------------------------------------------- the CLI's other commands


def test_cli_status_reads_the_sync_states_from_the_ledger(world):
    from typer.testing import CliRunner

    from cli.main import app

    world.set_image("registry.local/web:hacked")
    world.configure({"mode": "detect"})
    world.check()
    result = CliRunner().invoke(app, ["drift", "status", "--json"])
    assert result.exit_code == 0, result.output
    (status,) = json.loads(result.output)
    assert status["environment"] == "dev" and status["state"] == "OutOfSync" and status["reason"] == "DriftDetected"
    table = CliRunner().invoke(app, ["drift", "status"], env={"COLUMNS": "200"})
    assert "OutOfSync" in table.output and "DriftDetected" in table.output


def test_cli_errors_are_clear(prefect_server):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["drift", "alerts", "--webhook", "ftp://example.invalid", "--json"])
    assert result.exit_code == 1 and "webhook_url must be an http" in json.loads(result.stderr)["error"]
    result = CliRunner().invoke(app, ["drift", "check", "--deployment", "drift-check/missing", "--json"])
    assert result.exit_code == 1 and "could not run drift-check/missing" in json.loads(result.stderr)["error"]


def test_alert_setup_from_the_environment(prefect_server, monkeypatch):
    from prefect.automations import Automation

    from cli.drift import ALERT_AUTOMATION, setup_drift_alerts_from_env

    monkeypatch.delenv("DELIVERY_ALERT_WEBHOOK_URL", raising=False)
    assert setup_drift_alerts_from_env() is None
    monkeypatch.setenv("DELIVERY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    automation_id = setup_drift_alerts_from_env()
    automation = Automation.read(name=ALERT_AUTOMATION)
    assert automation.id == automation_id and automation.enabled
    assert automation.trigger.expect == {"delivery.SyncDegraded"}
