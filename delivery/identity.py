"""Verifiable identities: signed statements checked against a registry of public keys in the GitOps repo.

People and agents are registered in ``identities/allowed_signers`` (the ``ssh-keygen`` ALLOWED
SIGNERS format, the one Git uses for signed commits) and revoked in ``identities/revoked_keys``.
A statement (an approval, a release request) is signed as an OpenSSH SSHSIG signature in the
``delivery`` namespace, so ``ssh-keygen -Y sign -n delivery -f ~/.ssh/id_ed25519`` works as well as
``delivery identity sign``; verification needs no binary (delivery/sshsig.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_jsonable_python

from delivery import sshsig
from delivery.errors import InvalidInput, validated
from delivery.ids import ReleaseId, normalise_identity
from delivery.models import Decision, utcnow

NAMESPACE = "delivery"
REGISTRY_DIR = "identities"
ALLOWED_SIGNERS = "identities/allowed_signers"
REVOKED_KEYS = "identities/revoked_keys"

HEADER = "delivery-statement v1"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_FIELDS = ("kind", "signer", "release_id", "revision", "environment", "plan_digest", "decision",
           "request_digest", "at")
_REQUIRED = {
    "approval": ("environment", "plan_digest", "decision"),
    "release-request": ("request_digest",),
}
_AT_PATTERN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class SignatureRefused(InvalidInput):
    """A signed statement that may not count; ``reason`` (and the message) says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"signature refused: {reason}", reason=reason)


# --------------------------------------------------------------------------- statements


class Statement(BaseModel):
    """What a person or agent signs: an approval of a plan, or a release request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["approval", "release-request"]
    signer: str = Field(min_length=1)
    release_id: ReleaseId
    revision: int = Field(ge=1)
    environment: str | None = None
    plan_digest: str | None = None
    decision: Decision | None = None
    request_digest: str | None = None
    at: datetime

    @field_validator("signer", "environment")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        # Each value is one "key: value" line of the signed text; surrounding spaces would not survive parse().
        if value is None:
            return None
        value = value.strip()
        if not value or any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError(f"{value!r} must be non-empty text on one line")
        return value

    @field_validator("signer")
    @classmethod
    def _identity(cls, value: str) -> str:
        # Signed and compared in one spelling: "User:Alice " signs as user:alice.
        return normalise_identity(value)

    @field_validator("plan_digest", "request_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not re.match(DIGEST_PATTERN, value):
            raise ValueError(f"{value[:80]!r} is not sha256:<64 lowercase hex digits>")
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at must be timezone-aware (UTC)")
        return value.astimezone(UTC).replace(microsecond=0)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Statement:
        for kind, fields in _REQUIRED.items():
            for field in fields:
                if kind == self.kind and getattr(self, field) is None:
                    raise ValueError(f"{field} is required when kind is {self.kind!r}")
                if kind != self.kind and getattr(self, field) is not None:
                    raise ValueError(f"{field} is not allowed when kind is {self.kind!r}")
        return self

    def canonical(self) -> bytes:
        """Return the exact bytes that are signed: a header, then ``key: value`` lines in a fixed order."""
        lines = [HEADER]
        for field in _FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            if field == "at":
                value = value.strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"{field}: {value}")
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: str) -> Statement:
        """Parse the text :meth:`canonical` writes.

        Raises:
            InvalidInput: naming the line that is wrong, or the field that fails validation.
        """
        lines = text.replace("\r\n", "\n").strip("\n").split("\n")
        if lines[0].strip() != HEADER:
            raise InvalidInput(f"statement line 1: expected {HEADER!r}, got {lines[0][:60]!r}")
        values: dict[str, str] = {}
        for number, line in enumerate(lines[1:], start=2):
            key, sep, value = line.strip().partition(": ")
            if not sep or key not in _FIELDS:
                raise InvalidInput(f"statement line {number}: expected 'key: value' with a key of "
                                   f"{', '.join(_FIELDS)}; got {line[:60]!r}")
            if values and _FIELDS.index(key) <= _FIELDS.index(list(values)[-1]):
                raise InvalidInput(f"statement line {number}: {key!r} repeated or out of order "
                                   f"(order: {', '.join(_FIELDS)})")
            values[key] = value.strip()
        if "at" in values and not _AT_PATTERN.match(values["at"]):
            raise InvalidInput(f"statement: at {values['at']!r} is not YYYY-MM-DDTHH:MM:SSZ")
        if "revision" in values and not values["revision"].isdigit():
            raise InvalidInput(f"statement: revision {values['revision']!r} is not a whole number")
        data: dict[str, Any] = dict(values)
        if "revision" in data:
            data["revision"] = int(data["revision"])
        return validated(cls, data, context="statement")


class SignedStatement(BaseModel):
    """A statement with its armored SSHSIG signature: what a person pastes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: Statement
    signature: str

    def render(self) -> str:
        """Return the canonical statement text, a blank line, then the armored signature."""
        return self.statement.canonical().decode() + "\n" + self.signature.strip() + "\n"

    @classmethod
    def parse(cls, text: str) -> SignedStatement:
        """Parse :meth:`render`'s text, tolerating surrounding whitespace, indentation and CRLF.

        Raises:
            InvalidInput: ``signature: ...`` when the block is missing or malformed; ``statement ...``
                when the statement is.
        """
        lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        if sshsig.BEGIN not in lines:
            raise InvalidInput(f"signature: no {sshsig.BEGIN} block found after the statement")
        begin = lines.index(sshsig.BEGIN)
        if sshsig.END not in lines[begin:]:
            raise InvalidInput(f"signature: the block has no {sshsig.END} line")
        end = lines.index(sshsig.END, begin)
        statement_lines = [line for line in lines[:begin] if line]
        if not statement_lines:
            raise InvalidInput("statement: nothing before the signature block")
        if any(lines[end + 1:]):
            raise InvalidInput(f"signature: unexpected text after {sshsig.END}")
        signature = "\n".join(line for line in lines[begin:end + 1] if line) + "\n"
        sshsig.decode(signature)  # a malformed block is an input error here, not a refusal later
        return cls(statement=Statement.parse("\n".join(statement_lines) + "\n"), signature=signature)


