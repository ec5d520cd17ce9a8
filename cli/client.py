"""A small typed client of the Prefect REST API for releases: what the CLI and agents call.

It starts releases (``POST /api/deployments/{id}/create_flow_run`` with
``idempotency_key=<release_id>:<revision>``, so a retried call gets the same run), finds the
promotions waiting for approval, approves or rejects them (``POST /api/flow_runs/{id}/resume``,
reading the orchestration ``status`` ACCEPT/REJECT/ABORT rather than the HTTP code: see
:mod:`cli.approval_calls`), and follows runs, events and operations. It never reads the ledger
(:mod:`cli.release_status` puts a release's plans beside its runs). SQLite-backed servers answer
503 under concurrent writes and any server may answer 429: both are retried with backoff. Every
call carries the API credential (``PREFECT_API_AUTH_STRING``, else the local stack's
``<DELIVERY_HOME>/api-auth``); a server that refuses it answers 401, raised as
:class:`AuthenticationError` saying how to get one.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cli.approval_calls import ApprovalCalls
from cli.client_models import Operation, StartedRelease
from cli.stack_info import find_stack
from delivery.api_auth import basic_auth_header
from delivery.errors import (
    AuthenticationError,
    DeliveryError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
    validated,
)
from delivery.events import event_fields, release_events_link, run_link, ui_base_url
from delivery.ids import release_tag, release_tags
from delivery.models import ReleaseRequest, release_run_name
from delivery.signing import sign_request
from delivery.timeline import TRACE_PAGE_SIZE, TraceEvent, collect_trace_events, trace_events_filter

DEFAULT_DEPLOYMENT = "release/release"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
UNAUTHORIZED_HINT = ("set PREFECT_API_AUTH_STRING or run `delivery up` (the local stack keeps its credential in "
                     "<DELIVERY_HOME>/api-auth: export PREFECT_API_AUTH_STRING=$(cat .delivery/api-auth))")


def default_api_url() -> str:
    """``PREFECT_API_URL``, else the found stack's (``stack.json``), else the active Prefect profile's.

    Raises:
        StackNotFound: none of them (see :func:`cli.stack_info.find_stack`).
    """
    return find_stack().require_api()


_ERRORS: dict[str, type[DeliveryError]] = {"InvalidInput": InvalidInput, "NotFound": NotFound}


def _operation_error(deployment: str, message: str) -> DeliveryError:
    """The error an operation's run ended with, as the product's own type when it names one."""
    match = re.match(r"(\w+): (.*)", message.removeprefix("Flow run encountered an exception: "), re.S)
    if match and match[1] in _ERRORS:
        return _ERRORS[match[1]](match[2].strip())
    return DeliveryError(f"{deployment}: {message}")


class DeliveryClient(ApprovalCalls):
    """Typed calls to the Prefect REST API.

    Args:
        api_url: the Prefect API (``.../api``); default ``PREFECT_API_URL``, else the stack
            :func:`~cli.stack_info.find_stack` finds (:class:`~delivery.errors.StackNotFound` when none).
        timeout: per-request timeout in seconds.
        retries: attempts after the first on 429/5xx/connection errors.
        backoff: first retry delay in seconds, doubled each time.
        transport: an httpx transport (tests).
        auth_string: the API credential (HTTP Basic, Prefect's auth string); default
            ``PREFECT_API_AUTH_STRING``, else the found stack's ``api-auth`` (see
            :meth:`~cli.stack_info.StackTarget.auth_string`), else none.
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 6,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        auth_string: str | None = None,
    ) -> None:
        target = find_stack(api_url)
        self.api_url = target.require_api().rstrip("/")
        self.retries = retries
        self.backoff = backoff
        credential = auth_string or target.auth_string(self.api_url)
        headers = basic_auth_header(credential) if credential else {}
        self._http = httpx.Client(base_url=self.api_url + "/", timeout=timeout, transport=transport, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DeliveryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        """One API call, retried with backoff on 429/5xx and connection errors; errors as the product's types."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path.lstrip("/"), json=json)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise TransientError(f"Prefect API at {self.api_url} unreachable: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return self._check(response, method, path)
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, response: httpx.Response, method: str, path: str) -> httpx.Response:
        if response.is_success:
            return response
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        where = f"{method} {path}: HTTP {response.status_code}: {detail}"
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            raise TransientError(where)
        if response.status_code == 401:
            raise AuthenticationError(f"the Prefect API refused the call (401): {UNAUTHORIZED_HINT} [{where}]")
        if response.status_code == 403:
            raise AuthenticationError(where)
        if response.status_code == 404:
            raise NotFound(where)
        if response.status_code in (409, 422):
            raise InvalidInput(where)
        raise PermanentError(where)

    # ------------------------------------------------------------------ releases

    def deployment_id(self, name: str = DEFAULT_DEPLOYMENT) -> str:
        """The id of a deployment named ``<flow>/<deployment>``."""
        flow_name, _, deployment_name = name.partition("/")
        return str(self.request("GET", f"/deployments/name/{flow_name}/{deployment_name}").json()["id"])

    def start_release(
        self, request: ReleaseRequest | Mapping[str, Any], *, deployment: str = DEFAULT_DEPLOYMENT,
        key: Path | None = None,
    ) -> StartedRelease:
        """Start (or find) the release flow run for a request.

        An unsigned request is signed as its planner when a key is at hand (``key``, else
        ``DELIVERY_SIGNING_KEY``, else the keys folder); environments with signed approvals need it.

        Args:
            request: the release request (a model, or its JSON as a mapping, validated here first).
            deployment: the release deployment, ``<flow>/<deployment>``.
            key: the planner's private key.

        Returns:
            The release id, trace id, revision and flow run id; ``created`` is False when the same
            ``release_id:revision`` was started before (the same run is returned).

        Raises:
            InvalidInput: the request is invalid (names the field), here or on the server.
        """
        if not isinstance(request, ReleaseRequest | Mapping):
            raise InvalidInput(f"invalid release request: expected a JSON object, got {type(request).__name__}")
        if not isinstance(request, ReleaseRequest):
            request = validated(ReleaseRequest, dict(request), context="invalid release request")
        request = sign_request(request, key=key)
        deployment_id = self.deployment_id(deployment)
        body = {
            "parameters": {"request": request.model_dump(mode="json")},
            "idempotency_key": f"{request.release_id}:{request.revision}",
            "name": release_run_name(request.release_id, request.revision),
            "tags": release_tags(request.release_id, request.trace_id),
        }
        response = self.request("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)
        run = response.json()
        parameters = (run.get("parameters") or {}).get("request") or {}
        return StartedRelease(
            release_id=request.release_id,
            trace_id=parameters.get("trace_id", request.trace_id),
            revision=request.revision,
            flow_run_id=str(run["id"]),
            flow_run_name=run.get("name") or request.release_id,
            created=response.status_code == 201,
            run_url=self.run_url(str(run["id"])),
            events_url=self.events_url(request.release_id),
        )

    def ui_url(self) -> str | None:
        """The Prefect UI's address: ``PREFECT_UI_URL``, else this client's API address without ``/api``."""
        return ui_base_url(self.api_url)

    def run_url(self, flow_run_id: str) -> str | None:
        """A flow run's page in the Prefect UI."""
        return run_link(flow_run_id, self.ui_url())

    def events_url(self, release_id: str) -> str | None:
        """The Prefect UI's Event feed filtered to a release's events (``delivery.release.<id>``, see events_link)."""
        return release_events_link(release_id, self.ui_url())

    def release_runs(self, release_id: str, *, state_types: list[str] | None = None) -> list[dict[str, Any]]:
        """Every flow run tagged ``release:<id>`` (the release run and its promotion subflows)."""
        criteria: dict[str, Any] = {"tags": {"all_": [release_tag(release_id)]}}
        if state_types:
            criteria["state"] = {"type": {"any_": state_types}}
        body = {"flow_runs": criteria, "sort": "START_TIME_ASC", "limit": 200}
        return list(self.request("POST", "/flow_runs/filter", json=body).json())

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """One flow run as the API returns it."""
        return dict(self.request("GET", f"/flow_runs/{flow_run_id}").json())

    def trace_events(self, trace_id: str, *, limit: int = 500) -> list[TraceEvent]:
        """Every ``delivery.*`` event of a trace, oldest first (the server pages by 50)."""
        first = self.request("POST", "/events/filter",
                             json={"filter": trace_events_filter(trace_id), "limit": TRACE_PAGE_SIZE}).json()
        return collect_trace_events(
            first, lambda url: self.request("GET", url.split("/api/", 1)[-1]).json(), limit=limit)

    def wait_for_run(self, flow_run_id: str, *, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        """Wait until a flow run reaches a final state; return it.

        Raises:
            TransientError: still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(flow_run_id)
            if (run.get("state") or {}).get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return run
            if time.monotonic() >= deadline:
                raise TransientError(f"flow run {flow_run_id} still {run.get('state_name')} after {timeout} s")
            time.sleep(interval)

    # ------------------------------------------------------------------ operations (deployments of flows/operations.py)

    def run_operation(self, deployment: str, parameters: Mapping[str, Any], *, timeout: float = 300.0,
                      idempotency_key: str | None = None) -> Operation:
        """Run an operation's deployment (``retry-release/retry-release``, ...) and wait for its verdict.

        Raises:
            InvalidInput, NotFound: the operation refused, with its message (it changed nothing).
            DeliveryError: it failed otherwise, or did not end within ``timeout`` seconds.
        """
        run = self.create_flow_run(self.deployment_id(deployment), parameters=parameters,
                                   idempotency_key=idempotency_key)
        final = self.wait_for_run(str(run["id"]), timeout=timeout)
        state = final.get("state") or {}
        if state.get("type") != "COMPLETED":
            raise _operation_error(deployment, state.get("message") or state.get("name") or "failed")
        return Operation(deployment=deployment, flow_run_id=str(run["id"]), flow_run_name=final.get("name") or "",
                         state=str(state.get("name")))

    def create_flow_run(
        self,
        deployment_id: str,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a flow run of a deployment; the same ``idempotency_key`` returns the same run."""
        body: dict[str, Any] = {"parameters": dict(parameters), "tags": tags or []}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return self.request("POST", f"/deployments/{deployment_id}/create_flow_run", json=body).json()

    # ------------------------------------------------------------------ events

    def send_event(self, name: str, **fields: Any) -> str:
        """Send ``delivery.<name>`` now (``POST /api/events``), as :func:`delivery.events.emit` would.

        For a command that ends right after: Prefect's own emitter sends from a background queue this
        process may not wait for. ``fields`` are :func:`delivery.events.event_fields`' keyword arguments.

        Returns:
            The event's id.
        """
        event_id = str(uuid.uuid4())
        document = {**event_fields(name, **fields), "id": event_id, "occurred": datetime.now(UTC).isoformat()}
        self.request("POST", "/events", json=[document])
        return event_id


__all__ = ["DEFAULT_DEPLOYMENT", "DeliveryClient", "default_api_url"]
