"""Signed statements and the identity registry: validation, canonical text, and every refusal of verify."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from delivery.errors import InvalidInput
from delivery.identity import (
    NAMESPACE,
    Registry,
    SignatureRefused,
    SignedStatement,
    Statement,
    digest,
    generate_key,
    registry_line,
    sign,
)
from delivery.models import Decision

AT = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
PLAN = "sha256:" + "a" * 64
REQUEST = "sha256:" + "b" * 64
APPROVAL: dict[str, Any] = {"kind": "approval", "signer": "user:alice", "release_id": "rel-1", "revision": 3,
                            "environment": "prod", "plan_digest": PLAN, "decision": "approve", "at": AT}
RELEASE_REQUEST: dict[str, Any] = {"kind": "release-request", "signer": "agent:release-manager",
                                   "release_id": "rel-1", "revision": 1, "request_digest": REQUEST, "at": AT}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Alice's and Bob's keys, with their allowed_signers lines."""
    root = tmp_path_factory.mktemp("identity")
    return {name: {"path": root / name, "line": generate_key(root / name, identity=f"user:{name}")}
            for name in ("alice", "bob")}


def _registry(keys: dict[str, Any], *, revoked: str = "", alice_line: str | None = None) -> Registry:
    return Registry.parse(f"# people\n{alice_line or keys['alice']['line']}\n\n{keys['bob']['line']}\n", revoked)


def _public(keys: dict[str, Any], name: str) -> str:
    return keys[name]["path"].with_suffix(".pub").read_text()


# --------------------------------------------------------------------------- statements


