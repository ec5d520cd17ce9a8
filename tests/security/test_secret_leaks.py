"""No secret leaks out of a release (issue 11, point 7).

One real release of the sample app to dev on the whole wired product (tests/support/release.py),
with a distinctive value on every secret it touches: the image registry block's password (sent on
every registry call of the build's ingestion), the runtime block's kubeconfig token (every
Kubernetes call of the sync and the rollback) and, in the environment of the process that runs
the flow (and of the pipeline it starts), ``DELIVERY_ALERT_WEBHOOK_URL`` with a token in it. A
failpoint exhausts the retries of ``sync_environment`` so an incident is raised and its envelope
written. Then each value, raw, URL-encoded and base64-encoded (in any alignment, so inside a longer
encoded text too), is looked for in: the flow run's logs, the run, its states and its task runs,
every event since the test began, every artifact, every commit of every repository (patches,
messages and trailers), every row of every ledger table, the incident envelope, the persisted task
results and the pipeline runs' folders. Any hit fails the test, saying where it was found.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from support.release import APP, ReleaseStack, wire_release_stack
from support.runtime import wait_for_events

from blocks.image_registry import OciImageRegistry
from blocks.kubernetes_runtime import KubernetesRuntime
from delivery import failpoints
from delivery.settings import block_setting
from tasks.stage import DEFAULT_RETRIES

PAGE = 200


def encodings(secret: str) -> dict[str, bytes]:
    """The secret as it could be written: raw, URL-encoded, base64 (standard and URL-safe) at 3 alignments."""
    raw = secret.encode()
    found = {"raw": raw, "url-encoded": urllib.parse.quote(secret, safe="").encode(),
             "url-encoded (form)": urllib.parse.quote_plus(secret).encode()}
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * shift + raw)
            # Only the characters that depend on the secret's bytes alone, whatever comes before or after.
            start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
            found[f"{name} (offset {shift})"] = text[start:end]
    return found


class Scanner:
    """Looks for every encoding of every secret in each place it is shown, and records the hits."""

    def __init__(self, secrets_: dict[str, str]) -> None:
        self.needles = {(name, form): value for name, secret in secrets_.items()
                        for form, value in encodings(secret).items()}
        self.hits: list[str] = []
        self.scanned: dict[str, int] = {}

    def scan(self, where: str, content: bytes | str) -> None:
        data = content.encode() if isinstance(content, str) else content
        self.scanned[where.split(":")[0]] = self.scanned.get(where.split(":")[0], 0) + 1
        for (name, form), needle in self.needles.items():
            if needle in data:
                at = data.index(needle)
                context = data[max(0, at - 80): at + len(needle) + 40].decode(errors="replace")
                self.hits.append(f"{name} ({form}) in {where}: ...{context}...")


def post_pages(api: str, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        response = httpx.post(f"{api}{path}", json={**body, "limit": PAGE, "offset": offset}, timeout=30)
        response.raise_for_status()
        items = response.json()
        yield from items
        if len(items) < PAGE:
            return
        offset += PAGE


def events_since(api: str, since: datetime) -> Iterator[dict[str, Any]]:
    response = httpx.post(f"{api}/events/filter", json={"filter": {"occurred": {"since": since.isoformat()}},
                                                         "limit": 50}, timeout=30)
    while True:
        response.raise_for_status()
        page = response.json()
        yield from page["events"]
        if not page.get("next_page"):
            return
        response = httpx.get(page["next_page"], timeout=30)


def git(repository: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repository), *args], check=True, capture_output=True, text=True,
                          errors="replace").stdout


def test_no_secret_of_a_release_leaks(services, tmp_path, monkeypatch, ledger, prefect_server):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
    from support.promotion import delivery_yaml

    from flows.release import release

    started = datetime.now(UTC)
    token = secrets.token_hex(6)
    values = {
        "registry password": f"s3cr3t-{token}-registry/p@ss+w=rd",
        "kubeconfig token": f"s3cr3t-{token}-kube-token",
        "alert webhook token": f"s3cr3t-{token}-webhook",
    }
    monkeypatch.setenv("DELIVERY_ALERT_WEBHOOK_URL",
                       f"https://hooks.example.invalid/services/T01/{values['alert webhook token']}?v=1")

    # The runtime block: the simulator accepts any bearer token, so the secret one is really sent.
    kubeconfig = yaml.safe_load(services.sim.kubeconfig())
    kubeconfig["users"][0]["user"]["token"] = values["kubeconfig token"]
    runtime_name = f"secret-rt-{token}"
    KubernetesRuntime(kubeconfig=SecretStr(yaml.safe_dump(kubeconfig))).save(runtime_name, overwrite=True)
    config = delivery_yaml(f"kubernetes-runtime/{runtime_name}")
    for name, environment in config["environments"].items():
        environment["namespace"] = f"sec{token}-{name}"
    stack: ReleaseStack = wire_release_stack(services, tmp_path, monkeypatch, ledger, config=config)

    # The registry block, with credentials (the local registry ignores them; the client sends them).
    registry = OciImageRegistry(url=services.registry.url, username="delivery",
                                password=SecretStr(values["registry password"]))
    registry.save(f"secret-registry-{token}", overwrite=True)
    monkeypatch.setenv(block_setting("image_registry"), f"{registry._block_type_slug}/secret-registry-{token}")

    # An incident: a transient fault at sync, once more than its retries.
    armed = tmp_path / "failpoints"
    monkeypatch.setenv(failpoints.SETTING, str(armed))
    failpoints.arm(armed, *["sync_environment:transient"] * (DEFAULT_RETRIES + 1))

    request = stack.request(target_environment="dev")
    state = release(request, return_state=True)
    assert state.is_failed(), state
    assert failpoints.armed(armed) == []
    [incident] = stack.ledger.incidents()
    assert incident["task"] == "sync_environment"
    # The secrets were used: the image was pushed and verified with the registry block (the runtime
    # block's token by the sync: GitOpsSynced below).
    assert stack.registry_tags()

    scanner = Scanner(values)
    api = prefect_server
    run_id = str(state.state_details.flow_run_id)

    for log in post_pages(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}}):
        scanner.scan(f"log: {log.get('name')}", json.dumps(log))
    assert scanner.scanned.get("log"), "no log of the release run"

    # The run itself (parameters, state messages, history) and its task runs.
    for run in post_pages(api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}}):
        scanner.scan(f"flow run: {run['name']}", json.dumps(run))
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30)
    states.raise_for_status()
    scanner.scan("flow run states", states.text)
    for task_run in post_pages(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}}):
        scanner.scan(f"task run: {task_run['name']}", json.dumps(task_run))
    assert scanner.scanned.get("task run", 0) >= 10

    wait_for_events(api, request.trace_id, ["IncidentRaised", "GitOpsSynced"])
    for event in events_since(api, started):
        scanner.scan(f"event: {event['event']} {event['id']}", json.dumps(event))
    assert scanner.scanned.get("event", 0) >= 10

    for artifact in post_pages(api, "/artifacts/filter", {}):
        scanner.scan(f"artifact: {artifact.get('key')} {artifact['id']}", json.dumps(artifact))
    assert scanner.scanned.get("artifact")

    repositories = sorted(p for p in tmp_path.rglob("*.git") if (p / "HEAD").is_file())
    assert len(repositories) >= 2
    for repository in repositories:
        history = git(repository, "log", "-p", "--all", "--format=commit %H%n%an <%ae>%n%cn <%ce>%n%B%n%N")
        assert "Trace-Id:" in history, repository
        scanner.scan(f"git: {repository.relative_to(tmp_path)}", history)
        scanner.scan(f"git: {repository.relative_to(tmp_path)} refs", git(repository, "for-each-ref"))
    records = Path(stack.host.clone_url(APP)).with_suffix(".prs")
    for record in sorted(p for p in records.rglob("*") if p.is_file()):
        scanner.scan(f"pull request record: {record.name}", record.read_bytes())

    metadata = MetaData()
    metadata.reflect(stack.ledger.engine)
    with stack.ledger.engine.connect() as conn:
        for name, table in metadata.tables.items():
            for row in conn.execute(select(table)):
                scanner.scan(f"ledger: {name}", repr(tuple(row)))
    envelope = stack.ledger.incident(incident["id"])
    assert "sync_environment:transient" in json.dumps(envelope, default=str)
    scanner.scan(f"incident envelope: {incident['id']}", json.dumps(envelope, default=str))

    results = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()
    written = [p for p in results.rglob("*") if p.is_file() and p.stat().st_mtime >= started.timestamp()]
    assert written, f"no task result persisted under {results}"
    for path in sorted(written):  # older results (other tests of the session) cannot hold these fresh values
        scanner.scan(f"result: {path.name}", path.read_bytes())

    for path in sorted(Path(stack.runner.work_dir).rglob("*")):
        if path.is_file() and ".git" not in path.parts:
            scanner.scan(f"pipeline run: {path.relative_to(stack.runner.work_dir)}", path.read_bytes())

    assert not scanner.hits, "secrets leaked:\n" + "\n".join(scanner.hits)
    assert {"log", "event", "artifact", "git", "ledger", "incident envelope", "result"} <= set(scanner.scanned)


def test_the_scanner_finds_a_secret_in_every_form_it_looks_for():
    secret = "s3cr3t-0123-p@ss/w+rd"
    scanner = Scanner({"secret": secret})
    for prefix in ("", "u", "us", "user:"):
        blob = (prefix + secret + "!").encode()
        scanner.scan("base64", b"Authorization: Basic " + base64.b64encode(blob))
        scanner.scan("base64url", base64.urlsafe_b64encode(blob))
    scanner.scan("url", "https://x.invalid/?token=" + urllib.parse.quote(secret, safe=""))
    scanner.scan("raw", json.dumps({"password": secret}))
    scanner.scan("clean", "s3cr3t-0123-p@ss/w+r*d " + base64.b64encode(b"s3cr3t-0123").decode())
    assert {hit.split(" in ")[1].split(":")[0] for hit in scanner.hits} == {"base64", "base64url", "url", "raw"}
