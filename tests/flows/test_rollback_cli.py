"""``delivery rollback``: starts the roll_back deployment through the Prefect REST API (MockTransport here)."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from cli.client import DeliveryClient
from cli.main import app
from cli.rollback import start_rollback
from delivery.errors import InvalidInput, NotFound


def prefect_api(seen: list[httpx.Request], *, deployment_exists: bool = True) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/deployments/name/roll_back/roll-back"):
            if not deployment_exists:
                return httpx.Response(404, json={"detail": "Deployment not found"})
            return httpx.Response(200, json={"id": "dep-1"})
        if path.endswith("/deployments/dep-1/create_flow_run"):
            return httpx.Response(201, json={"id": "run-1", "state": {"type": "SCHEDULED"}})
        if path.endswith("/flow_runs/run-1"):
            return httpx.Response(200, json={"id": "run-1", "state": {"type": "COMPLETED", "message": "done"}})
        return httpx.Response(404, json={"detail": f"unexpected {path}"})

    return httpx.MockTransport(handle)


def test_start_rollback_creates_a_tagged_run_of_the_rollback_deployment_and_waits() -> None:
    seen: list[httpx.Request] = []
    with DeliveryClient("http://prefect.test/api", transport=prefect_api(seen), retries=0) as client:
        result = start_rollback(client, environment="staging", app="sample-app", requested_by=" user:alice ",
                                reason="errors after release", timeout=5)
    assert result["state"] == "COMPLETED" and result["flow_run_id"] == "run-1" and result["message"] == "done"
    body = json.loads(next(r for r in seen if r.method == "POST").content)
    request = body["parameters"]["request"]
    assert request["environment"] == "staging" and request["app"] == "sample-app"
    assert request["requested_by"] == "user:alice" and request["reason"] == "errors after release"
    assert request["release_id"] == result["release_id"] and result["release_id"].startswith("rollback-")
    assert f"trace:{result['trace_id']}" in body["tags"] and "environment:staging" in body["tags"]


def test_a_missing_deployment_or_bad_names_are_reported() -> None:
    seen: list[httpx.Request] = []
    with DeliveryClient("http://prefect.test/api", transport=prefect_api(seen, deployment_exists=False),
                        retries=0) as client:
        with pytest.raises(NotFound, match="Deployment not found"):
            start_rollback(client, environment="staging", app="sample-app", requested_by="user:alice")
        with pytest.raises(InvalidInput, match="environment"):
            start_rollback(client, environment="Staging!", app="sample-app", requested_by="user:alice")
        with pytest.raises(InvalidInput, match="requested_by"):
            start_rollback(client, environment="staging", app="sample-app", requested_by="  ")
    assert all(r.method == "GET" for r in seen)


def test_the_cli_refuses_bad_input_with_exit_code_2_and_json() -> None:
    result = CliRunner().invoke(app, ["rollback", "Bad_Env", "sample-app", "--by", "user:alice", "--json",
                                      "--api-url", "http://127.0.0.1:9/api"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["type"] == "InvalidInput"
