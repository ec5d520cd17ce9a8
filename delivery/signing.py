"""Signed decisions: what a planner and an approver sign, and the checks before a signature counts.

An approver signs one statement (:func:`approval_statement`), fixed by the wait: the release, its
revision, the environment, the plan's digest (:func:`plan_digest`: the build, its packages and
image digests, the strategy), the decision, the signer and the time the plan was submitted for
approval. Because every field is known before the person signs, the wait's form can show the one
command that signs it, and a signature made for another release, revision, environment, plan or
decision does not verify. The planner signs the request (:func:`request_statement`) over
:func:`request_digest`: what is released (artifacts by digest), where to and by whom.

The pasted text may be the whole ``delivery identity sign`` output (statement and signature) or the
signature block alone, with its line breaks kept or lost (a browser's one-line input drops them).
When the statement is pasted too, a mismatch is explained field by field ("signed for release X").
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery.approvals import SignatureCheck
from delivery.errors import InvalidInput
from delivery.identity import (
    Registry,
    SignatureRefused,
    SignedStatement,
    Statement,
    digest,
    generate_key,
    registry_line,
    sign,
)
from delivery.ids import new_release_id, normalise_identity
from delivery.intake import parse_request
from delivery.models import Decision, ReleaseRequest
from delivery.plan import ReleasePlan
from delivery.settings import find_state_dir

_BEGIN, _END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
KEY_ENV = "DELIVERY_SIGNING_KEY"
KEYS_DIR_ENV = "DELIVERY_KEYS_DIR"
CLOCK_SKEW_SECONDS = 300


def plan_digest(plan: ReleasePlan) -> str:
    """The digest of what a plan deploys: application, release, revision, environment, strategy and build."""
    build = plan.build
    return digest({
        "app": plan.app, "release_id": plan.release_id, "revision": plan.revision, "environment": plan.environment,
        "strategy": plan.strategy.model_dump(mode="json"),
        "build": {"commit": build.commit, "run_id": build.run_id,
                  "packages": [f"{p.name}=={p.version}" for p in build.packages],
                  "images": [f"{i.repository}@{i.digest}" for i in build.images]},
    })


def request_digest(request: ReleaseRequest) -> str:
    """The digest of a release request: what is released (artifacts by digest, or the source ref), where to
    and by whom."""
    fields = {
        "release_id": request.release_id, "app": request.app, "revision": request.revision,
        "target_environment": request.target_environment or None,
        "requested_by": normalise_identity(request.requested_by),
        "strategy": request.strategy.model_dump(mode="json") if request.strategy else None,
        "artifacts": [{"artifact_id": a.artifact_id, "path": a.path, "sha256": a.sha256.lower()}
                      for a in request.artifacts],
    }
    if request.source.ref:  # only when given: the digest of an artifacts release is what it was before
        fields["source"] = {"ref": request.source.ref}
    return digest(fields)


def _whole_seconds(at: datetime) -> datetime:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(microsecond=0)


def approval_statement(plan: ReleasePlan, *, signer: str, decision: Decision, opened_at: datetime) -> Statement:
    """The statement an approver signs for a plan (``opened_at``: when it was submitted for approval)."""
    return Statement(kind="approval", signer=signer, release_id=plan.release_id,
                     revision=plan.revision, environment=plan.environment, plan_digest=plan_digest(plan),
                     decision=Decision(decision), at=_whole_seconds(opened_at))


def request_statement(request: ReleaseRequest, *, at: datetime) -> Statement:
    """The statement a planner signs for a release request."""
    return Statement(kind="release-request", signer=request.requested_by,
                     release_id=request.release_id, revision=request.revision,
                     request_digest=request_digest(request), at=_whole_seconds(at))


def request_to_sign(document: Any) -> ReleaseRequest:
    """The release request a person signs, from its JSON document (what the UI's Custom run form takes).

    The document must name its ``release_id``: without one, each validation draws a new id, and the
    signed digest would not be the digest of the run started with the document.

    Raises:
        InvalidInput: not a JSON object, no ``release_id``, or a field that is not valid (named).
    """
    if not isinstance(document, Mapping):
        raise InvalidInput(f"request: expected a JSON object (a ReleaseRequest), got {type(document).__name__}")
    if not str(document.get("release_id") or "").strip():
        raise InvalidInput(f"release_id: missing; set \"release_id\" in the request (e.g. \"{new_release_id()}\") "
                           "and start the release with that same request, so that the signed digest is its digest")
    return parse_request(document)


def sign_request(request: ReleaseRequest, *, key: Path | None = None) -> ReleaseRequest:
    """The request signed by its planner when a key is at hand (see :func:`find_signing_key`), else unchanged.

    A request that already carries a signature (pasted from ``delivery identity sign request``) is kept as is.
    """
    if request.signature or (path := find_signing_key(request.requested_by, key=key)) is None:
        return request
    signed = sign(request_statement(request, at=datetime.now(UTC)), key_path=path)
    return request.model_copy(update={"signature": signed.render()})


def sign_command(statement: Statement) -> str:
    """The one command that signs ``statement`` (shown in the approval form)."""
    return (f"delivery identity sign --key <your key> --as {statement.signer} approval "
            f"--release {statement.release_id} --revision {statement.revision} "
            f"--environment {statement.environment} --plan-digest {statement.plan_digest} "
            f"--decision {statement.decision} --at {statement.at:%Y-%m-%dT%H:%M:%SZ}")


def key_file_name(identity: str) -> str:
    """The file a key of ``identity`` has in a keys folder (``user:alice`` -> ``user_alice``)."""
    return re.sub(r"[^a-z0-9._-]", "_", normalise_identity(identity))


def find_signing_key(identity: str, *, key: Path | None = None) -> Path | None:
    """The private key to sign as ``identity`` with: ``key``, else ``DELIVERY_SIGNING_KEY``, else the keys folder.

    The keys folder is ``DELIVERY_KEYS_DIR``, else ``<state folder>/keys`` (where ``delivery up`` keeps the
    embedded default's personas; the state folder is the one :func:`delivery.settings.find_state_dir` finds);
    a key there is named by :func:`key_file_name`.
    """
    if key is not None:
        return key
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    if os.environ.get(KEYS_DIR_ENV):
        folder = Path(os.environ[KEYS_DIR_ENV]).expanduser()
    else:
        found = find_state_dir()
        if found is None:
            return None
        folder = found.path / "keys"
    candidate = folder / key_file_name(identity)
    return candidate if candidate.is_file() else None


def ensure_keys(folder: Path, identities: list[str]) -> str:
    """Give each identity a key in ``folder`` (kept when present) and return their ``allowed_signers`` lines.

    What ``delivery up`` does for the embedded default's personas, and tests for theirs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for identity in identities:
        path = folder / key_file_name(identity)
        if path.is_file():
            lines.append(registry_line(path.with_suffix(".pub").read_text().strip(), identity=identity))
        else:
            lines.append(generate_key(path, identity=identity))
    return "\n".join(lines) + "\n"


def split_pasted(text: str) -> tuple[Statement | None, str]:
    """Split pasted text into the statement it carries (if any) and the armored signature.

    Raises:
        InvalidInput: no signature block in the text.
    """
    start, end = text.find(_BEGIN), text.find(_END)
    if start < 0 or end < start:
        raise InvalidInput(f"signature: no '{_BEGIN}' ... '{_END}' block; paste the output of "
                           "`delivery identity sign` (or of `ssh-keygen -Y sign -n delivery`)")
    body = re.sub(r"\s+", "", text[start + len(_BEGIN):end])
    armored = "\n".join([_BEGIN, *(body[i:i + 70] for i in range(0, len(body), 70)), _END]) + "\n"
    return _claimed_statement(text[:start]), armored


def _claimed_statement(text: str) -> Statement | None:
    if not text.strip():
        return None
    keys = "|".join(re.escape(name) for name in Statement.model_fields)
    lines = re.sub(rf"\s+(?=(?:{keys}):\s)", "\n", text.strip())
    lines = lines.replace("delivery-statement v1 ", "delivery-statement v1\n")
    try:
        return Statement.parse(lines + "\n")
    except (InvalidInput, ValueError):
        return None


def _mismatch(claimed: Statement | None, expected: Statement) -> str | None:
    if claimed is None:
        return None
    different = [name for name in Statement.model_fields if getattr(claimed, name) != getattr(expected, name)]
    if not different:
        return None
    return "signed a different statement: " + ", ".join(
        f"{name} {getattr(claimed, name)} (expected {getattr(expected, name)})" for name in different)


def check_signature(pasted: str, *, expected: Statement, registry: Registry) -> SignatureCheck:
    """Verify a pasted signature over ``expected``; never raises for a bad signature (it is refused, audited).

    Returns:
        The key and digest when it verifies; ``refused`` with the reason otherwise.
    """
    try:
        claimed, armored = split_pasted(pasted)
    except InvalidInput as exc:
        return SignatureCheck(refused=str(exc))
    signature_digest = "sha256:" + hashlib.sha256(armored.encode()).hexdigest()
    try:
        key = registry.verify(SignedStatement(statement=expected, signature=armored))
    except SignatureRefused as exc:
        return SignatureCheck(digest=signature_digest, refused=_mismatch(claimed, expected) or exc.reason)
    except (InvalidInput, ValueError) as exc:
        return SignatureCheck(digest=signature_digest, refused=f"unreadable signature ({exc})")
    return SignatureCheck(fingerprint=key.fingerprint, principals=tuple(key.principals), digest=signature_digest)


def verify_request(request: ReleaseRequest, signature: str, *, registry: Registry,
                   now: datetime | None = None) -> SignatureCheck:
    """Verify the planner's signature over a release request.

    The signed time must not lie in the future (beyond a small clock skew); the statement's other
    fields come from the request itself.

    Returns:
        The check: ``refused`` says why when it does not verify.
    """
    try:
        claimed, armored = split_pasted(signature)
    except InvalidInput as exc:
        return SignatureCheck(refused=str(exc))
    if claimed is None:
        return SignatureCheck(refused="signature: paste the whole `delivery identity sign request` output "
                                      "(the statement and its signature)")
    now = now or datetime.now(UTC)
    if (claimed.at - now).total_seconds() > CLOCK_SKEW_SECONDS:
        return SignatureCheck(refused=f"signature: signed for a time in the future ({claimed.at:%Y-%m-%dT%H:%M:%SZ})")
    check = check_signature(signature, expected=request_statement(request, at=claimed.at), registry=registry)
    return check


__all__ = [
    "CLOCK_SKEW_SECONDS",
    "approval_statement",
    "check_signature",
    "ensure_keys",
    "find_signing_key",
    "key_file_name",
    "plan_digest",
    "request_digest",
    "request_statement",
    "request_to_sign",
    "sign_command",
    "sign_request",
    "split_pasted",
    "verify_request",
]
