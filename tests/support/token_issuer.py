"""A Docker registry token service for tests: an HTTP server thread on 127.0.0.1 issuing signed JWTs.

``GET /token?service=...&scope=...`` with Basic credentials (the token spec, what the registry's
``Bearer realm`` points at) and ``POST /oauth2/token`` with ``grant_type=refresh_token`` (the OAuth2
form ACR uses) both answer a JWT granting the requested scopes, signed with an ECDSA P-256 key made
here by ``cryptography``. The registry trusts it through :attr:`TokenIssuer.token_auth`: the
issuer's self-signed certificate is the ``rootcertbundle``, and each JWT names its key either by
the ``x5c`` header (the certificate itself) or by ``kid`` (the libtrust key id of its public key),
both of which Debian's docker-registry 2.8 accepts.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from cli.local_registry import TokenAuth

SERVICE = "delivery-test-registry"
ISSUER = "delivery-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key id docker's libtrust gives a public key: SHA-256 of its DER (SubjectPublicKeyInfo), first
    240 bits, base32, in 12 groups of 4 joined by ``:``."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class TokenIssuer:
    """The token service. Use as a context manager; :attr:`requests` records every request it answered.

    Attributes:
        users: Basic credentials it accepts (user name -> password).
        refresh_tokens: refresh tokens it accepts on ``/oauth2/token``.
        lifetime: seconds a token lives (its ``exp`` and the ``expires_in`` it announces).
        stale: issue tokens whose ``exp`` is already past (beyond the registry's 60 s leeway) while
            announcing ``lifetime``: the registry refuses them although the client thinks them valid.
        key_header: ``x5c`` or ``kid``, how the JWT names its signing key.
        requests: (path, scope, status) of each request answered, in order.
    """

    def __init__(self, folder: Path, *, users: dict[str, str], refresh_tokens: tuple[str, ...] = (),
                 key_header: str = "x5c") -> None:
        self.users = dict(users)
        self.refresh_tokens = set(refresh_tokens)
        self.lifetime = 300
        self.stale = False
        self.key_header = key_header
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(hours=1))
                      .not_valid_after(now + datetime.timedelta(days=1))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        self.certificate = folder / "token-issuer.pem"
        self.certificate.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-issuer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def token_auth(self) -> TokenAuth:
        """The registry's configuration trusting this issuer."""
        return TokenAuth(realm=self.realm, service=SERVICE, issuer=ISSUER, rootcertbundle=self.certificate)

    def token_auth_at(self, path: str) -> TokenAuth:
        """The registry's configuration with the realm at another path, e.g. ACR's ``/oauth2/token``."""
        return TokenAuth(realm=self.url + path, service=SERVICE, issuer=ISSUER, rootcertbundle=self.certificate)

    def hits(self, path: str = "/token", *, status: int | None = None) -> int:
        """How many requests to ``path`` it answered (with ``status``, when given)."""
        with self._lock:
            return sum(1 for p, _s, code in self.requests if p == path and (status is None or code == status))

    def __enter__(self) -> TokenIssuer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving (if it was started) and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    # ------------------------------------------------------------------ tokens

    def issue(self, scopes: list[str], *, subject: str) -> str:
        """A JWT granting ``scopes`` (``repository:<name>:<actions>``) to ``subject``."""
        now = int(time.time())
        expires = now - 300 if self.stale else now + self.lifetime
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        header: dict = {"typ": "JWT", "alg": "ES256"}
        if self.key_header == "x5c":
            header["x5c"] = [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]
        else:
            header["kid"] = libtrust_key_id(self._key.public_key())
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": expires, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _answer(self, method: str, target: str, authorization: str, body: bytes) -> tuple[int, dict]:
        parts = urlsplit(target)
        if method == "GET" and parts.path == "/token":
            query = parse_qs(parts.query)
            if query.get("service") != [SERVICE]:
                return 400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}
            user = self._basic_user(authorization)
            if user is None:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            return 200, {"token": self.issue(scopes, subject=user), "expires_in": self.lifetime,
                         "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
        if method == "POST" and parts.path == "/oauth2/token":
            form = parse_qs(body.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("service") != [SERVICE]:
                return 400, {"error": "unsupported_grant_type"}
            if form.get("refresh_token", [""])[0] not in self.refresh_tokens:
                return 401, {"error": "invalid_grant"}
            scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
            return 200, {"access_token": self.issue(scopes, subject="refresh-token-user"),
                         "expires_in": self.lifetime}
        return 404, {"errors": [{"code": "NOT_FOUND"}]}

    def _basic_user(self, authorization: str) -> str | None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, document = issuer._answer(self.command, self.path, self.headers.get("Authorization", ""),
                                                  body)
                scope = " ".join(parse_qs(urlsplit(self.path).query).get("scope", []))
                with issuer._lock:
                    issuer.requests.append((urlsplit(self.path).path, scope, status))
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *_args: object) -> None:  # quiet
                pass

        return Handler
