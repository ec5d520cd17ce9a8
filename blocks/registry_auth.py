"""How the registry client authenticates: basic, or the Docker registry token flow every cloud registry asks for.

:class:`RegistryAuth` is an httpx authentication flow. A registry that wants tokens answers 401 with
``WWW-Authenticate: Bearer realm="...",service="...",scope="..."``; the flow then asks the realm for
a token (``GET realm?service=...&scope=...`` with the user name and password as Basic credentials,
per the Docker registry token spec; or, given a refresh token, ``POST realm`` with
``grant_type=refresh_token``, the OAuth2 form ACR's ``/oauth2/token`` takes), reads ``token`` or
``access_token`` and ``expires_in`` (60 s when absent), and sends the request again with
``Authorization: Bearer``. Tokens are cached per (realm, service, scope) until a few seconds before
they expire, and later requests for the same repository carry one at once; a token the registry
refuses is dropped and a new one asked for, once per request. Credentials never go from an https
registry to a plain-http realm. A realm refusing the credentials is an
:class:`~delivery.errors.AuthenticationError` (permanent); its 429 or 5xx are transient. Neither the
password, the refresh token nor a token appears in any message. A registry that never challenges
with ``Bearer`` keeps getting Basic credentials on every request, as before.

Kept free of Prefect: the pipeline's publish step (:mod:`blocks.publishing`) uses it too.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Generator

import httpx

from delivery.errors import AuthenticationError, PermanentError, TransientError

DEFAULT_EXPIRES_IN = 60  # the token spec's default when the realm gives no expires_in
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_REPOSITORY_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)/")

ChallengeKey = tuple[str, str, str]  # realm, service, scope


def normalize_scope(scope: str) -> str:
    """A scope in one spelling: actions sorted (docker-registry names ``pull,push`` or ``push,pull``
    at random), scopes sorted, so one token serves them all."""
    parts = []
    for part in scope.split(" "):
        if not part:
            continue
        resource, colon, actions = part.rpartition(":")
        parts.append(f"{resource}:{','.join(sorted(set(actions.split(','))))}" if colon else part)
    return " ".join(sorted(set(parts)))


def parse_bearer_challenge(header: str) -> ChallengeKey | None:
    """(realm, service, scope) of a ``WWW-Authenticate: Bearer ...`` header, the scope normalized
    (:func:`normalize_scope`); None for any other scheme."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    values = {name.lower(): value for name, value in _CHALLENGE_PARAM.findall(params)}
    if not values.get("realm"):
        return None
    return values["realm"], values.get("service", ""), normalize_scope(values.get("scope", ""))


def _basic(username: str, password: str | None) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


def _request_access(request: httpx.Request) -> tuple[str, bool]:
    """The repository a request is about ("" for others) and whether it writes."""
    match = _REPOSITORY_PATH.match(request.url.path)
    return (match["name"] if match else ""), request.method not in ("GET", "HEAD")


