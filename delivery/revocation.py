"""Revoking a signing key, audited: one commit to ``identities/revoked_keys``, a ledger action and an event.

The registry (delivery/identity.py) is read from the GitOps repository's branch each time a signature
is checked, so a revocation applies to the next decision, also in a wait already open; what counted
before stays counted. ``delivery identity revoke`` is the command; the commit carries ``Revoked-Key``,
``Revoked-By``, ``Reason`` and ``Trace-Id`` trailers, the ledger keeps it as the action
``identity-revoked`` under the release id ``identities`` (no release owns a key), and
``delivery.IdentityRevoked`` is emitted with the same trace id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from delivery.errors import InvalidInput
from delivery.events import EventName
from delivery.identity import ALLOWED_SIGNERS, REVOKED_KEYS, RegisteredKey, Registry
from delivery.ids import new_trace_id, normalise_identity
from delivery.ledger import IDENTITIES_RECORD, IDENTITY_REVOKED, Ledger
from delivery.models import CommitInfo, utcnow

FINGERPRINT_PREFIX = "SHA256:"


class IdentityRepo(Protocol):
    """What revoking needs of the GitOps repository (blocks/gitops_repo.py GitOpsRepo)."""

    def read_identities(self) -> tuple[str, str]: ...

    def write_files(self, files: dict[str, bytes | None], *, message: str,
                    trailers: Sequence[tuple[str, str]]) -> CommitInfo: ...


class Revocation(BaseModel):
    """What ``revoke_key`` did: ``revoked`` is False when the key was already revoked (nothing written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str
    principals: tuple[str, ...]
    revoked: bool
    actor: str
    reason: str
    commit: str | None = None
    trace_id: str | None = None

    def message(self) -> str:
        """One line for a person."""
        owners = ", ".join(self.principals) or "no registered identity"
        if not self.revoked:
            return f"key {self.fingerprint} of {owners} is already revoked in {REVOKED_KEYS}; nothing changed"
        return (f"revoked key {self.fingerprint} of {owners} in {REVOKED_KEYS} (commit {(self.commit or '')[:12]}): "
                "it signs nothing more, also in waits already open")


def _one_line(value: str | None, field: str, example: str) -> str:
    # The value becomes a commit trailer and a ledger column: one line, whitespace folded.
    text = " ".join((value or "").split())
    if not text:
        raise InvalidInput(f"{field}: give {example}")
    return text


def find_key(registry: Registry, target: str) -> tuple[RegisteredKey, tuple[str, ...]] | None:
    """The registered key ``target`` names, with every principal it is registered to; None when already revoked.

    Args:
        registry: the registry as the GitOps repository holds it.
        target: a principal (``user:alice``, any case or spacing) or a key fingerprint (``SHA256:...``).

    Raises:
        InvalidInput: naming ``target``: not registered, or a principal with more than one key not revoked.
    """
    target = target.strip()
    if target.startswith(FINGERPRINT_PREFIX):
        lines = [key for key in registry.keys if key.fingerprint == target]
        if not lines and target in registry.revoked:
            return None  # revoked, and since removed from allowed_signers
        if not lines:
            raise InvalidInput(f"target: key {target} is not registered in {ALLOWED_SIGNERS}")
    else:
        principal = normalise_identity(target)
        lines = [key for key in registry.keys if principal in key.principals]
        if not lines:
            known = ", ".join(sorted({p for key in registry.keys for p in key.principals})) or "none"
            raise InvalidInput(f"target: {target!r} is not a principal of {ALLOWED_SIGNERS} (registered: {known})")
    active = sorted({key.fingerprint for key in lines if key.fingerprint not in registry.revoked})
    if len(active) > 1:
        raise InvalidInput(f"target: {target} has {len(active)} keys not revoked ({', '.join(active)}): "
                           "give the fingerprint of the one to revoke")
    if not active:
        return None
    key = next(key for key in lines if key.fingerprint == active[0])
    # the same key may be registered under several identities: revoking it revokes it for all of them
    principals = tuple(sorted({p for line in registry.keys if line.fingerprint == key.fingerprint
                               for p in line.principals}))
    return key, principals


def _already(registry: Registry, target: str, *, actor: str, reason: str) -> Revocation:
    fingerprints = {target.strip()} if target.strip().startswith(FINGERPRINT_PREFIX) else {
        key.fingerprint for key in registry.keys if normalise_identity(target) in key.principals}
    principals = {p for key in registry.keys if key.fingerprint in fingerprints for p in key.principals}
    return Revocation(fingerprint=", ".join(sorted(fingerprints)), principals=tuple(sorted(principals)),
                      revoked=False, actor=actor, reason=reason)


def revoke_key(repo: IdentityRepo, target: str, *, actor: str | None, reason: str | None, ledger: Ledger,
               emitter: Callable[..., Any] | None = None) -> Revocation:
    """Revoke the key ``target`` names: commit it to ``identities/revoked_keys``, record it, emit the event.

    Idempotent: a key already revoked writes nothing and comes back with ``revoked=False``.

    Args:
        repo: the GitOps repository that holds the registry.
        target: a principal with one key not revoked, or a key fingerprint (``SHA256:...``).
        actor: who revokes (audited: a commit trailer, the ledger's actor).
        reason: why, in words (audited with it).
        ledger: where the action is recorded.
        emitter: emits ``IdentityRevoked`` (delivery.events.emit); None emits nothing.

    Raises:
        InvalidInput: no actor or reason, an unknown target, or an ambiguous principal (the message names
            the field).
    """
    actor = _one_line(actor, "actor", "the identity revoking the key, e.g. user:alice")
    reason = _one_line(reason, "reason", "why the key is revoked (kept in the commit and the ledger)")
    allowed, revoked_text = repo.read_identities()
    registry = Registry.parse(allowed, revoked_text)
    found = find_key(registry, target)
    if found is None:
        return _already(registry, target, actor=actor, reason=reason)
    key, principals = found
    trace_id = new_trace_id()
    owners = ", ".join(principals)
    entry = f"# {key.fingerprint} of {owners}: revoked by {actor} at {utcnow():%Y-%m-%dT%H:%M:%SZ}: {reason}\n" \
            f"{key.public_key} {','.join(principals)}\n"
    kept = revoked_text if not revoked_text or revoked_text.endswith("\n") else revoked_text + "\n"
    commit = repo.write_files(
        {REVOKED_KEYS: (kept + entry).encode()}, message=f"Revoke the signing key of {owners}",
        trailers=[("Revoked-Key", key.fingerprint), ("Revoked-By", actor), ("Reason", reason),
                  ("Trace-Id", trace_id)])
    detail = {"fingerprint": key.fingerprint, "principals": list(principals), "commit": commit.sha,
              "trace_id": trace_id}
    ledger.record_action(IDENTITIES_RECORD, action=IDENTITY_REVOKED, actor=actor,
                         reason=f"key {key.fingerprint} of {owners} revoked: {reason}", detail=detail,
                         key=key.fingerprint)
    if emitter is not None:
        emitter(EventName.IDENTITY_REVOKED, release_id=IDENTITIES_RECORD, trace_id=trace_id,
                payload={**detail, "actor": actor, "reason": reason},
                resource={"delivery.key": key.fingerprint})
    return Revocation(fingerprint=key.fingerprint, principals=principals, revoked=True, actor=actor, reason=reason,
                      commit=commit.sha, trace_id=trace_id)


__all__ = ["IdentityRepo", "Revocation", "find_key", "revoke_key"]
