"""Argo CD as the runtime: the product commits to Git, Argo CD applies; the product syncs and waits.

For teams that keep Argo CD. Each application and environment is one Argo CD Application (named by
``application_name``, default ``<app>-<environment>``) whose source is the environment's folder of
the GitOps repository. The sync stage asks Argo CD to sync the Application at the promoted GitOps
revision (``POST /api/v1/applications/{name}/sync``) and waits until it is Synced at that revision;
the health gate waits until it is Healthy there (Degraded, or still Progressing at the timeout,
fails it). Rollbacks are the product's forward commit of ``healthy/<env>/<app>``, synced the same way.

The product never talks to the cluster itself here: strategies whose phases are gated on single
Deployments (``blue_green``, ``canary``) and HTTP probes through the API server's Service proxy are
refused when ``delivery.yaml`` is validated (:mod:`delivery.config`).

Errors: 429, 5xx and network failures are retried with backoff, then :class:`TransientError`;
401/403 are :class:`AuthenticationError` (a session token is renewed once first), 404
:class:`NotFound`; messages never hold the token or the password.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from delivery.config import ARGOCD_RUNTIME_SLUG, ARGOCD_STRATEGIES, strategy_refusal
from delivery.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
)
from delivery.provider_timing import timed_provider

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Whether another GitOps revision holds the same manifests for the Application (see ArgoCDRuntime.sync).
Equivalent = Callable[[str], bool]


class ArgoAppStatus(BaseModel):
    """An Argo CD Application's status, as ``GET /api/v1/applications/{name}`` answers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sync_status: str = Field(description="Synced | OutOfSync | Unknown")
    revision: str | None = Field(default=None, description="status.sync.revision")
    health_status: str = Field(description="Healthy | Progressing | Degraded | Suspended | Missing | Unknown")
    health_message: str = ""
    operation_phase: str | None = Field(default=None, description="Running | Succeeded | Failed | Error | Terminating")
    operation_message: str = ""
    operation_revision: str | None = Field(default=None, description="status.operationState.syncResult.revision")

    @classmethod
    def of(cls, name: str, body: dict[str, Any]) -> ArgoAppStatus:
        """Read the status out of an Application document (missing parts read as Unknown)."""
        status = body.get("status") or {}
        sync, health = status.get("sync") or {}, status.get("health") or {}
        operation = status.get("operationState") or {}
        return cls(
            name=name, sync_status=str(sync.get("status") or "Unknown"), revision=sync.get("revision") or None,
            health_status=str(health.get("status") or "Unknown"), health_message=str(health.get("message") or ""),
            operation_phase=operation.get("phase") or None, operation_message=str(operation.get("message") or ""),
            operation_revision=(operation.get("syncResult") or {}).get("revision") or None,
        )

    def synced_at(self, revision: str, equivalent: Equivalent | None = None) -> bool:
        """Synced, at ``revision`` (or a revision ``equivalent`` accepts), with no sync operation still running."""
        at = _same_revision(self.revision, revision) or bool(
            self.revision and equivalent is not None and equivalent(self.revision))
        return self.sync_status == "Synced" and at and self.operation_phase not in ("Running", "Terminating")

    def healthy_at(self, revision: str, equivalent: Equivalent | None = None) -> bool:
        """Synced at ``revision`` (or an equivalent one) and Healthy."""
        return self.synced_at(revision, equivalent) and self.health_status == "Healthy"

    def describe(self) -> str:
        """One line for messages."""
        parts = [f"sync {self.sync_status} at {(self.revision or '?')[:12]}", f"health {self.health_status}"]
        if self.health_message:
            parts[-1] += f" ({self.health_message})"
        if self.operation_phase:
            parts.append(f"operation {self.operation_phase}" + (f" ({self.operation_message})"
                                                                 if self.operation_message else ""))
        return f"Application {self.name}: " + ", ".join(parts)