@pytest.mark.parametrize(("base", "change", "message"), [
    (APPROVAL, {"environment": None}, "environment is required when kind is 'approval'"),
    (APPROVAL, {"plan_digest": None}, "plan_digest is required"),
    (APPROVAL, {"decision": None}, "decision is required"),
    (APPROVAL, {"request_digest": REQUEST}, "request_digest is not allowed when kind is 'approval'"),
    (RELEASE_REQUEST, {"request_digest": None}, "request_digest is required when kind is 'release-request'"),
    (RELEASE_REQUEST, {"environment": "prod"}, "environment is not allowed when kind is 'release-request'"),
    (RELEASE_REQUEST, {"plan_digest": PLAN}, "plan_digest is not allowed"),
    (RELEASE_REQUEST, {"decision": "approve"}, "decision is not allowed"),
    (APPROVAL, {"plan_digest": "sha256:ABC"}, "plan_digest"),
    (APPROVAL, {"plan_digest": "sha1:" + "a" * 64}, "not sha256:<64 lowercase hex"),
    (APPROVAL, {"revision": 0}, "revision"),
    (APPROVAL, {"release_id": "bad id"}, "release_id"),
    (APPROVAL, {"signer": "user:\nalice"}, "one line"),
    (APPROVAL, {"at": datetime(2026, 12, 3)}, "timezone-aware"),
    (APPROVAL, {"kind": "veto"}, "kind"),
    (APPROVAL, {"comment": "hi"}, "comment"),
])
def test_statement_validation(base: dict[str, Any], change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Statement(**{**base, **change})


def test_at_is_utc_whole_seconds() -> None:
    paris = datetime(2026, 12, 3, 4, 0, 0, 999, tzinfo=timezone(timedelta(hours=1)))
    statement = Statement(**{**APPROVAL, "at": paris})
    assert statement.at == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("fields", [APPROVAL, RELEASE_REQUEST])
def test_canonical_and_parse_round_trip(fields: dict[str, Any]) -> None:
    statement = Statement(**fields)
    text = statement.canonical().decode()
    assert text.startswith("delivery-statement v1\nkind: ")
    assert "at: 2026-12-03T02:00:00Z\n" in text
    assert Statement.parse(text) == statement
    assert Statement.parse(text).canonical() == statement.canonical()


def test_canonical_text_is_fixed() -> None:
    assert Statement(**APPROVAL).canonical() == (
        b"delivery-statement v1\nkind: approval\nsigner: user:alice\nrelease_id: rel-1\nrevision: 3\n"
        b"environment: prod\nplan_digest: sha256:" + b"a" * 64 + b"\ndecision: approve\nat: 2026-12-03T02:00:00Z\n"
    )


@pytest.mark.parametrize(("text", "message"), [
    ("kind: approval\n", "line 1: expected 'delivery-statement v1'"),
    ("delivery-statement v1\nkind approval\n", "line 2: expected 'key: value'"),
    ("delivery-statement v1\nkind: approval\ncolour: blue\n", "line 3: expected 'key: value'"),
    ("delivery-statement v1\nsigner: a\nkind: approval\n", "line 3: 'kind' repeated or out of order"),
    ("delivery-statement v1\nkind: approval\nkind: approval\n", "line 3: 'kind' repeated"),
    ("delivery-statement v1\nkind: release-request\nsigner: a\nrelease_id: r\nrevision: x\n", "revision 'x'"),
    ("delivery-statement v1\nkind: release-request\nat: 2026-12-03 02:00\n", "at '2026-12-03 02:00'"),
    ("delivery-statement v1\nkind: release-request\nsigner: a\nrelease_id: r\nrevision: 1\n"
     "at: 2026-12-03T02:00:00Z\n", "request_digest is required"),
])
def test_statement_parse_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Statement.parse(text)


def test_signed_statement_render_parse_round_trip(keys: dict[str, Any]) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    rendered = signed.render()
    assert rendered.startswith(Statement(**APPROVAL).canonical().decode() + "\n-----BEGIN SSH SIGNATURE-----\n")
    assert SignedStatement.parse(rendered) == signed
    pasted = "\n\n  " + rendered.replace("\n", "\r\n   ") + "  \r\n\n"
    assert SignedStatement.parse(pasted) == signed
    assert _registry(keys).verify(SignedStatement.parse(pasted)).principals == ("user:alice",)


@pytest.mark.parametrize(("text", "message"), [
    (Statement(**APPROVAL).canonical().decode(), "signature: no -----BEGIN SSH SIGNATURE----- block"),
    (Statement(**APPROVAL).canonical().decode() + "-----BEGIN SSH SIGNATURE-----\nU1NI\n", "no -----END"),
    (Statement(**APPROVAL).canonical().decode() + "-----BEGIN SSH SIGNATURE-----\n%%\n-----END SSH SIGNATURE-----",
     "signature: the block is not valid base64"),
    ("-----BEGIN SSH SIGNATURE-----\nU1NI\n-----END SSH SIGNATURE-----\n", "statement: nothing before"),
])
def test_signed_statement_parse_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        SignedStatement.parse(text)


# --------------------------------------------------------------------------- registry


def test_registry_parse_options_and_identities(keys: dict[str, Any]) -> None:
    alice = _public(keys, "alice").split()
    text = (f'User:Alice,team:Release valid-after="20261201",valid-before="202612310930Z",namespaces="git,delivery" '
            f"{alice[0]} {alice[1]} alice laptop\n{keys['bob']['line']}\n")
    registry = Registry.parse(text)
    first = registry.keys[0]
    assert first.principals == ("user:alice", "team:release")
    assert first.public_key == f"{alice[0]} {alice[1]}"
    assert first.namespaces == ("git", "delivery")
    assert (first.valid_after, first.valid_before) == (datetime(2026, 12, 1, tzinfo=UTC),
                                                       datetime(2026, 12, 31, 9, 30, tzinfo=UTC))
    assert registry.keys[1].namespaces == (NAMESPACE,)
    assert registry.identities() == ["team:release", "user:alice", "user:bob"]
    revoked = Registry.parse(text, f"# lost laptop\n{_public(keys, 'alice')}")
    assert revoked.identities() == ["user:bob"]
    assert revoked.revoked == {first.fingerprint}


@pytest.mark.parametrize(("line", "message"), [
    ("user:alice", "line 3: expected 'principals"),
    ("user:alice cert-authority {key}", "line 3: cert-authority is not supported"),
    ('user:alice nosuch="x" {key}', "line 3: unknown option"),
    ('user:alice valid-after="2026-12-01" {key}', "line 3: valid-after=\"2026-12-01\" is not YYYYMMDD"),
    ('user:alice valid-before="20261301" {key}', "line 3: valid-before=\"20261301\" is not a valid date"),
    ('user:alice namespaces="delivery,,git" {key}', "line 3: namespaces=.* has an empty namespace"),
    ('user:alice namespaces="a",namespaces="b" {key}', "line 3: option namespaces given twice"),
    ('user:alice namespaces="delivery {key}', "line 3: unbalanced double quote"),
    ("user:alice,,user:bob {key}", "line 3: empty principal"),
    ("user:alice ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB", "line 3: only ssh-ed25519 keys are supported, not ssh-rsa"),
    ("user:alice ssh-ed25519 AAAA!!", "line 3: .*not valid base64"),
])
def test_registry_bad_lines_name_file_and_line(keys: dict[str, Any], line: str, message: str) -> None:
    key = " ".join(_public(keys, "alice").split()[:2])
    with pytest.raises(InvalidInput, match=f"identities/allowed_signers {message}"):
        Registry.parse(f"# header\n\n{line.format(key=key)}\n")


def test_revoked_keys_bad_line(keys: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="identities/revoked_keys line 2: .*not valid base64"):
        Registry.parse(keys["alice"]["line"], f"{_public(keys, 'bob')}ssh-ed25519 %%\n")


# --------------------------------------------------------------------------- verify


def test_verify_accepts_the_registered_signer(keys: dict[str, Any]) -> None:
    registry = _registry(keys)
    key = registry.verify(sign(Statement(**APPROVAL), key_path=keys["alice"]["path"]))
    assert key.principals == ("user:alice",)
    bob = registry.verify(sign(Statement(**{**RELEASE_REQUEST, "signer": "user:bob"}), key_path=keys["bob"]["path"]))
    assert bob.principals == ("user:bob",)


@pytest.mark.parametrize("claimed", ["User:Alice", " user:alice ", "USER: ALICE"])
def test_verify_accepts_case_and_whitespace_variants(keys: dict[str, Any], claimed: str) -> None:
    signed = sign(Statement(**{**APPROVAL, "signer": claimed}), key_path=keys["alice"]["path"])
    assert _registry(keys).verify(signed).principals == ("user:alice",)


def _refused(registry: Registry, signed: SignedStatement, message: str, **kwargs: Any) -> None:
    with pytest.raises(SignatureRefused, match=message) as caught:
        registry.verify(signed, **kwargs)
    assert caught.value.reason in str(caught.value)
    assert isinstance(caught.value, InvalidInput) and not caught.value.retryable


def test_verify_refuses_an_unregistered_key(keys: dict[str, Any], tmp_path: Path) -> None:
    generate_key(tmp_path / "mallory", identity="user:alice")
    signed = sign(Statement(**APPROVAL), key_path=tmp_path / "mallory")
    _refused(_registry(keys), signed, r"key SHA256:\S+ is not registered")


def test_verify_refuses_a_revoked_key(keys: dict[str, Any]) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    _refused(_registry(keys, revoked=_public(keys, "alice")), signed, r"key SHA256:\S+ of user:alice was revoked")


def test_verify_refuses_a_signer_claiming_another_principal(keys: dict[str, Any]) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["bob"]["path"])
    _refused(_registry(keys), signed, "signed by user:bob's key but claims user:alice")


