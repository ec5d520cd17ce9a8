"""The SyncDegraded alert: a Prefect automation in the real server calls a webhook on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from delivery.cli.drift import setup_drift_alerts
from delivery.errors import InvalidInput
from delivery.events import EventName, emit


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


def test_sync_degraded_event_calls_the_webhook(prefect_server, webhook):
    first = setup_drift_alerts("http://127.0.0.1:9/unused")
    assert setup_drift_alerts(webhook.url, headers={"Authorization": "Bearer t0ken"}) == first  # updated in place
    emit(EventName.SYNC_DEGRADED, release_id="rel-alert-1", trace_id="t" * 32,
         payload={"environment": "staging", "state": "Degraded", "reason": "PersistentDrift",
                  "message": "1 drifted object(s) in 3 consecutive check(s)", "revision": "abc123"},
         resource={"delivery.environment": "staging"})
    call = webhook.wait_for(lambda body: body.get("environment") == "staging")
    assert call["body"]["alert"] == "delivery.SyncDegraded"
    assert call["body"]["reason"] == "PersistentDrift" and call["body"]["release_id"] == "rel-alert-1"
    assert call["headers"].get("Authorization") == "Bearer t0ken"


def test_alert_setup_refuses_a_non_http_url(prefect_server):
    with pytest.raises(InvalidInput, match="webhook_url"):
        setup_drift_alerts("ftp://example.invalid/hook")
