"""`delivery down` stops exactly what `delivery up` recorded, and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.processes import alive, spawn
from cli.stack import down
from cli.stack_info import StackInfo, StackProcess, read_stack, stack_file


def _info(home: Path, processes: list[StackProcess]) -> StackInfo:
    return StackInfo(
        home=str(home), api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", simulator_url="",
        kubeconfig="", registry_url="", git_root="", gitops_repo="", ledger_url="sqlite://", processes=processes,
    )


def test_down_stops_the_recorded_processes_only(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    recorded = [spawn(name, ["sleep", "600"], env=env, logs=tmp_path / "logs", marker="sleep", cwd=tmp_path)
                for name in ("one", "two")]
    bystander = subprocess.Popen(["sleep", "601"], start_new_session=True)
    # a recorded pid whose command line is no longer ours (pid reuse) is left alone
    reused = StackProcess(name="reused", pid=bystander.pid, marker="prefect", log=str(tmp_path / "x.log"))
    stack_file(tmp_path).write_text(_info(tmp_path, [*recorded, reused]).model_dump_json())
    try:
        assert all(alive(p) for p in recorded)
        lines: list[str] = []
        stopped = down(home=tmp_path, say=lines.append)
        assert stopped == ["two", "one"]
        assert not any(alive(p) for p in recorded)
        assert bystander.poll() is None, "a process down did not start was stopped"
        assert read_stack(tmp_path) is None
        assert down(home=tmp_path, say=lines.append) == [] and lines[-1].startswith("nothing to stop")
    finally:
        bystander.kill()
        bystander.wait()


# --------------------------------------------------------------------------- the API credential (no server needed)


def test_the_credential_file_is_created_once_with_mode_0600_and_kept(tmp_path: Path) -> None:
    import os
    import stat

    from delivery.api_auth import ensure_auth_file

    old_umask = os.umask(0)  # even with a permissive umask the file is never world-readable
    try:
        path = ensure_auth_file(tmp_path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    user, _, token = secret.partition(":")
    assert user == "delivery" and len(token) >= 40
    path.chmod(0o644)
    assert ensure_auth_file(tmp_path) == path and path.read_text().strip() == secret  # reused, mode tightened
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stack_info_gives_the_credential_to_processes_but_never_stores_it(tmp_path: Path) -> None:
    from delivery.api_auth import ensure_auth_file

    path = ensure_auth_file(tmp_path)
    secret = path.read_text().strip()
    info = _info(tmp_path, []).model_copy(update={"auth_file": str(path)})
    assert info.auth_string() == secret
    assert info.env()["PREFECT_API_AUTH_STRING"] == secret
    assert "PREFECT_SERVER_API_AUTH_STRING" not in info.env()
    stack_file(tmp_path).write_text(info.model_dump_json())
    assert secret not in stack_file(tmp_path).read_text()
    assert read_stack(tmp_path).auth_string() == secret
    assert "PREFECT_API_AUTH_STRING" not in _info(tmp_path, []).env()  # a stack without one (older stack.json)


def test_the_client_sends_the_credential_from_env_file_or_argument(tmp_path: Path, monkeypatch) -> None:
    import base64

    import httpx

    from cli.client import DeliveryClient
    from delivery.api_auth import ensure_auth_file

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"id": "dep-1"})

    def call(**options) -> str | None:
        with DeliveryClient("http://prefect.test/api", transport=httpx.MockTransport(handler), **options) as client:
            client.deployment_id()
        value = seen.pop()
        return base64.b64decode(value.removeprefix("Basic ")).decode() if value else None

    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("DELIVERY_HOME", str(tmp_path))
    assert call() is None  # no stack, no credential: nothing sent
    secret = ensure_auth_file(tmp_path).read_text().strip()
    assert call() == secret  # the state folder's file
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "delivery:from-env")
    assert call() == "delivery:from-env"  # the environment wins over the file
    assert call(auth_string="delivery:explicit") == "delivery:explicit"


def test_a_refused_call_says_how_to_get_the_credential() -> None:
    import httpx
    import pytest

    from cli.client import DeliveryClient
    from delivery.errors import AuthenticationError

    transport = httpx.MockTransport(lambda request: httpx.Response(401, json={"exception_message": "Unauthorized"}))
    with DeliveryClient("http://prefect.test/api", transport=transport, auth_string="x:y") as client, \
            pytest.raises(AuthenticationError) as refused:
        client.deployment_id()
    message = str(refused.value)
    assert message.startswith("the Prefect API refused the call (401): set PREFECT_API_AUTH_STRING or run "
                              "`delivery up`"), message
    assert "x:y" not in message
