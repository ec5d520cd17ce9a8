"""Stage 11 on the real Prefect server, with a recording fake of the Pulumi CLI boundary."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from pydantic import SecretStr
from support.runtime import wait_until

from blocks.pulumi_stack import PulumiStack
from delivery.errors import InvalidInput
from infra.stack_values import PulumiCommandFailed, StackLocked, StackOutput
from infra.testing import RecordingBackend, cli_error, locked_error
from tasks.infrastructure import (
    InfrastructureRequest,
    InfrastructureResult,
    kubernetes_runtime_settings,
    load_stack,
    provision_if_configured,
    provision_infrastructure,
    stack_ref_of,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

PASSPHRASE = "stage-passphrase-5e1c0d"
CLIENT_SECRET = "stage-client-secret-a8f2"
CLIENT_ID = "stage-client-id-77aa"
KUBECONFIG = "apiVersion: v1\nusers:\n- name: clusterUser\n  user: {token: stage-kube-token-3b9e}\n"
SECRETS = (PASSPHRASE, CLIENT_SECRET, CLIENT_ID, KUBECONFIG, "stage-kube-token-3b9e")

# Flow parameters are stored by the server, so the fakes travel by key, never as parameters.
FAKES: dict[str, RecordingBackend] = {}


def platform_outputs(release_id: str) -> dict[str, Any]:
    return {
        "resource_group_name": "rg-delivery-dev",
        "registry_login_server": "acrdeliverydev.azurecr.io",
        "cluster_name": "aks-delivery-dev",
        "log_analytics_workspace_id": "/subscriptions/sub/resourceGroups/rg-delivery-dev/workspaces/log",
        "kubeconfig": StackOutput(value=KUBECONFIG, secret=True),
        "release_id": release_id,
        "trace_id": "trace",
    }


def make_block(fake: RecordingBackend | None = None, **overrides: Any) -> PulumiStack:
    settings = {
        "stack": "dev",
        "passphrase": SecretStr(PASSPHRASE),
        "azure_client_id": SecretStr(CLIENT_ID),
        "azure_client_secret": SecretStr(CLIENT_SECRET),
        "lock_attempts": 1,
        **overrides,
    }
    block = PulumiStack(**settings)
    return block.use_backend(fake, sleep=lambda _s: None) if fake is not None else block


def new_request(environment: str = "dev", release_id: str | None = None) -> InfrastructureRequest:
    return InfrastructureRequest(
        release_id=release_id or f"rel-infra-{uuid.uuid4().hex[:8]}",
        trace_id=uuid.uuid4().hex,
        environment=environment,
    )


@flow(name="provision-infrastructure-test")
def provision_flow(fake_key: str, request: InfrastructureRequest) -> InfrastructureResult:
    return provision_infrastructure(make_block(FAKES[fake_key]), request)


def run(fake: RecordingBackend, request: InfrastructureRequest):
    key = uuid.uuid4().hex
    FAKES[key] = fake
    return provision_flow(key, request, return_state=True)


def events_of(api: str, trace_id: str) -> list[dict[str, Any]]:
    body = {"filter": {"related": {"id": [f"delivery.trace.{trace_id}"]}}, "limit": 50}
    response = httpx.post(f"{api}/events/filter", json=body)
    response.raise_for_status()
    return response.json()["events"]


def logs_of(api: str, flow_run_id: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    response.raise_for_status()
    return response.json()


def task_runs_of(api: str, flow_run_id: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})
    response.raise_for_status()
    return response.json()


# --------------------------------------------------------------------------- the stage


def test_provisions_and_emits_the_change_summary_and_public_outputs(prefect_server: str) -> None:
    request = new_request()
    fake = RecordingBackend(changes={"create": 5}, outputs=platform_outputs(request.release_id))

    state = run(fake, request)
    result = state.result()

    assert [c for c in fake.calls if c in ("preview", "up")] == ["preview", "up"]
    assert result.changed is True and result.change_summary == {"create": 5}
    assert result.cluster is not None
    assert (result.cluster.name, result.cluster.resource_group) == ("aks-delivery-dev", "rg-delivery-dev")
    assert result.cluster.registry_login_server == "acrdeliverydev.azurecr.io"
    assert result.secret_outputs == ["kubeconfig"] and "kubeconfig" not in result.outputs
    assert fake.config["azure-native:location"].value == "westeurope"

    events = wait_until(
        lambda: [e for e in events_of(prefect_server, request.trace_id)
                 if e["event"] == "delivery.InfrastructureProvisioned"],
        timeout=20.0, interval=0.25, what="InfrastructureProvisioned",
    )
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == f"delivery.release.{request.release_id}"
    assert event["resource"]["delivery.environment"] == "dev"
    payload = event["payload"]
    assert payload["change_summary"] == {"create": 5} and payload["changed"] is True
    assert payload["outputs"]["cluster_name"] == "aks-delivery-dev"
    assert payload["outputs"]["registry_login_server"] == "acrdeliverydev.azurecr.io"
    assert payload["secret_outputs"] == ["kubeconfig"]

    # The cluster output feeds the environment's runtime; the kubeconfig is read from the stack now.
    settings = kubernetes_runtime_settings(make_block(fake), result)
    assert settings is not None and settings["context"] == "aks-delivery-dev"
    assert settings["kubeconfig"].get_secret_value() == KUBECONFIG


def test_second_run_is_a_no_op(prefect_server: str) -> None:
    request = new_request()
    fake = RecordingBackend(outputs=platform_outputs(request.release_id))
    first = run(fake, request).result()
    calls_after_first = list(fake.calls)

    again = run(fake, request)

    assert again.result() == first
    assert fake.calls == calls_after_first  # resumed from the persisted result: Pulumi not called
    flow_run_id = str(again.state_details.flow_run_id)
    (task_run,) = task_runs_of(prefect_server, flow_run_id)
    assert task_run["state"]["name"] == "Cached"


def test_a_later_release_without_real_changes_applies_nothing() -> None:
    fake = RecordingBackend(changes={"create": 5}, outputs=platform_outputs("rel-earlier"))
    run(fake, new_request(release_id="rel-earlier")).result()
    ups = fake.count("up")

    result = run(fake, new_request()).result()

    # Previewed as if only the release stamp changed: nothing else differs, so no up and no new stamp.
    assert fake.count("up") == ups == 1
    assert result.changed is False
    assert result.outputs["release_id"] == "rel-earlier"


def test_failed_apply_is_reconciled_before_the_stage_retries(prefect_server: str) -> None:
    request = new_request()
    fake = RecordingBackend(changes={"update": 1}, outputs=platform_outputs(request.release_id))
    fake.fail("up", locked_error())  # lock_attempts=1: the first attempt of the stage fails transiently

    state = run(fake, request)
    result = state.result()

    assert [c for c in fake.calls if c in ("preview", "up", "refresh")] == [
        "preview", "up",             # first attempt: locked
        "refresh", "preview", "up",  # stage retry: reconcile with the state, preview again, apply
    ]
    assert result.changed is True and result.reconciled is True
    (task_run,) = task_runs_of(prefect_server, str(state.state_details.flow_run_id))
    assert task_run["run_count"] == 2 and task_run["state"]["type"] == "COMPLETED"


def test_permanent_failure_is_not_retried() -> None:
    fake = RecordingBackend().fail("preview", cli_error("CompilationError", stdout="x.py: syntax error: bad"))

    state = run(fake, new_request())

    with pytest.raises(PulumiCommandFailed, match="syntax error: bad"):
        state.result()
    assert fake.count("preview") == 1


@pytest.mark.parametrize(
    ("block_overrides", "request_overrides", "field"),
    [
        ({"platform": {"registry_sku": "Gold"}}, {}, "platform.registry_sku"),
        ({"platform": {"node_count": 0}}, {}, "platform.node_count"),
        ({"platform": {"nodes": 3}}, {}, "platform.nodes"),
        ({"platform": {"environment": "prod"}}, {}, "platform.environment"),
        ({"location": "West Europe"}, {}, "platform.location"),
        ({"stack": "has space"}, {}, "PulumiStack.stack"),
        ({"passphrase": None}, {}, "passphrase"),
        ({}, {"environment": "Prod!"}, "request.environment"),
        ({}, {"release_id": ""}, "request.release_id"),
    ],
)
def test_bad_configuration_is_invalid_input_naming_the_field(
    block_overrides: dict[str, Any], request_overrides: dict[str, Any], field: str
) -> None:
    fake = RecordingBackend()
    ids = {"release_id": "rel-x", "trace_id": "trace-x", "revision": 1, "environment": "dev", **request_overrides}

    with pytest.raises(InvalidInput) as caught:
        provision_infrastructure.fn(make_block(fake, **block_overrides), ids)

    assert field in str(caught.value)
    assert [c for c in fake.calls if c in ("preview", "up")] == []  # nothing ran


# --------------------------------------------------------------------------- the promotion hook


def test_provision_if_configured_calls_the_stage_only_with_a_stack() -> None:
    class Settings:
        def __init__(self, infrastructure: str | None) -> None:
            self.infrastructure = infrastructure

    request = new_request()
    fake = RecordingBackend(outputs=platform_outputs(request.release_id))
    loaded: list[str] = []

    def load(ref: str) -> PulumiStack:
        loaded.append(ref)
        return load_stack(ref).use_backend(fake)

    make_block(stack="hooked").save("test-hooked-dev", overwrite=True)

    @flow(name="promotion-hook-test")
    def promote(settings_ref: str | None) -> InfrastructureResult | None:
        return provision_if_configured(request, Settings(settings_ref), load=load)

    assert promote(None) is None
    assert loaded == [] and fake.calls == []

    result = promote("pulumi-stack/test-hooked-dev")
    assert loaded == ["pulumi-stack/test-hooked-dev"]
    assert isinstance(result, InfrastructureResult) and result.stack == "hooked"
    assert fake.count("preview") == 1 and fake.targets[0].stack == "hooked"


def test_stack_ref_of() -> None:
    assert stack_ref_of(None) is None and stack_ref_of("") is None
    assert stack_ref_of("pulumi-stack/dev") == "pulumi-stack/dev"
    assert stack_ref_of(type("S", (), {"infrastructure": None})()) is None


# --------------------------------------------------------------------------- secrets


def test_no_secret_reaches_logs_events_artifacts_or_the_ledger(
    prefect_server: str, ledger, caplog: pytest.LogCaptureFixture
) -> None:
    ok_request = new_request()
    ok = run(RecordingBackend(outputs=platform_outputs(ok_request.release_id)), ok_request)
    ok.result()
    failing_request = new_request()
    cli_output = f"error: client {CLIENT_ID} with secret {CLIENT_SECRET} refused; passphrase {PASSPHRASE}"
    bad = run(RecordingBackend().fail("up", cli_error(stderr=cli_output)), failing_request)
    with pytest.raises(PulumiCommandFailed):
        bad.result()
    # A lock that outlasts every stage retry becomes an incident, whose envelope keeps the traceback.
    locked_request = new_request()
    locked_cli = cli_error("ConcurrentUpdateError", stderr=f"the stack is currently locked by {CLIENT_SECRET}")
    locked = run(RecordingBackend().fail("up", locked_cli, times=10), locked_request)
    with pytest.raises(StackLocked):
        locked.result()

    seen: list[str] = [caplog.text]
    for state, request, expected_line, expected_event in (
        (ok, ok_request, "infrastructure of", "delivery.InfrastructureProvisioned"),
        (bad, failing_request, "refused", None),
        (locked, locked_request, "locked", "delivery.IncidentRaised"),
    ):
        flow_run_id = str(state.state_details.flow_run_id)
        logs = wait_until(
            lambda fid=flow_run_id, line=expected_line: [e["message"] for e in logs_of(prefect_server, fid)]
            if any(line in e["message"] for e in logs_of(prefect_server, fid)) else None,
            timeout=20.0, interval=0.25, what="the run's logs",
        )
        seen.extend(logs)
        seen.extend(str(task_run) for task_run in task_runs_of(prefect_server, flow_run_id))
        seen.append(httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}").text)
        artifacts = httpx.post(
            f"{prefect_server}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        ).json()
        seen.extend(str(a) for a in artifacts)
        if expected_event:
            wait_until(
                lambda tid=request.trace_id, name=expected_event: any(
                    e["event"] == name for e in events_of(prefect_server, tid)
                ),
                timeout=20.0, interval=0.25, what=expected_event,
            )
        seen.extend(str(e) for e in events_of(prefect_server, request.trace_id))
    incidents = [i for i in ledger.incidents() if i.get("release_id") == locked_request.release_id]
    assert incidents, "the exhausted lock should have raised an incident"
    seen.extend(str(ledger.incident(i["id"])) for i in incidents)

    # Persisted task results (the resume state) are scanned as bytes too.
    results = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    stored = b"".join(f.read_bytes() for f in results.rglob("*") if f.is_file()) if results.exists() else b""
    assert [s for s in SECRETS if s.encode() in stored] == []

    scanned = "\n".join(seen)
    # The scan covered what happened: the success line, the failures' CLI messages, the events, the incident.
    assert "infrastructure of dev" in scanned
    assert "refused" in scanned and "***" in scanned
    assert "delivery.InfrastructureProvisioned" in scanned and "delivery.IncidentRaised" in scanned
    assert "Traceback" in scanned
    leaked = [secret for secret in SECRETS if secret in scanned]
    assert leaked == []
