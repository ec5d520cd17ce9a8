"""check_health: rollout gates (and an HTTP probe) on the simulator; the healthy tag moves only on success."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.runtime import APP, FAIL, IMAGE_V2, RuntimeEnv, in_flow, runtime_env

from delivery.config import HttpProbe
from delivery.errors import HealthCheckFailed, InvalidInput
from delivery.manifests import render
from tasks.health import HealthSpec, check_health
from tasks.promote import Promotion, write_promotion
from tasks.sync import SyncSpec, reconcile


@pytest.fixture
def env(tmp_path: Path) -> Iterator[RuntimeEnv]:
    with runtime_env(tmp_path) as environment:
        yield environment


@pytest.fixture
def probe_server() -> Iterator[str]:
    """A tiny HTTP service: /healthz answers 200, anything else 503."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def deployed(env: RuntimeEnv, **options: Any) -> tuple[dict[str, Any], str]:
    spec = env.spec(**options)
    target = spec.target().model_dump()
    revision = write_promotion(env.repo, Promotion(**target, files=render(spec).files)).git_revision
    reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=revision))
    return target, revision


def test_a_ready_rollout_and_a_passing_probe_mark_the_revision_healthy(
    prefect_server: str, env: RuntimeEnv, probe_server: str
) -> None:
    target, revision = deployed(env)
    spec = HealthSpec(**target, git_revision=revision, timeout_seconds=20, poll_seconds=0.05,
                      http_probe=HttpProbe(url=f"{probe_server}/healthz"))

    result = in_flow(lambda: check_health(env.runtime, env.repo, spec))

    assert result.healthy and result.tagged and result.probe_status == 200
    assert [(r.name, r.ready) for r in result.rollouts] == [(APP, True)]
    assert result.rollouts[0].available_replicas == 4
    assert env.repo.healthy_revision(env.environment, APP) == revision
    live = env.runtime.rollout_status(name=APP, namespace=env.namespace)
    assert live.ready == result.healthy  # what the gate reports is the runtime's readiness

    again = check_health.fn(env.runtime, env.repo, spec)
    assert again.healthy and env.repo.healthy_revision(env.environment, APP) == revision


def test_a_rollout_that_never_becomes_ready_fails_the_gate_and_leaves_the_tag(prefect_server: str,
                                                                              env: RuntimeEnv) -> None:
    target, good = deployed(env)
    check_health.fn(env.runtime, env.repo, HealthSpec(**target, git_revision=good, poll_seconds=0.05))
    _, bad = deployed(env, image=IMAGE_V2, values=FAIL, release_id=target["release_id"])

    with pytest.raises(HealthCheckFailed, match="progress deadline"):
        in_flow(lambda: check_health(env.runtime, env.repo, HealthSpec(
            **target, git_revision=bad, timeout_seconds=20, poll_seconds=0.05)))

    assert env.repo.healthy_revision(env.environment, APP) == good
    assert env.runtime.rollout_status(name=APP, namespace=env.namespace).failed


def test_the_gate_times_out_and_a_failing_probe_fails_it(env: RuntimeEnv, probe_server: str) -> None:
    target, revision = deployed(env, values={**FAIL, "progressDeadlineSeconds": 600})
    with pytest.raises(HealthCheckFailed, match="not healthy after 0.3s"):
        check_health.fn(env.runtime, env.repo, HealthSpec(**target, git_revision=revision, timeout_seconds=0.3,
                                                          poll_seconds=0.05, mark_healthy=False))
    target, revision = deployed(env, release_id=target["release_id"])
    with pytest.raises(HealthCheckFailed, match="answered 503, expected 200"):
        check_health.fn(env.runtime, env.repo, HealthSpec(
            **target, git_revision=revision, timeout_seconds=3, poll_seconds=0.1,
            http_probe=HttpProbe(url=f"{probe_server}/broken")))
    assert env.repo.healthy_revision(env.environment, APP) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"git_revision": "abc"}, "git_revision"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"http_probe": {"url": "ftp://x"}}, "http_probe.url"),
        ({"http_probe": {"url": "http://x", "expected_status": 42}}, "http_probe.expected_status"),
        ({"deployments": "web"}, "deployments"),
        ({"extra": 1}, "extra"),
    ],
)
def test_validation_table(env: RuntimeEnv, change: dict[str, Any], field: str) -> None:
    spec = {**env.target(), "git_revision": "0" * 40, **change}
    with pytest.raises(InvalidInput, match=f"check_health: invalid input: {field}"):
        check_health.fn(env.runtime, env.repo, spec)
