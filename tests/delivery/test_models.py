"""The release request refuses bad input with a message naming the problem."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from delivery.models import Artifact, ReleaseRequest


def artifact(**overrides: Any) -> dict[str, Any]:
    text = overrides.pop("text", "print('hi')\n")
    body = {
        "artifact_id": "svc-main",
        "path": "app/main.py",
        "content": text,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "validation": {"passed": True, "validator": "ci-lint"},
    }
    body.update(overrides)
    return body


def request(**overrides: Any) -> dict[str, Any]:
    body = {"release_id": "rel-1", "app": "shop", "artifacts": [artifact()], "requested_by": "agent:rm"}
    body.update(overrides)
    return body


def test_a_valid_request_is_accepted_and_derives_its_branch():
    req = ReleaseRequest.model_validate(request())
    assert req.branch == "release/rel-1"
    assert req.artifacts[0].data() == b"print('hi')\n"
    assert len(req.trace_id) == 32


def test_binary_artifact_in_base64_is_verified():
    data = b"\x00\x01binary"
    art = Artifact.model_validate(artifact(content=None, content_base64=base64.b64encode(data).decode(),
                                           sha256=hashlib.sha256(data).hexdigest()))
    assert art.data() == data


BAD_REQUESTS = [
    ("path with ../", request(artifacts=[artifact(path="../outside.py")]), "escapes"),
    ("path with inner ..", request(artifacts=[artifact(path="app/../../x.py")]), "escapes"),
    ("absolute path", request(artifacts=[artifact(path="/etc/passwd")]), "absolute"),
    ("path into .git", request(artifacts=[artifact(path=".git/config")]), ".git"),
    ("nested .git", request(artifacts=[artifact(path="vendor/.GIT/hooks/x")]), ".git"),
    ("path with ./", request(artifacts=[artifact(path="app/./x.py")]), "escapes"),
    ("path with //", request(artifacts=[artifact(path="app//x.py")]), "escapes"),
    ("path ending in /", request(artifacts=[artifact(path="app/")]), "escapes"),
    ("windows separators", request(artifacts=[artifact(path="app\\x.py")]), "not a POSIX"),
    ("empty artifact list", request(artifacts=[]), "artifacts"),
    ("duplicate artifact ids",
     request(artifacts=[artifact(), artifact(path="app/other.py")]), "duplicate artifact_id 'svc-main'"),
    ("two artifacts on one path",
     request(artifacts=[artifact(), artifact(artifact_id="svc-2")]), "same path"),
    ("validation did not pass",
     request(artifacts=[artifact(validation={"passed": False, "validator": "ci-lint"})]), "did not pass"),
    ("malformed sha256", request(artifacts=[artifact(sha256="not-hex")]), "should match pattern"),
    ("sha256 mismatch", request(artifacts=[artifact(sha256="0" * 64)]), "sha256 mismatch"),
    ("content_base64 not base64",
     request(artifacts=[artifact(content=None, content_base64="%%%", sha256="0" * 64)]), "not base64"),
    ("both contents", request(artifacts=[artifact(content_base64="eA==")]), "exactly one of content"),
    ("release id with ..", request(release_id="a..b"), "release_id 'a..b' is invalid"),
    ("release id with space", request(release_id="rel 1"), "release_id 'rel 1' is invalid"),
    ("release id ending .lock", request(release_id="rel.lock"), "is invalid"),
    ("release id with slash (bad branch)", request(release_id="rel/../x"), "is invalid"),
    ("release id starting with -", request(release_id="-rel"), "is invalid"),
    ("unknown field", request(priority="high"), "priority"),
    ("bad app name", request(app="Shop!"), "app"),
    ("blank requester", request(requested_by="   "), "requested_by"),
    ("bad trace id", request(trace_id="x"), "trace_id"),
    ("canary steps not ending at 100", request(strategy={"name": "canary", "steps": [10, 50]}), "ending at 100"),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_are_refused_with_a_message_naming_the_problem(case: str, body: dict, message: str):
    with pytest.raises(ValidationError) as info:
        ReleaseRequest.model_validate(body)
    assert message in str(info.value), f"{case}: {info.value}"