# --------------------------------------------------------------------------- registry


class RegisteredKey(BaseModel):
    """One line of ``allowed_signers``: who may sign with which key, where and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principals: tuple[str, ...]
    public_key: str
    fingerprint: str
    namespaces: tuple[str, ...] | None
    valid_after: datetime | None
    valid_before: datetime | None


class Registry(BaseModel):
    """The registered keys and the revoked ones, as read from the GitOps repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[RegisteredKey, ...]
    revoked: frozenset[str]

    @classmethod
    def parse(cls, allowed_signers: str, revoked_keys: str = "") -> Registry:
        """Read ``identities/allowed_signers`` and ``identities/revoked_keys``.

        Args:
            allowed_signers: ``principal[,principal...] [options] ssh-ed25519 AAAA... [comment]`` lines;
                options ``namespaces="a,b"``, ``valid-after=``/``valid-before=`` ``"YYYYMMDD[HHMM[SS]][Z]"``
                (read as UTC even without the Z, so the verdict does not depend on the host's zone).
            revoked_keys: public key lines (what ``ssh-keygen -Y verify -r`` accepts as a plain list).

        Raises:
            InvalidInput: naming the file and line number of a line that cannot be used.
        """
        keys = tuple(_signers_line(line, number) for number, line in _lines(allowed_signers))
        revoked = frozenset(_revoked_line(line, number) for number, line in _lines(revoked_keys))
        return cls(keys=keys, revoked=revoked)

    def identities(self) -> list[str]:
        """Every registered principal (normalised, sorted) that has at least one key not revoked."""
        return sorted({p for key in self.keys if key.fingerprint not in self.revoked for p in key.principals})

    def verify(self, signed: SignedStatement, *, now: datetime | None = None) -> RegisteredKey:
        """Check that a registered, unrevoked key of the claimed signer signed this statement.

        Args:
            signed: the statement and its signature.
            now: the time the key's validity window must contain; defaults to now.

        Returns:
            The registry line that allowed the signature.

        Raises:
            SignatureRefused: with the first reason, in order: unparsable block, namespace, key type,
                unregistered key, revoked key, signer not a principal of the key, namespaces option,
                validity window, signature not matching the statement.
        """
        try:
            sig = sshsig.decode(signed.signature)
        except InvalidInput as exc:
            raise SignatureRefused(f"the signature block does not parse ({exc})") from exc
        if sig.namespace != NAMESPACE:
            raise SignatureRefused(f"the signature is for namespace {sig.namespace!r}, not {NAMESPACE!r} "
                                   f"(sign with -n {NAMESPACE})")
        if sig.key_type != sshsig.KEY_TYPE:
            raise SignatureRefused(f"{sshsig.ONLY_ED25519}; this was signed with an {sig.key_type} key")
        fingerprint = sshsig.fingerprint(sig.public_key)
        lines = [key for key in self.keys if key.fingerprint == fingerprint]
        if not lines:
            raise SignatureRefused(f"key {fingerprint} is not registered in {ALLOWED_SIGNERS}")
        owners = ", ".join(sorted({p for key in lines for p in key.principals}))
        if fingerprint in self.revoked:
            raise SignatureRefused(f"key {fingerprint} of {owners} was revoked")
        claimed = normalise_identity(signed.statement.signer)
        lines = [key for key in lines if claimed in key.principals]
        if not lines:
            raise SignatureRefused(f"signed by {owners}'s key but claims {signed.statement.signer}")
        moment = now or utcnow()
        refusals = [_window_refusal(key, moment) for key in lines]
        if all(refusals):
            raise SignatureRefused(str(refusals[0]))
        key = lines[refusals.index(None)]
        try:
            sshsig.verify(signed.statement.canonical(), sig, namespace=NAMESPACE)
        except InvalidInput as exc:
            raise SignatureRefused("signature does not match the statement") from exc
        return key


