"""A small typed client of the Prefect REST API for releases: what the CLI and agents call.

It starts releases (``POST /api/deployments/{id}/create_flow_run`` with
``idempotency_key=<release_id>:<revision>``, so a retried call gets the same run), finds the
promotions waiting for approval, approves or rejects them (``POST /api/flow_runs/{id}/resume``,
reading the orchestration ``status`` ACCEPT/REJECT/ABORT rather than the HTTP code), and reports
a release's status (plans from the ledger, flow runs from Prefect). SQLite-backed servers answer
503 under concurrent writes and any server may answer 429: both are retried with backoff. Every
call carries the API credential (``PREFECT_API_AUTH_STRING``, else the local stack's
``<DELIVERY_HOME>/api-auth``); a server that refuses it answers 401, raised as
:class:`AuthenticationError` saying how to get one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cli.stack import find_stack
from delivery.api_auth import basic_auth_header
from delivery.approvals import ApprovalInput
from delivery.errors import (
    ApprovalRefused,
    AuthenticationError,
    DeliveryError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
    validated,
)
from delivery.events import release_events_link, ui_base_url
from delivery.identity import Statement, sign
from delivery.models import Decision, ReleaseRequest, release_run_name
from delivery.plan import PlanState
from delivery.signing import find_signing_key, sign_request

if TYPE_CHECKING:  # the overview reads the ledger: imported where used
    from delivery.overview import OverviewRow

DEFAULT_DEPLOYMENT = "release/release"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
UNAUTHORIZED_HINT = ("set PREFECT_API_AUTH_STRING or run `delivery up` (the local stack keeps its credential in "
                     "<DELIVERY_HOME>/api-auth: export PREFECT_API_AUTH_STRING=$(cat .delivery/api-auth))")


class ClientModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartedRelease(ClientModel):
    """What ``start_release`` returns."""

    release_id: str
    trace_id: str
    revision: int
    flow_run_id: str
    flow_run_name: str
    created: bool = Field(description="False when the idempotency key returned an existing run")
    run_url: str | None = Field(default=None, description="The release run's page in the Prefect UI")
    events_url: str | None = Field(default=None, description="The Prefect UI's Event feed filtered to the release")


class PausedRun(ClientModel):
    """A release run waiting for a decision in one environment (suspended, or paused in its process)."""

    flow_run_id: str
    name: str
    environment: str | None
    pause_key: str | None
    paused_at: datetime | None = None


class ResumeResult(ClientModel):
    """The orchestration answer to a resume."""

    flow_run_id: str
    environment: str | None
    status: str = Field(description="ACCEPT, REJECT or ABORT")
    reason: str = ""
    counted: bool | None = Field(default=None, description="The flow's verdict: counted, refused, or not known yet")

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPT"


class RunStatus(ClientModel):
    flow_run_id: str
    name: str
    flow: str | None = None
    state: str
    environment: str | None = None


class RefusedDecision(ClientModel):
    """A decision the flow refused, and why (kept in the ledger)."""

    approver: str
    decision: Decision
    reason: str
    at: datetime


class PlanStatus(ClientModel):
    environment: str
    revision: int
    state: PlanState
    planned_by: str
    approvers: list[str]
    updated_at: datetime
    attempt: int = Field(default=1, description="Promotion attempt (raised by each retry)")
    reason: str = Field(default="", description="Why the plan is in its state (its last transition's reason)")
    actor: str | None = Field(default=None, description="Who or what moved it there")
    refused: list[RefusedDecision] = Field(default_factory=list, description="Decisions refused, with the reason")


class TraceEvent(ClientModel):
    """One event of a trace, as ``delivery release trace`` lists it."""

    event: str
    occurred: datetime
    release_id: str | None = None
    environment: str | None = None


class ReleaseStatus(ClientModel):
    """A release as the ledger and Prefect see it."""

    release_id: str
    trace_id: str | None
    plans: list[PlanStatus]
    runs: list[RunStatus]
    waiting_for_approval: list[str] = Field(description="Environments paused for a decision")
    events_url: str | None = Field(default=None, description="The Prefect UI's Event feed filtered to the release")


def default_api_url() -> str:
    """``PREFECT_API_URL``, else the found stack's (``stack.json``), else the active Prefect profile's.

    Raises:
        StackNotFound: none of them (see :func:`cli.stack.find_stack`).
    """
    return find_stack().require_api()


def _tag_value(tags: list[str], prefix: str) -> str | None:
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None


class Operation(ClientModel):
    """An operation on a release that ran (retry, cancel, replay)."""

    deployment: str
    flow_run_id: str
    flow_run_name: str
    state: str


_ERRORS: dict[str, type[DeliveryError]] = {"InvalidInput": InvalidInput, "NotFound": NotFound}


def _operation_error(deployment: str, message: str) -> DeliveryError:
    """The error an operation's run ended with, as the product's own type when it names one."""
    match = re.match(r"(\w+): (.*)", message.removeprefix("Flow run encountered an exception: "), re.S)
    if match and match[1] in _ERRORS:
        return _ERRORS[match[1]](match[2].strip())
    return DeliveryError(f"{deployment}: {message}")


def _waiting_environment(pause_key: str | None) -> str | None:
    """The environment an approval wait is for, from its key ``approval-<env>-r<revision>-<n>``."""
    match = re.fullmatch(r"approval-(?P<env>.+)-r\d+-\d+", pause_key or "")
    return match["env"] if match else None


class DeliveryClient:
    """Typed calls to the Prefect REST API.

    Args:
        api_url: the Prefect API (``.../api``); default ``PREFECT_API_URL``, else the stack
            :func:`~cli.stack.find_stack` finds (:class:`~delivery.errors.StackNotFound` when none).
        timeout: per-request timeout in seconds.
        retries: attempts after the first on 429/5xx/connection errors.
        backoff: first retry delay in seconds, doubled each time.
        transport: an httpx transport (tests).
        auth_string: the API credential (HTTP Basic, Prefect's auth string); default
            ``PREFECT_API_AUTH_STRING``, else the found stack's ``api-auth`` (see
            :meth:`~cli.stack.StackTarget.auth_string`), else none.
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

    def _request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
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
        return str(self._request("GET", f"/deployments/name/{flow_name}/{deployment_name}").json()["id"])

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
            "tags": [f"release:{request.release_id}", f"trace:{request.trace_id}"],
        }
        response = self._request("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)
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
        ui = self.ui_url()
        return f"{ui}/runs/flow-run/{flow_run_id}" if ui else None

    def events_url(self, release_id: str) -> str | None:
        """The Prefect UI's Event feed filtered to a release's events (``/events?resource=delivery.release.<id>``)."""
        return release_events_link(release_id, self.ui_url())

    def release_runs(self, release_id: str, *, state_types: list[str] | None = None) -> list[dict[str, Any]]:
        """Every flow run tagged ``release:<id>`` (the release run and its promotion subflows)."""
        criteria: dict[str, Any] = {"tags": {"all_": [f"release:{release_id}"]}}
        if state_types:
            criteria["state"] = {"type": {"any_": state_types}}
        body = {"flow_runs": criteria, "sort": "START_TIME_ASC", "limit": 200}
        return list(self._request("POST", "/flow_runs/filter", json=body).json())

    def paused_runs(self, release_id: str, *, environment: str | None = None) -> list[PausedRun]:
        """The release's promotions waiting for a decision, optionally in one environment."""
        paused = []
        for run in self.release_runs(release_id, state_types=["PAUSED"]):
            details = (run.get("state") or {}).get("state_details") or {}
            env = _waiting_environment(details.get("pause_key"))
            if environment is not None and env != environment:
                continue
            paused.append(
                PausedRun(
                    flow_run_id=str(run["id"]),
                    name=run.get("name") or "",
                    environment=env,
                    pause_key=details.get("pause_key"),
                    paused_at=(run.get("state") or {}).get("timestamp"),
                )
            )
        return paused

    def wait_for_pause(
        self,
        release_id: str,
        *,
        environment: str | None = None,
        after: PausedRun | None = None,
        timeout: float = 120.0,
        interval: float = 0.5,
    ) -> PausedRun:
        """Wait until a promotion of the release pauses for a decision (a new pause, if ``after``).

        Raises:
            TransientError: nothing paused within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for run in self.paused_runs(release_id, environment=environment):
                if after is None or (run.flow_run_id, run.pause_key) != (after.flow_run_id, after.pause_key):
                    return run
            if time.monotonic() >= deadline:
                where = f" in {environment}" if environment else ""
                raise TransientError(f"release {release_id}: no promotion paused for approval{where} in {timeout} s")
            time.sleep(interval)

    def resume(self, flow_run_id: str, run_input: Mapping[str, Any], *, environment: str | None = None) -> ResumeResult:
        """Resume a paused run with input; return the orchestration status (never trust the HTTP code).

        The flow saves its input schema just after it pauses: a resume in between is retried briefly.
        """
        deadline = time.monotonic() + 10
        while True:
            response = self._request("POST", f"/flow_runs/{flow_run_id}/resume", json={"run_input": dict(run_input)})
            body = response.json()
            reason = ((body.get("details") or {}).get("reason")) or ""
            result = ResumeResult(
                flow_run_id=flow_run_id, environment=environment, status=str(body.get("status", "")), reason=reason
            )
            if result.status == "REJECT" and "schema not found" in reason and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            return result

    def decide(
        self,
        release_id: str,
        *,
        decision: Decision,
        approver: str,
        environment: str | None = None,
        comment: str = "",
        wait: float = 0.0,
        key: Path | None = None,
        verdict_timeout: float = 120.0,
    ) -> list[ResumeResult]:
        """Send one decision to every promotion of the release waiting (in ``environment``), and wait for the verdict.

        Where the environment counts signed decisions only, the decision is signed with the
        approver's key (``key``, else ``DELIVERY_SIGNING_KEY``, else the keys folder: see
        :func:`delivery.signing.find_signing_key`) over the statement the wait asks for. A resume
        that reaches the run between two waits is sent again to the next wait.

        Args:
            release_id: the release.
            decision: approve or reject.
            approver: the deciding identity.
            environment: only this environment's promotion.
            comment: why.
            wait: seconds to wait for a pause when none is there yet.
            key: the private key to sign with.
            verdict_timeout: seconds to wait for the flow's verdict once the resume was accepted.

        Returns:
            One result per paused run, with the flow's verdict (``counted``).

        Raises:
            NotFound: nothing of that release is waiting for a decision.
            ApprovalRefused: refused by the resume call (the reason names the field) or by the flow
                (a bad signature: its reason), or no signing key for a signed environment.
        """
        paused = self.paused_runs(release_id, environment=environment)
        if not paused and wait > 0:
            try:
                paused = [self.wait_for_pause(release_id, environment=environment, timeout=wait)]
            except TransientError:
                paused = []
        if not paused:
            self._refuse_late(release_id, environment=environment, decision=decision, approver=approver,
                              comment=comment)
            where = f" in {environment}" if environment else ""
            raise NotFound(f"release {release_id}: no promotion is waiting for approval{where}")
        results = [self._decide_one(release_id, run, decision=decision, approver=approver, comment=comment, key=key,
                                    verdict_timeout=verdict_timeout) for run in paused]
        self._audit_refused(release_id, [r for r in results if r.status == "REJECT"], decision=decision,
                            approver=approver, comment=comment)
        refused = [r for r in results if not r.accepted or r.counted is False]
        if refused:
            raise ApprovalRefused(
                "; ".join(f"{r.environment or r.flow_run_id}: {r.status}: {r.reason}" for r in refused)
            )
        return results

    def _decide_one(self, release_id: str, run: PausedRun, *, decision: Decision, approver: str, comment: str,
                    key: Path | None, verdict_timeout: float) -> ResumeResult:
        for _ in range(3):  # the run may be between two waits: the decision goes to the next one
            asked = self.wait_request(run)
            run_input = ApprovalInput(decision=decision, approver=approver, comment=comment,
                                      signature=self._signature(asked, approver=approver, decision=decision, key=key))
            result = self.resume(run.flow_run_id, run_input.model_dump(mode="json", exclude_defaults=not asked.get(
                "signed")), environment=run.environment)
            if result.status == "ABORT" and "not paused" in result.reason:
                run = self.wait_for_pause(release_id, environment=run.environment, after=run, timeout=verdict_timeout)
                continue
            if result.accepted:
                verdict = self.wait_verdict(run, timeout=verdict_timeout)
                if verdict is not None:
                    result = result.model_copy(update={"counted": bool(verdict.get("counted")),
                                                       "reason": verdict.get("reason") or ""})
            return result
        return result

    def _signature(self, asked: Mapping[str, Any], *, approver: str, decision: Decision, key: Path | None) -> str:
        if not asked.get("signed"):
            return ""
        path = find_signing_key(approver, key=key)
        if path is None:
            raise ApprovalRefused(f"{asked.get('environment')}: decisions must be signed: give --key (or set "
                                  f"DELIVERY_SIGNING_KEY) with the private key registered for {approver}")
        statement = Statement(kind="approval", signer=approver, release_id=asked["release_id"],
                              revision=asked["revision"], environment=asked["environment"],
                              plan_digest=asked["plan_digest"], decision=decision,
                              at=datetime.fromisoformat(asked["at"].replace("Z", "+00:00")))
        return sign(statement, key_path=path).render()

    def _run_input(self, run: PausedRun, suffix: str) -> dict[str, Any] | None:
        try:
            value = self._request("GET", f"/flow_runs/{run.flow_run_id}/input/{run.pause_key}{suffix}").json()
        except NotFound:
            return None
        return dict(json.loads(value) if isinstance(value, str) else value)

    def wait_request(self, run: PausedRun, *, timeout: float = 10.0) -> dict[str, Any]:
        """What a wait asks for (its ``<key>-request`` input: the statement to sign, who may decide)."""
        deadline = time.monotonic() + timeout
        while (asked := self._run_input(run, "-request")) is None and time.monotonic() < deadline:
            time.sleep(0.2)  # written just before the run suspends; an older run may not write it at all
        return asked or {}

    def wait_verdict(self, run: PausedRun, *, timeout: float) -> dict[str, Any] | None:
        """The flow's verdict on the decision sent to ``run``'s wait, or None when none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (verdict := self._run_input(run, "-verdict")) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return verdict

    @staticmethod
    def _audit_refused(release_id: str, results: list[ResumeResult], *, decision: Decision, approver: str,
                       comment: str) -> None:
        """A decision the resume call refused (the wait's schema: the planner, an outsider, a repeat) never
        reaches the flow: it is audited here as refused, with the server's reason, on the plan waiting."""
        from delivery.ledger import Ledger
        from delivery.models import Approval

        if not results:
            return
        ledger = Ledger(create=False)  # a ledger this machine does not hold has no plan waiting: nothing written
        for result in results:
            waiting = [plan for plan in ledger.plans(release_id=release_id, environment=result.environment)
                       if plan.state is PlanState.PENDING_APPROVAL]
            for plan in waiting[-1:]:
                ledger.record_approval(plan.plan_id, Approval(
                    approver=approver, decision=decision, comment=comment, counted=False,
                    refused_reason=f"refused by the resume call: {result.reason}"))

    def _refuse_late(self, release_id: str, *, environment: str | None, decision: Decision, approver: str,
                     comment: str) -> None:
        """A decision on a plan whose approval window closed is audited as refused, then refused."""
        from delivery.approvals import LATE_REASON, TIMEOUT_ACTOR
        from delivery.ledger import Ledger
        from delivery.models import Approval

        ledger = Ledger()
        for plan in ledger.plans(release_id=release_id, environment=environment):
            last = ledger.last_transition(plan.plan_id)
            if plan.state is PlanState.REJECTED and last and last.actor == TIMEOUT_ACTOR:
                ledger.record_approval(plan.plan_id, Approval(
                    approver=approver, decision=decision, comment=comment, counted=False,
                    refused_reason=LATE_REASON))
                raise ApprovalRefused(f"{plan.environment}: {LATE_REASON} ({last.reason})")

    def approve(self, release_id: str, *, approver: str, **options: Any) -> list[ResumeResult]:
        """Approve the release's paused promotion(s); see :meth:`decide`."""
        return self.decide(release_id, decision=Decision.APPROVE, approver=approver, **options)

    def reject(self, release_id: str, *, approver: str, **options: Any) -> list[ResumeResult]:
        """Reject the release's paused promotion(s); see :meth:`decide`."""
        return self.decide(release_id, decision=Decision.REJECT, approver=approver, **options)

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """One flow run as the API returns it."""
        return dict(self._request("GET", f"/flow_runs/{flow_run_id}").json())

    def status(self, release_id: str, *, ledger_url: str | None = None) -> ReleaseStatus:
        """A release's plans (from the ledger) and flow runs (from Prefect)."""
        from delivery.approvals import counted_approvers
        from delivery.ledger import Ledger

        # only read: a ledger not written yet reads as empty, and nothing is created
        ledger = Ledger(ledger_url or find_stack(self.api_url).ledger_url or "sqlite://", create=False)
        plans = ledger.latest_plans(release_id)
        last = {p.plan_id: ledger.last_transition(p.plan_id) for p in plans}
        runs = self.release_runs(release_id)
        trace_id = plans[0].trace_id if plans else None
        for run in runs:
            trace_id = trace_id or _tag_value(run.get("tags") or [], "trace:")
        return ReleaseStatus(
            release_id=release_id,
            trace_id=trace_id,
            plans=[
                PlanStatus(
                    environment=p.environment, revision=p.revision, state=p.state, planned_by=p.planned_by,
                    approvers=counted_approvers(p.approvals), updated_at=p.updated_at, attempt=p.attempt,
                    reason=last[p.plan_id].reason if last[p.plan_id] else "",
                    actor=last[p.plan_id].actor if last[p.plan_id] else None,
                    refused=[RefusedDecision(approver=a.approver, decision=a.decision, reason=a.refused_reason or "",
                                             at=a.at) for a in ledger.approvals(p.plan_id) if not a.counted],
                )
                for p in plans
            ],
            runs=[
                RunStatus(
                    flow_run_id=str(r["id"]), name=r.get("name") or "",
                    state=((r.get("state") or {}).get("name") or (r.get("state_type") or "?")),
                    environment=_waiting_environment(
                        ((r.get("state") or {}).get("state_details") or {}).get("pause_key")),
                )
                for r in runs
            ],
            waiting_for_approval=sorted(
                {_waiting_environment(((r.get("state") or {}).get("state_details") or {}).get("pause_key")) or "?"
                 for r in runs if (r.get("state") or {}).get("type") == "PAUSED"}
            ),
            events_url=self.events_url(release_id),
        )

    def overview(self, *, path: list[str] | None = None, ledger_url: str | None = None) -> list[OverviewRow]:
        """Every environment at a glance (``delivery status``): a row per environment and application, from the ledger.

        Over the API alone, the same rows are the markdown artifact ``GET /api/artifacts/environments/latest``.

        Args:
            path: the promotion path, in order; default: the environments the ledger knows.
            ledger_url: the ledger's SQLAlchemy URL; default ``DELIVERY_LEDGER_URL``.
        """
        from cli.status import read_overview

        return read_overview(path=path, ledger_url=ledger_url)

    def trace_events(self, trace_id: str, *, limit: int = 500) -> list[TraceEvent]:
        """Every ``delivery.*`` event of a trace, oldest first (the server pages by 50)."""
        body = {
            "filter": {
                "related": {"id": [f"delivery.trace.{trace_id}"]},
                "event": {"prefix": ["delivery."]},
                "occurred": {"since": "2000-01-01T00:00:00Z"},
                "order": "ASC",
            },
            "limit": 50,
        }
        page = self._request("POST", "/events/filter", json=body).json()
        events: list[TraceEvent] = []
        while True:
            for event in page.get("events", []):
                resource = event.get("resource") or {}
                events.append(TraceEvent(
                    event=event["event"], occurred=event["occurred"],
                    release_id=resource.get("prefect.resource.name"),
                    environment=resource.get("delivery.environment"),
                ))
            next_page = page.get("next_page")
            if not next_page or len(events) >= limit:
                return events[:limit]
            page = self._request("GET", next_page.split("/api/", 1)[-1]).json()

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

    # ------------------------------------------------------------------ operations (deployments of flows/recovery.py)

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
        return self._request("POST", f"/deployments/{deployment_id}/create_flow_run", json=body).json()


@contextmanager
def delivery_client(api_url: str | None = None, **options: Any) -> Iterator[DeliveryClient]:
    """Open a :class:`DeliveryClient` and close it afterwards."""
    client = DeliveryClient(api_url, **options)
    try:
        yield client
    finally:
        client.close()


__all__ = [
    "DeliveryClient",
    "DeliveryError",
    "PausedRun",
    "ReleaseStatus",
    "ResumeResult",
    "StartedRelease",
    "TraceEvent",
    "delivery_client",
]
