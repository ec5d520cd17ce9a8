"""Injected faults: answers the simulator gives instead of serving a request, for tests of retries.

A :class:`Fault` matches a method and a regular expression searched in the request's path (the
query string excluded) and answers the next ``times`` matching requests with a Kubernetes
``Status`` of its code (409 ``Conflict``, 429 ``TooManyRequests``, 500 ``InternalError``, 503
``ServiceUnavailable``...) without touching the store. No ``Retry-After`` header is sent, so the
client does not retry by itself: the caller sees the error, as from a busy or racing API server.
Faults are checked in the order they were added; one request consumes at most one fault.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from .status import ApiError

_REASONS = {
    409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; "
                      "please apply your changes to the latest version and try again"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    500: ("InternalError", "an error on the server has prevented the request from succeeding"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


@dataclass
class Fault:
    """One armed fault: which requests it answers, with what, how often, and how often it did."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int = 1
    message: str = ""
    fired: int = 0

    @property
    def remaining(self) -> int:
        return max(self.times - self.fired, 0)

    def error(self, method: str, path: str) -> ApiError:
        reason, default = _REASONS.get(self.status, ("InternalError", "injected fault"))
        return ApiError(self.status, reason, f"{self.message or default} (injected fault on {method} {path})")


class Faults:
    """The armed faults of one simulator (thread-safe; the HTTP threads consume them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, method: str, path: str, status: int, *, times: int = 1, message: str = "") -> Fault:
        if not 400 <= status <= 599:
            raise ValueError(f"a fault answers an error status (400-599), not {status}")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(method=method.upper(), path=re.compile(path), status=status, times=times, message=message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> ApiError | None:
        """The error to answer for this request, consuming one firing of the first matching fault."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining and fault.method == method and fault.path.search(path):
                    fault.fired += 1
                    return fault.error(method, path)
        return None

    def all(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