_KEY_TYPE_TOKEN = re.compile(r"^(ssh-|ecdsa-|sk-|rsa-sha2-)")
_TIMESTAMP = re.compile(r"^(\d{8})(\d{4})?(\d{2})?(Z)?$")


def _lines(text: str) -> list[tuple[int, str]]:
    numbered = enumerate(text.replace("\r\n", "\n").split("\n"), start=1)
    return [(number, line.strip()) for number, line in numbered if line.strip() and not line.strip().startswith("#")]


def _split(text: str, separator: str | None) -> list[str]:
    """Split on ``separator`` (None: whitespace) outside double quotes, as ssh-keygen does."""
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if not quoted and (char == separator or (separator is None and char.isspace())):
            if current:
                parts.append(current)
            current = ""
            continue
        current += char
    if quoted:
        raise ValueError("unbalanced double quote")
    return [*parts, current] if current else parts


def _signers_line(line: str, number: int) -> RegisteredKey:
    where = f"{ALLOWED_SIGNERS} line {number}"
    try:
        tokens = _split(line, None)
        principals = tuple(normalise_identity(p) for p in tokens[0].strip('"').split(","))
        if not all(principals):
            raise ValueError(f"empty principal in {tokens[0]!r}")
        rest = tokens[1:]
        options = _options(rest.pop(0) if rest and not _KEY_TYPE_TOKEN.match(rest[0]) else "")
        if len(rest) < 2:
            raise ValueError("expected 'principals [options] ssh-ed25519 AAAA... [comment]'")
        _, blob, _ = sshsig.parse_public_key(" ".join(rest[:2]))
    except (ValueError, InvalidInput) as exc:
        raise InvalidInput(f"{where}: {str(exc).removeprefix('public key: ')}") from exc
    return RegisteredKey(principals=principals, public_key=sshsig.format_public_key(blob),
                         fingerprint=sshsig.fingerprint(blob), **options)


