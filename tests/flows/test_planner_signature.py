"""The planner's signature over a release request (issue 11, point 2), through the real release flow.

A release whose path passes an environment with ``approval.signed: true`` (staging here, as in
examples/gitops) must carry its planner's signature over the request. Unsigned, signed by a key that
is not registered, by a revoked key, or over another request (a different digest): each is refused
before the first write, in one sentence naming the ``signature`` field, and audited. "Nothing
written" is every ref and object of the repositories, the simulator, the stack's snapshot and every
ledger table, except the one audit row: the ``request-refused`` action that says who was refused and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.promotion import delivery_yaml
from support.release import PLANNER, ReleaseStack, Services, everything, wire_release_stack

from delivery.errors import InvalidInput
from delivery.identity import ALLOWED_SIGNERS, REVOKED_KEYS, generate_key, sign
from delivery.ledger import REQUEST_REFUSED
from delivery.models import Artifact, ReleaseRequest
from delivery.signing import request_statement, verify_request
from tasks.approval import load_registry, verify_planner_signature


@dataclass
class Keys:
    """The planner's registered key, an old key of the planner (revoked) and a key never registered."""

    registered: Path
    revoked: Path
    unregistered: Path


@pytest.fixture
def signed_stack(services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger) -> ReleaseStack:
    """The wired product with staging's approvals signed, its GitOps repository registering the planner's keys."""
    config = delivery_yaml(services.runtime_ref)
    config["environments"]["staging"]["approval"]["signed"] = True
    return wire_release_stack(services, tmp_path, monkeypatch, ledger, config=config)


@pytest.fixture
def keys(signed_stack: ReleaseStack) -> Keys:
    folder = signed_stack.root / "keys"
    folder.mkdir()
    keys = Keys(registered=folder / "planner", revoked=folder / "planner-old", unregistered=folder / "stranger")
    lines = [generate_key(keys.registered, identity=PLANNER), generate_key(keys.revoked, identity=PLANNER)]
    generate_key(keys.unregistered, identity=PLANNER)  # a key of the planner's name nobody registered
    signed_stack.repo.write_files({ALLOWED_SIGNERS: ("\n".join(lines) + "\n").encode(),
                                   REVOKED_KEYS: keys.revoked.with_suffix(".pub").read_bytes()},
                                  message="Register the planner's keys", trailers=())
    return keys


def signed(request: ReleaseRequest, key: Path, *, over: ReleaseRequest | None = None) -> ReleaseRequest:
    """``request`` carrying a signature by ``key`` over ``over`` (default: over itself)."""
    statement = request_statement(over or request, at=datetime.now(UTC))
    return request.model_copy(update={"signature": sign(statement, key_path=key).render()})


def refused_and_only_audited(stack: ReleaseStack, request: ReleaseRequest, why: str) -> dict[str, Any]:
    """Run the release: refused naming ``signature`` with ``why``; nothing written but one audit row."""
    from flows.release import release

    before = everything(stack)
    state = release(request=request, return_state=True)
    assert state.is_failed(), state
    assert state.message.startswith("InvalidInput: signature: ") and why in state.message, state.message
    with pytest.raises(InvalidInput, match=r"^signature: "):
        state.result()
    after = everything(stack)
    # The audit row is the only write: one more release_actions row, nothing else anywhere.
    assert after["ledger"].pop("release_actions") == before["ledger"].pop("release_actions") + 1
    assert after == before
    audit = stack.ledger.actions(release_id=request.release_id, action=REQUEST_REFUSED)
    assert len(audit) == 1, audit
    assert (audit[0]["actor"], audit[0]["reason"]) == (PLANNER, state.message.removeprefix("InvalidInput: "))
    assert audit[0]["detail"]["field"] == "signature" and audit[0]["detail"]["revision"] == request.revision
    assert request.signature.strip() not in str(audit[0]) or not request.signature.strip()  # its digest only
    return audit[0]


def test_an_unsigned_request_is_refused_and_audited(signed_stack: ReleaseStack, keys: Keys) -> None:
    request = signed_stack.request(target_environment="staging")
    audit = refused_and_only_audited(signed_stack, request, f"{PLANNER} must sign the request")
    assert audit["detail"]["signature_digest"] is None


def test_a_signature_by_an_unregistered_key_is_refused(signed_stack: ReleaseStack, keys: Keys) -> None:
    request = signed(signed_stack.request(target_environment="staging"), keys.unregistered)
    audit = refused_and_only_audited(signed_stack, request, f"is not registered in {ALLOWED_SIGNERS}")
    assert audit["detail"]["signature_digest"].startswith("sha256:")


def test_a_signature_by_a_revoked_key_is_refused(signed_stack: ReleaseStack, keys: Keys) -> None:
    request = signed(signed_stack.request(target_environment="staging"), keys.revoked)
    refused_and_only_audited(signed_stack, request, f"of {PLANNER} was revoked")


def test_a_signature_over_another_request_is_refused(signed_stack: ReleaseStack, keys: Keys) -> None:
    request = signed_stack.request(target_environment="staging")
    # The same release id and planner, other content: the signed request digest is not this request's.
    other = request.model_copy(update={"artifacts": [Artifact.from_text("release-notes", "CHANGES.md", "- other\n")]})
    request = signed(request, keys.registered, over=other)
    refused_and_only_audited(signed_stack, request, "signed a different statement: request_digest")

    # The same refused request sent again is audited once (the audit row is keyed on the signature).
    from flows.release import release

    assert release(request=request, return_state=True).is_failed()
    assert len(signed_stack.ledger.actions(release_id=request.release_id, action=REQUEST_REFUSED)) == 1


def test_the_planners_own_signature_verifies(signed_stack: ReleaseStack, keys: Keys) -> None:
    # The control of the refusals above: the same check passes a request its planner signed with the
    # registered key, and audits nothing (the flow then releases: test_release_demo, test_release_e2e).
    request = signed(signed_stack.request(target_environment="staging"), keys.registered)
    check = verify_request(request, request.signature, registry=load_registry())
    assert check.refused is None and check.principals == (PLANNER,), check
    assert verify_planner_signature.fn(request) == check.fingerprint
    assert signed_stack.ledger.actions(action=REQUEST_REFUSED) == []
    assert yaml.safe_load(signed_stack.repo.read_config())["environments"]["staging"]["approval"]["signed"] is True