def _same_revision(seen: str | None, wanted: str) -> bool:
    return bool(seen) and (seen == wanted or (len(wanted) >= 7 and seen.startswith(wanted)))


@timed_provider
class ArgoCDRuntime(Block):
    """An Argo CD server that syncs one Application per application and environment."""

    _block_type_name = "Argo CD Runtime"
    _block_type_slug = ARGOCD_RUNTIME_SLUG
    _description = ("Argo CD reconciles: sync the Application at the promoted GitOps revision, wait for "
                    "Synced and Healthy. Rolling strategy only.")

    # Unknown fields are refused (a misspelt `prune` must not silently keep the default).
    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(pattern=r"^https?://[^\s/]+", description="Argo CD API server, e.g. https://argocd.example")
    token: SecretStr | None = Field(default=None, description="A static Argo CD API token (or give username/password)")
    username: str | None = Field(default=None, min_length=1,
                                 description="Local user to log in with (POST /api/v1/session)")
    password: SecretStr | None = Field(default=None, description="That user's password")
    application_name: str = Field(
        default="{app}-{environment}",
        description="The Argo CD Application of an app in an environment; placeholders {app} and {environment}",
    )
    prune: bool = Field(default=True, description="Let a sync delete what Git no longer holds (rollbacks need it)")
    sync_timeout_seconds: float = Field(default=300.0, gt=0, le=3600,
                                        description="How long the sync stage waits for Synced at the revision")
    poll_seconds: float = Field(default=2.0, gt=0, le=60, description="Wait between two status reads while syncing")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate")
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=300, description="Timeout of one HTTP request")
    request_retries: int = Field(default=4, ge=0, le=10,
                                 description="Retries of one request on 429, 5xx or network errors")
    retry_backoff_seconds: float = Field(default=1.0, gt=0, le=60,
                                         description="First wait before a retry; doubles up to 30 s (Retry-After wins)")

    _session_token: str | None = PrivateAttr(default=None)
    _http: httpx.Client | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)

    @field_validator("application_name")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        unknown = sorted(set(_PLACEHOLDER.findall(value)) - {"app", "environment"})
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                             "use {app} and {environment}")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> ArgoCDRuntime:
        login = self.username is not None or self.password is not None
        if self.token is not None and login:
            raise ValueError("give either token or username/password, not both")
        if self.token is None and not login:
            raise ValueError("give a token, or username and password")
        if login and (self.username is None or self.password is None):
            raise ValueError("username and password go together")
        return self

    # ------------------------------------------------------------------ HTTP

    def application_for(self, app: str, environment: str) -> str:
        """The Argo CD Application of ``app`` in ``environment``."""
        return self.application_name.replace("{app}", app).replace("{environment}", environment)

    def _client(self) -> httpx.Client:
        """The block's one HTTP client (connections and the TLS context reused across polls)."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(base_url=self.server_url.rstrip("/"), verify=self.verify_tls,
                                          timeout=self.request_timeout_seconds,
                                          headers={"Accept": "application/json"})
            return self._http

    def _secrets(self) -> list[str]:
        found = [s.get_secret_value() for s in (self.token, self.password) if s is not None]
        return [s for s in (*found, self._session_token) if s]

    def _clean(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _request(self, method: str, path: str, *, what: str, token: str | None, **kwargs: Any) -> httpx.Response:
        """One call, retried on 429/5xx/network errors; anything else non-2xx raised as the product's error."""
        for attempt in range(self.request_retries + 1):
            last = attempt == self.request_retries
            try:
                headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
                response = self._client().request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
                    raise TransientError(f"{what}: Argo CD at {self.server_url} {kind} after {attempt + 1} "
                                         f"attempt(s): {type(exc).__name__}") from None
                self._back_off(attempt)
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if last:
                    raise TransientError(f"{what}: Argo CD answered {status} after {attempt + 1} attempt(s)"
                                         f"{self._detail(response)}")
                self._back_off(attempt, retry_after=response.headers.get("Retry-After"))
                continue
            if status in (401, 403):
                raise AuthenticationError(
                    f"{what}: Argo CD refused the credentials ({status}); check the block's "
                    f"{'token' if self.token is not None else 'username and password'} and the account's "
                    f"RBAC on the Application")
            if status == 404:
                raise NotFound(f"{what}: not found on Argo CD at {self.server_url} (does the Application exist, "
                               f"and may this account see it?){self._detail(response)}")
            if status == 409:
                raise ConflictError(f"{what}: Argo CD answered 409{self._detail(response)}")
            if status in (400, 422) and "another operation is already in progress" in response.text:
                raise ConflictError(f"{what}: Argo CD is running another operation on it{self._detail(response)}")
            if status in (400, 422):
                raise InvalidInput(f"{what}: Argo CD refused the request ({status}){self._detail(response)}")
            if not response.is_success:
                raise PermanentError(f"{what}: Argo CD answered {status}{self._detail(response)}")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _detail(self, response: httpx.Response) -> str:
        try:
            message = (response.json() or {}).get("message") or (response.json() or {}).get("error") or ""
        except (ValueError, AttributeError):
            message = response.text
        message = self._clean(str(message).strip())[:300]
        return f": {message}" if message else ""

    def _back_off(self, attempt: int, *, retry_after: str | None = None) -> None:
        delay = min(self.retry_backoff_seconds * (2**attempt), 30.0)
        if retry_after and retry_after.strip().isdigit():
            delay = min(float(retry_after), 30.0)
        time.sleep(delay * (0.5 + random.random() / 2))

    def _token(self, *, renew: bool = False) -> str:
        if self.token is not None:
            return self.token.get_secret_value()
        with self._lock:
            if self._session_token is None or renew:
                assert self.username is not None and self.password is not None  # the model validator says so
                response = self._request("POST", "/api/v1/session", what="log in to Argo CD", token=None, json={
                    "username": self.username, "password": self.password.get_secret_value()})
                try:
                    token = response.json()["token"]
                except (ValueError, KeyError, TypeError):
                    raise TransientError("log in to Argo CD: the answer holds no token") from None
                self._session_token = str(token)
            return self._session_token

    def _call(self, method: str, path: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
        token = self._token()  # a refused login is final: it is not tried twice
        try:
            response = self._request(method, path, what=what, token=token, **kwargs)
        except AuthenticationError:
            if self.token is not None:
                raise
            # a session token expires: log in again once, then a refusal is final
            response = self._request(method, path, what=what, token=self._token(renew=True), **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"{what}: Argo CD answered something that is not JSON") from None
        return body if isinstance(body, dict) else {}

    # ------------------------------------------------------------------ the runtime

    def status(self, application: str) -> ArgoAppStatus:
        """The Application's sync, health and operation, after a normal refresh."""
        body = self._call("GET", f"/api/v1/applications/{application}", params={"refresh": "normal"},
                          what=f"read Application {application}")
        return ArgoAppStatus.of(application, body)

    def request_sync(self, application: str, revision: str, *, dry_run: bool = False) -> None:
        """Ask Argo CD to sync the Application at ``revision`` (does not wait)."""
        self._call("POST", f"/api/v1/applications/{application}/sync",
                   json={"revision": revision, "prune": self.prune, "dryRun": dry_run},
                   what=f"sync Application {application} at {revision[:12]}")

    def sync(self, application: str, revision: str, *, dry_run: bool = False, equivalent: Equivalent | None = None,
             timeout_seconds: float | None = None, poll_seconds: float | None = None) -> tuple[bool, ArgoAppStatus]:
        """Sync the Application at ``revision`` and wait until it is Synced there.

        Idempotent: an Application already Synced and Healthy at the revision is not synced again. An
        operation already running at another revision (an automated sync) is waited for first.

        Argo CD reports the revision it compared with, its tracked branch's head: another app's or
        environment's promotion moving the head after this sync would leave the Application Synced at
        a newer commit holding the same manifests. ``equivalent`` says whether a revision is such a one.

        Args:
            application: the Argo CD Application.
            revision: the GitOps commit.
            dry_run: ask Argo CD for a dry run (it changes nothing, so nothing is waited for).
            equivalent: accepts another revision holding the same manifests for the Application.
            timeout_seconds: default ``sync_timeout_seconds``.
            poll_seconds: default ``poll_seconds``.

        Returns:
            (whether a sync was requested, the last status).

        Raises:
            PermanentError: the sync operation Failed/Errored, or the revision was not Synced in time.
        """
        timeout = self.sync_timeout_seconds if timeout_seconds is None else timeout_seconds
        poll = self.poll_seconds if poll_seconds is None else poll_seconds
        deadline = time.monotonic() + timeout
        before = self.status(application)
        if before.healthy_at(revision, equivalent):
            return False, before
        while before.operation_phase == "Running" and not _same_revision(before.operation_revision, revision):
            if time.monotonic() >= deadline:
                raise PermanentError(f"{application}: another sync operation still runs after {timeout:g}s: "
                                     f"{self._clean(before.describe())}")
            time.sleep(poll)
            before = self.status(application)
        if before.operation_phase == "Running":
            pass  # a sync at this revision is under way already (a resumed stage): wait for it
        else:
            self.request_sync(application, revision, dry_run=dry_run)
        if dry_run:
            return True, before
        while True:
            current = self.status(application)
            if current.synced_at(revision, equivalent):
                return True, current
            if current.operation_phase in ("Failed", "Error") and (
                    current.operation_revision is None or _same_revision(current.operation_revision, revision)):
                raise PermanentError(f"sync of {application} at {revision[:12]} ended {current.operation_phase}: "
                                     f"{self._clean(current.describe())}")
            if time.monotonic() >= deadline:
                raise PermanentError(f"{application} not Synced at {revision[:12]} after {timeout:g}s: "
                                     f"{self._clean(current.describe())}")
            time.sleep(poll)

    def wait_healthy(self, application: str, revision: str, *, timeout_seconds: float, poll_seconds: float,
                     equivalent: Equivalent | None = None) -> tuple[bool, ArgoAppStatus, str]:
        """Poll until the Application is Synced and Healthy at ``revision``, Degraded, or the time is up.

        ``equivalent``: as for :meth:`sync`.

        Returns:
            (healthy, the last status, a message naming the reason).
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            current = self.status(application)
            if current.healthy_at(revision, equivalent):
                return True, current, f"Application {application} Synced and Healthy at {revision[:12]}"
            if current.health_status == "Degraded":
                return False, current, f"Degraded: {self._clean(current.describe())}"
            if time.monotonic() >= deadline:
                still = current.health_status if current.synced_at(revision, equivalent) else \
                    "not Synced at the revision"
                return False, current, (f"not healthy after {timeout_seconds:g}s ({still}): "
                                        f"{self._clean(current.describe())}")
            time.sleep(poll_seconds)

    def probe_service(self, *, service: str, namespace: str, path: str = "/healthz",
                      port: int | str | None = None, timeout_seconds: float = 5.0) -> int:
        """Not possible through Argo CD: a probe of a Service needs direct cluster access."""
        raise InvalidInput(f"http_probe of service {namespace}/{service}{path} needs direct cluster access; "
                           "with ArgoCDRuntime give http_probe.url")


def refuse_unsupported(runtime: Any, strategy: str) -> None:
    """Refuse, before anything is committed, a strategy the runtime cannot run.

    Raises:
        InvalidInput: ``runtime`` is an :class:`ArgoCDRuntime` and ``strategy`` is not one it supports.
    """
    if isinstance(runtime, ArgoCDRuntime) and strategy not in ARGOCD_STRATEGIES:
        raise InvalidInput(strategy_refusal(strategy))


__all__ = ["ArgoAppStatus", "ArgoCDRuntime", "Equivalent", "refuse_unsupported"]
