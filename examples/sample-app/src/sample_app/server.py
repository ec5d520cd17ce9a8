"""The HTTP service: stdlib only, so the image needs nothing but Python."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sample_app import __version__

DEFAULT_PORT = 8080


def routes() -> dict[str, dict[str, str]]:
    """The answers the service gives, by path."""
    return {
        "/healthz": {"status": "ok"},
        "/version": {"version": __version__, "release": os.environ.get("RELEASE_ID", "")},
    }


class Handler(BaseHTTPRequestHandler):
    """Answers GET with JSON; anything unknown is a 404."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = routes().get(self.path)
        status = 200 if body is not None else 404
        data = json.dumps(body if body is not None else {"error": "not found"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - upstream signature
        """Keep request logs off stderr unless asked."""
        if os.environ.get("SAMPLE_APP_ACCESS_LOG"):
            super().log_message(format, *args)


def make_server(*, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """Create the server (port 0 picks a free port)."""
    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    """Serve until interrupted, on ``PORT`` (default 8080)."""
    server = make_server(port=int(os.environ.get("PORT", DEFAULT_PORT)))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
