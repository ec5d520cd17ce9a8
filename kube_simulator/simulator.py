"""``KubernetesSimulator``: the store, the HTTP server and the kubelet loop, started together."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from types import TracebackType

import yaml

from .faults import Fault, Faults
from .kubelet import Kubelet
from .server import SimulatorServer
from .store import Store


class KubernetesSimulator:
    """A small Kubernetes API server for demos and tests (not a real cluster).

    Args:
        ready_delay: Seconds after a Deployment's spec change until its rollout completes.
        host: Interface to bind; loopback only by default.
        port: TCP port; 0 picks a free one.
        kubelet: Run the loop that writes Deployment status; off, status changes only through the API.
    """

    def __init__(self, ready_delay: float = 0.3, *, host: str = "127.0.0.1", port: int = 0, kubelet: bool = True):
        self.ready_delay = ready_delay
        self._address = (host, port)
        self.store = Store()
        self.kubelet = Kubelet(self.store, ready_delay=ready_delay) if kubelet else None
        self._faults = Faults()
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._earlier_requests = 0
        self._earlier_by_method: Counter[str] = Counter()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving in background threads; returns the base URL (``http://127.0.0.1:<port>``).

        After :meth:`stop`, ``start`` serves the same objects again on the same port, so a test can
        take the API away for a while and bring it back under the same kubeconfig.
        """
        if self._server is not None:
            return self.url
        self._server = SimulatorServer(self._address, self.store, self._faults)
        self._address = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="simulator-http", daemon=True
        )
        self._thread.start()
        if self.kubelet is not None:
            self.kubelet.start()
        return self.url

    def stop(self) -> None:
        """Stop serving, end open watches and connections, stop the kubelet loop."""
        server, self._server = self._server, None
        if server is not None:
            self._earlier_requests += server.request_count
            self._earlier_by_method += server.requests_by_method
            server.stopping.set()
            server.shutdown()
            server.sever_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.kubelet is not None:
            self.kubelet.stop()

    def __enter__(self) -> KubernetesSimulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def request_count(self) -> int:
        """HTTP requests served since the simulator was created (or the last reset)."""
        return self._earlier_requests + (self._server.request_count if self._server is not None else 0)

    @property
    def requests_by_method(self) -> dict[str, int]:
        """The same requests counted per HTTP method, e.g. ``{"GET": 5, "PATCH": 1}``."""
        counts = self._earlier_by_method + (self._server.requests_by_method if self._server is not None else Counter())
        return dict(counts)

    def reset_request_count(self) -> None:
        """Count requests (in total and per method) from zero again."""
        self._earlier_requests = 0
        self._earlier_by_method = Counter()
        if self._server is not None:
            self._server.reset_request_count()

    def inject_fault(self, method: str, path: str, status: int, *, times: int = 1, message: str = "") -> Fault:
        """Answer the next ``times`` requests matching ``method`` and ``path`` with ``status`` (tests of retries).

        Args:
            method: the HTTP method, e.g. ``PATCH`` (server-side apply and every patch).
            path: a regular expression searched in the request path (query excluded), e.g.
                ``/namespaces/shop-dev/deployments/``.
            status: the error to answer, e.g. 409 or 503; the body is a Kubernetes ``Status``.
            times: how many matching requests fail before the fault is spent.
            message: the Status message (default: the API server's usual text for the code).

        Returns:
            The fault; its ``fired`` attribute counts the requests it answered.
        """
        return self._faults.add(method, path, status, times=times, message=message)

    @property
    def faults(self) -> list[Fault]:
        """Every fault injected since the simulator was created (or the last :meth:`clear_faults`)."""
        return self._faults.all()

    def clear_faults(self) -> None:
        """Disarm every injected fault."""
        self._faults.clear()

    def kubeconfig(self, *, context: str = "simulator", namespace: str = "default") -> str:
        """Kubeconfig YAML pointing at this simulator (the token is accepted but not checked)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "simulator"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
            "preferences": {},
        }
        return yaml.safe_dump(config, sort_keys=False)

    def write_kubeconfig(self, path: str | Path, **options: str) -> Path:
        """Write :meth:`kubeconfig` to ``path`` (parents created); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.kubeconfig(**options))
        return target
