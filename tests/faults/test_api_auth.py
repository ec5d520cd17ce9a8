"""The stack's Prefect API refuses anonymous callers (on the suite's shared `delivery up` stack).

No credential, or a wrong one: 401; the stack's credential (``<home>/api-auth``, mode 0600): 200.
Only the health probes and the UI's static files and settings stay open; the UI settings tell
the UI that the API needs a credential (``"auth": "BASIC"``: the UI shows its login form and
checks what is typed there with ``GET /api/admin/version``). The secret is in no log, nor in
``stack.json``. The product's client without it fails saying how to get it.
"""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from fault_support import FaultStack

from cli.client import DeliveryClient
from cli.stack_info import stack_file
from delivery.api_auth import basic_auth_header
from delivery.errors import AuthenticationError

FILTER = "/flow_runs/filter"


def _call(stack: FaultStack, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    body = {} if method == "POST" else None
    return httpx.request(method, f"{stack.info.ui_url}{path}", json=body, headers=headers or {},
                         timeout=30).status_code


def test_the_api_refuses_calls_without_the_stack_credential(fault_stack: FaultStack) -> None:
    info = fault_stack.info
    secret = info.auth_string()
    assert secret and secret.startswith("delivery:")
    path = Path(info.auth_file)
    assert path == Path(info.home) / "api-auth"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret

    assert _call(fault_stack, "POST", f"/api{FILTER}") == 401
    assert _call(fault_stack, "POST", f"/api{FILTER}", basic_auth_header("delivery:wrong")) == 401
    assert _call(fault_stack, "POST", f"/api{FILTER}", {"Authorization": "Bearer " + secret}) == 401
    assert _call(fault_stack, "POST", f"/api{FILTER}", basic_auth_header(secret)) == 200
    refused = httpx.post(f"{info.api_url}{FILTER}", json={}, timeout=30)
    assert refused.json() == {"exception_message": "Unauthorized"}

    # what stays open without a credential, and what does not
    anonymous = {f"{m} {p}": _call(fault_stack, m, p) for m, p in [
        ("GET", "/api/health"), ("GET", "/api/ready"), ("GET", "/ui-settings"), ("GET", "/"), ("GET", "/v2/"),
        ("GET", "/docs"), ("GET", "/openapi.json"),
        ("GET", "/api/admin/version"), ("GET", "/api/version"), ("POST", "/api/deployments/filter"),
        ("GET", "/api/block_documents?include_secrets=true"), ("POST", "/api/events/filter"),
        ("GET", "/api/openapi.json"), ("GET", "/api/health/"), ("HEAD", "/api/health")]}
    assert anonymous == {
        "GET /api/health": 200, "GET /api/ready": 200, "GET /ui-settings": 200, "GET /": 200, "GET /v2/": 200,
        "GET /docs": 200, "GET /openapi.json": 200,  # the UI's files, its settings, the API's schema page
        "GET /api/admin/version": 401, "GET /api/version": 401, "POST /api/deployments/filter": 401,
        "GET /api/block_documents?include_secrets=true": 401, "POST /api/events/filter": 401,
        "GET /api/openapi.json": 401, "GET /api/health/": 401, "HEAD /api/health": 401,
    }, anonymous

    # the secret is written nowhere else: not in stack.json, not in any log of the stack
    assert secret not in stack_file(Path(info.home)).read_text()
    logs = [p for p in Path(info.home).rglob("*.log") if p.is_file()]
    assert logs
    leaked = [str(p) for p in logs if secret in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_the_ui_settings_tell_the_ui_to_ask_for_the_credential(fault_stack: FaultStack) -> None:
    settings = httpx.get(f"{fault_stack.info.ui_url}/ui-settings", timeout=30).json()
    assert settings["auth"] == "BASIC"
    assert settings["api_url"] == fault_stack.info.api_url
    # the check the UI's login form makes with what a person typed (base64 of the whole line)
    version = f"{fault_stack.info.api_url}/admin/version"
    assert httpx.get(version, headers=basic_auth_header("delivery:typo"), timeout=30).status_code == 401
    assert httpx.get(version, headers=basic_auth_header(fault_stack.info.auth_string() or ""),
                     timeout=30).status_code == 200


def test_the_client_without_the_credential_fails_saying_how_to_get_it(fault_stack: FaultStack, monkeypatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("DELIVERY_HOME", str(tmp_path))  # a state folder without a credential file
    with DeliveryClient(fault_stack.info.api_url, retries=0) as client, pytest.raises(AuthenticationError) as refused:
        client.deployment_id()
    assert str(refused.value).startswith("the Prefect API refused the call (401): set PREFECT_API_AUTH_STRING or "
                                         "run `delivery up`")
    # the stack's own state folder is enough: the client reads <DELIVERY_HOME>/api-auth
    monkeypatch.setenv("DELIVERY_HOME", fault_stack.info.home)
    with DeliveryClient(fault_stack.info.api_url, retries=0) as client:
        assert client.deployment_id()