def test_verify_refuses_a_namespaces_option_without_delivery(keys: dict[str, Any]) -> None:
    line = keys["alice"]["line"].replace('namespaces="delivery"', 'namespaces="git,file"')
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    _refused(_registry(keys, alice_line=line), signed, "registered for namespaces git,file, not delivery")


def test_verify_checks_the_validity_window(keys: dict[str, Any]) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    expired = keys["alice"]["line"].replace('namespaces="delivery"', 'namespaces="delivery",valid-before="20261201Z"')
    _refused(_registry(keys, alice_line=expired), signed, "expired at 2026-12-01T00:00:00Z")
    future = keys["alice"]["line"].replace('namespaces="delivery"', 'valid-after="20270101"')
    _refused(_registry(keys, alice_line=future), signed, "not valid before 2027-01-01T00:00:00Z", now=AT)
    assert _registry(keys, alice_line=future).verify(signed, now=datetime(2027, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize("change", [{"decision": Decision.REJECT}, {"release_id": "rel-2"}, {"revision": 4},
                                    {"plan_digest": "sha256:" + "c" * 64}, {"at": AT + timedelta(seconds=1)}])
def test_verify_refuses_a_tampered_statement(keys: dict[str, Any], change: dict[str, Any]) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    tampered = SignedStatement(statement=Statement(**{**APPROVAL, **change}), signature=signed.signature)
    _refused(_registry(keys), tampered, "signature does not match the statement")


def test_verify_refuses_a_signature_from_another_namespace(keys: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "statement"
    data.write_bytes(Statement(**APPROVAL).canonical())
    done = subprocess.run(["/usr/bin/ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(keys["alice"]["path"]),
                           str(data)], capture_output=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr
    signed = SignedStatement(statement=Statement(**APPROVAL), signature=(tmp_path / "statement.sig").read_text())
    _refused(_registry(keys), signed, "namespace 'git', not 'delivery'")


def test_verify_accepts_ssh_keygen_signatures_and_refuses_rsa(keys: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "statement"
    data.write_bytes(Statement(**APPROVAL).canonical())
    run = {"capture_output": True, "check": False, "timeout": 30}
    assert subprocess.run(["/usr/bin/ssh-keygen", "-Y", "sign", "-n", NAMESPACE, "-f", str(keys["alice"]["path"]),
                           str(data)], **run).returncode == 0
    signed = SignedStatement.parse(data.read_text() + "\n" + (tmp_path / "statement.sig").read_text())
    assert _registry(keys).verify(signed).principals == ("user:alice",)

    rsa = tmp_path / "rsa"
    assert subprocess.run(["/usr/bin/ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)],
                          **run).returncode == 0
    (tmp_path / "statement.sig").unlink()
    assert subprocess.run(["/usr/bin/ssh-keygen", "-Y", "sign", "-n", NAMESPACE, "-f", str(rsa), str(data)],
                          **run).returncode == 0
    signed = SignedStatement(statement=Statement(**APPROVAL), signature=(tmp_path / "statement.sig").read_text())
    _refused(_registry(keys), signed, "only ssh-ed25519 keys are supported; this was signed with an ssh-rsa key")
    with pytest.raises(InvalidInput, match="only ssh-ed25519 keys are supported"):
        registry_line(rsa.with_suffix(".pub").read_text(), identity="user:alice")
    with pytest.raises(InvalidInput, match="only ssh-ed25519 keys are supported"):
        sign(Statement(**APPROVAL), key_path=rsa)


def test_verify_refuses_an_unparsable_signature(keys: dict[str, Any]) -> None:
    _refused(_registry(keys), SignedStatement(statement=Statement(**APPROVAL), signature="junk"),
             "the signature block does not parse")


# --------------------------------------------------------------------------- keys and digests


def test_generate_key_writes_the_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    line = generate_key(tmp_path / "release-manager", identity="agent:release-manager")
    public = (tmp_path / "release-manager.pub").read_text().split()
    assert line == f'agent:release-manager namespaces="delivery" {public[0]} {public[1]} agent:release-manager'
    assert (tmp_path / "release-manager").stat().st_mode & 0o777 == 0o600
    assert public[2] == "agent:release-manager"
    with pytest.raises(InvalidInput, match="already exists"):
        generate_key(tmp_path / "release-manager", identity="agent:release-manager")
    with pytest.raises(InvalidInput, match="identity 'user alice'"):
        generate_key(tmp_path / "other", identity="user alice")
    assert not (tmp_path / "other").exists()


def test_registry_line_for_an_existing_key(keys: dict[str, Any]) -> None:
    public = _public(keys, "alice").split()
    assert registry_line(_public(keys, "alice"), identity="user:alice") == (
        f'user:alice namespaces="delivery" {public[0]} {public[1]} user:alice')
    with pytest.raises(InvalidInput, match="without spaces, commas or quotes"):
        registry_line(_public(keys, "alice"), identity="user:alice,user:bob")


class _Thing(BaseModel):
    name: str
    at: datetime


def test_digest_is_canonical_json() -> None:
    assert digest({"b": 1, "a": "é"}) == digest({"a": "é", "b": 1})
    assert digest({"b": 1, "a": "é"}) == "sha256:" + hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()
    thing = _Thing(name="x", at=AT)
    assert digest({"thing": thing}) == digest({"thing": {"name": "x", "at": "2026-12-03T02:00:00Z"}})
    assert digest([1]) != digest([2])


def test_ssh_keygen_accepts_the_registry_and_signatures_made_here(keys: dict[str, Any], tmp_path: Path) -> None:
    signed = sign(Statement(**APPROVAL), key_path=keys["alice"]["path"])
    (tmp_path / "allowed_signers").write_text(f"{keys['alice']['line']}\n{keys['bob']['line']}\n")
    (tmp_path / "statement.sig").write_text(signed.signature)
    (tmp_path / "revoked_keys").write_text(_public(keys, "bob"))
    verify = ["/usr/bin/ssh-keygen", "-Y", "verify", "-f", "allowed_signers", "-I", "user:alice", "-n", NAMESPACE,
              "-s", "statement.sig", "-r", "revoked_keys"]
    run = {"input": Statement(**APPROVAL).canonical(), "cwd": tmp_path, "capture_output": True, "timeout": 30}
    assert subprocess.run(verify, **run).returncode == 0
    (tmp_path / "revoked_keys").write_text(_public(keys, "alice"))
    assert subprocess.run(verify, **run).returncode != 0