class RegistryAuth(httpx.Auth):
    """Basic credentials, or bearer tokens from the registry's token realm, cached per scope.

    One instance may serve many clients and threads (a block keeps one, so its tokens outlive a call).

    Args:
        username: for Basic authentication at the registry or at its token realm.
        password: the password (or a token such as a PAT) of ``username``.
        refresh_token: an OAuth2 refresh token (ACR's from ``az acr login --expose-token``): when
            given, tokens are asked for with ``POST realm`` and ``grant_type=refresh_token`` instead.
        clock: monotonic seconds (tests).
    """

    requires_request_body = True  # a refused request is sent again
    requires_response_body = True  # the realm's answer is read inside the flow

    def __init__(self, username: str | None = None, password: str | None = None, *,
                 refresh_token: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._username = username
        self._password = password
        self._refresh_token = refresh_token
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[ChallengeKey, tuple[str, float]] = {}  # key -> token, expiry (clock)
        self._scopes: dict[tuple[str, bool], ChallengeKey] = {}  # (repository, writes) -> what the registry asked
        self._bearer = False  # the registry has asked for tokens: no more Basic credentials to it

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self._username!r}, bearer={self._bearer})"

    # ------------------------------------------------------------------ the flow

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._cached_token(request)
        if sent is not None:
            request.headers["Authorization"] = f"Bearer {sent}"
        elif self._username and not self._bearer:
            request.headers["Authorization"] = _basic(self._username, self._password)
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_bearer_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return  # Basic refused, or no challenge: the caller sees the 401
        if request.url.scheme == "https" and httpx.URL(challenge[0]).scheme != "https" and (
                self._username or self._refresh_token is not None):
            raise PermanentError(f"the registry at {request.url.host} sends clients to a token service over plain "
                                 f"http ({challenge[0]}): credentials are not sent there")
        token = self._token(challenge, refused=sent)
        if token is None:
            token_response = yield self._token_request(*challenge)
            token = self._store(challenge, token_response)
        with self._lock:
            self._bearer = True
            self._scopes[_request_access(request)] = challenge
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _cached_token(self, request: httpx.Request) -> str | None:
        """A valid token for what ``request`` does, from what the registry asked for before."""
        name, writes = _request_access(request)
        with self._lock:
            for access in [(name, writes)] + ([] if writes else [(name, True)]):  # a push token also pulls
                key = self._scopes.get(access)
                token = self._valid(key) if key else None
                if token is not None:
                    return token
        return None

    def _token(self, key: ChallengeKey, *, refused: str | None) -> str | None:
        """The cached token for ``key``, unless it is the one the registry just refused (then dropped)."""
        with self._lock:
            token = self._valid(key)
            if token is not None and token == refused:
                del self._tokens[key]
                return None
            return token

    def _valid(self, key: ChallengeKey) -> str | None:
        cached = self._tokens.get(key)
        if cached is None or self._clock() >= cached[1]:
            return None
        return cached[0]

    # ------------------------------------------------------------------ the realm

    def _token_request(self, realm: str, service: str, scope: str) -> httpx.Request:
        if self._refresh_token is not None:
            form = {"grant_type": "refresh_token", "service": service, "refresh_token": self._refresh_token}
            if scope:
                form["scope"] = scope
            return httpx.Request("POST", realm, data=form)
        params: list[tuple[str, str]] = [("service", service)] if service else []
        params += [("scope", part) for part in scope.split(" ") if part]
        headers = {}
        if self._username:
            params.append(("account", self._username))
            headers["Authorization"] = _basic(self._username, self._password)
        return httpx.Request("GET", realm, params=params, headers=headers)

    def _store(self, key: ChallengeKey, response: httpx.Response) -> str:
        realm, _service, scope = key
        where = f"the registry's token service {realm} (scope {scope or 'none'!r})"
        status = response.status_code
        if status in (401, 403):
            who = f"the credentials of {self._username!r}" if self._username else "anonymous access"
            if self._refresh_token is not None:
                who = "the refresh token"
            raise AuthenticationError(f"{where} refused {who} ({status}): check the registry block's credentials")
        if status == 429 or status >= 500:
            raise TransientError(f"{where} answered {status}")
        if not response.is_success:
            raise PermanentError(f"{where} answered {status}")
        try:
            document = response.json()
        except ValueError:
            document = None
        token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise PermanentError(f"{where} answered without a token")
        try:
            lifetime = float(document.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (TypeError, ValueError):
            lifetime = DEFAULT_EXPIRES_IN
        lifetime = lifetime if lifetime > 0 else DEFAULT_EXPIRES_IN
        with self._lock:  # renewed a little early, so a token does not lapse between check and use
            self._tokens[key] = (token, self._clock() + lifetime - min(10.0, lifetime / 10))
        return token


__all__ = ["DEFAULT_EXPIRES_IN", "RegistryAuth", "normalize_scope", "parse_bearer_challenge"]