def _options(text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for option in _split(text, ","):
        name, _, value = option.partition("=")
        name, value = name.lower(), value.strip('"')
        field = name.replace("-", "_")
        if field in options:
            raise ValueError(f"option {name} given twice")
        if name == "cert-authority":
            raise ValueError("cert-authority is not supported: register each signer's own ssh-ed25519 key")
        if name == "namespaces":
            namespaces = tuple(n.strip() for n in value.split(","))
            if not all(namespaces):
                raise ValueError(f'namespaces="{value}" has an empty namespace')
            options[field] = namespaces
        elif name in ("valid-after", "valid-before"):
            options[field] = _timestamp(name, value)
        else:
            raise ValueError(f"unknown option {option!r} (supported: namespaces, valid-after, valid-before)")
    return {"namespaces": None, "valid_after": None, "valid_before": None, **options}


def _timestamp(name: str, value: str) -> datetime:
    match = _TIMESTAMP.match(value)
    if not match or (match.group(3) and not match.group(2)):
        raise ValueError(f'{name}="{value}" is not YYYYMMDD[HHMM[SS]][Z]')
    digits = "".join(group or "" for group in match.groups()[:3]).ljust(14, "0")
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f'{name}="{value}" is not a valid date') from exc


def _revoked_line(line: str, number: int) -> str:
    try:
        _, blob, _ = sshsig.parse_public_key(line, any_type=True)
    except InvalidInput as exc:
        raise InvalidInput(f"{REVOKED_KEYS} line {number}: {str(exc).removeprefix('public key: ')}") from exc
    return sshsig.fingerprint(blob)


def _window_refusal(key: RegisteredKey, now: datetime) -> str | None:
    """Why ``key`` may not sign in the delivery namespace at ``now``, or None when it may."""
    owner = ", ".join(key.principals)
    if key.namespaces is not None and NAMESPACE not in key.namespaces:
        return (f"key {key.fingerprint} of {owner} is registered for namespaces "
                f"{','.join(key.namespaces)}, not {NAMESPACE}")
    if key.valid_after is not None and now < key.valid_after:
        return f"key {key.fingerprint} of {owner} is not valid before {key.valid_after:%Y-%m-%dT%H:%M:%SZ}"
    if key.valid_before is not None and now > key.valid_before:
        return f"key {key.fingerprint} of {owner} expired at {key.valid_before:%Y-%m-%dT%H:%M:%SZ}"
    return None


# --------------------------------------------------------------------------- keys and signing


def _check_identity(identity: str) -> str:
    identity = identity.strip()
    # A principal is one comma-separated, unquoted token of allowed_signers.
    if not identity or any(char.isspace() or char in ',"#' for char in identity):
        raise InvalidInput(f"identity {identity!r}: give one identity such as user:alice, without spaces, "
                           "commas or quotes")
    return identity


def registry_line(public_key_line: str, *, identity: str) -> str:
    """Return the ``allowed_signers`` line that registers an existing OpenSSH Ed25519 public key.

    Raises:
        InvalidInput: a bad identity, or not an ``ssh-ed25519`` public key line.
    """
    identity = _check_identity(identity)
    _, blob, _ = sshsig.parse_public_key(public_key_line)
    return f'{identity} namespaces="{NAMESPACE}" {sshsig.format_public_key(blob)} {identity}'


def generate_key(path: Path, *, identity: str) -> str:
    """Create an Ed25519 key pair: the private key at ``path`` (0600), the public key beside it (.pub).

    Returns:
        The ``allowed_signers`` line to add to ``identities/allowed_signers``.

    Raises:
        InvalidInput: a bad identity, or either file already exists.
    """
    identity = _check_identity(identity)
    path = Path(path)
    public_path = path.with_suffix(".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise InvalidInput(f"key {existing}: already exists; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    sshsig.write_private_key(key, path)
    public_line = sshsig.format_public_key(sshsig.public_key_blob(key.public_key()), identity)
    public_path.write_text(public_line + "\n")
    return registry_line(public_line, identity=identity)


def sign(statement: Statement, *, key_path: Path) -> SignedStatement:
    """Sign ``statement`` with the OpenSSH Ed25519 private key at ``key_path``.

    Raises:
        InvalidInput: the key is missing, passphrase-protected or not Ed25519.
    """
    key = sshsig.load_private_key(Path(key_path))
    return SignedStatement(statement=statement,
                           signature=sshsig.sign(statement.canonical(), key=key, namespace=NAMESPACE))


def digest(data: Any) -> str:
    """Return ``sha256:<hex>`` over canonical JSON of ``data`` (models dumped in JSON mode)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)

