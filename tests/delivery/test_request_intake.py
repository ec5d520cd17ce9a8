"""A release request as the Prefect UI's form sends it: digests optional, plain string fields, a source ref.

Each refusal is one sentence naming the field (``delivery.intake.parse_request``), the sentence the
release run shows as its state message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

from delivery.errors import InvalidInput
from delivery.identity import digest
from delivery.intake import parse_request
from delivery.models import ReleaseRequest
from delivery.signing import request_digest

TEXT = "print('hi')\n"
DIGEST = hashlib.sha256(TEXT.encode()).hexdigest()


def artifact(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"artifact_id": "svc-main", "path": "app/main.py", "content": TEXT,
                            "validation": {"passed": True, "validator": "ci-lint"}}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"release_id": "rel-1", "app": "shop", "artifacts": [artifact()], "requested_by": "agent:rm"}
    body.update(overrides)
    return body


DIGESTS = [
    ("given and correct", {"sha256": DIGEST}, DIGEST),
    ("given in upper case", {"sha256": DIGEST.upper()}, DIGEST),
    ("left out", {"sha256": ...}, DIGEST),
    ("left empty (the form's default)", {"sha256": ""}, DIGEST),
    ("left out, binary content", {"content": "", "content_base64": base64.b64encode(b"\x00bin").decode()},
     hashlib.sha256(b"\x00bin").hexdigest()),
    ("left out, empty file", {"content": ""}, hashlib.sha256(b"").hexdigest()),
]


@pytest.mark.parametrize(("case", "changes", "recorded"), DIGESTS, ids=[c[0] for c in DIGESTS])
def test_a_digest_given_is_verified_and_one_left_out_is_computed_and_recorded(case, changes, recorded):
    req = parse_request(request(artifacts=[artifact(**changes)]))
    assert req.artifacts[0].sha256 == recorded, case
    # Recorded in the request itself: what the later stages, the ledger and the planner's digest see.
    assert req.model_dump(mode="json")["artifacts"][0]["sha256"] == recorded
    declared = {**changes, "sha256": recorded}
    assert request_digest(req) == request_digest(parse_request(request(artifacts=[artifact(**declared)])))


REFUSED = [
    ("digest given and wrong", request(artifacts=[artifact(sha256="0" * 64)]),
     f"artifacts.0.sha256: sha256 mismatch: declared {'0' * 64}, the content's digest is {DIGEST} "
     "(leave it empty to compute it)"),
    ("digest not hex", request(artifacts=[artifact(sha256="abc")]), "artifacts.0.sha256: String should match"),
    ("path escaping", request(artifacts=[artifact(path="../x")]),
     "artifacts.0.path: '../x' escapes the repository or is not a file inside it"),
    ("both contents", request(artifacts=[artifact(content_base64="eA==")]),
     "artifacts.0.content_base64: give exactly one of content or content_base64, not both"),
    ("not base64", request(artifacts=[artifact(content="", content_base64="%%%")]),
     "artifacts.0.content_base64: is not base64"),
    ("validation failed", request(artifacts=[artifact(validation={"passed": False, "validator": "lint"})]),
     "artifacts.0.validation: validation by lint did not pass"),
    ("neither artifacts nor source", request(artifacts=[]),
     "artifacts, source.ref: give exactly one of artifacts or source.ref (neither was given)"),
    ("both artifacts and source", request(source={"ref": "feature/x"}),
     "artifacts, source.ref: give exactly one of artifacts or source.ref (both were given)"),
    ("source ref escaping", request(artifacts=[], source={"ref": "a/../b"}),
     "source.ref: 'a/../b' is not a branch, tag or commit name"),
    ("source ref with a space", request(artifacts=[], source={"ref": "a b"}), "source.ref: String should match"),
    ("two problems", request(app="Shop!", requested_by=" "), "(and 1 more problem)"),
]


@pytest.mark.parametrize(("case", "body", "sentence"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refusal_is_one_sentence_naming_the_field(case, body, sentence):
    with pytest.raises(InvalidInput) as info:
        parse_request(body)
    assert sentence in str(info.value), case
    assert "\n" not in str(info.value)


def test_the_form_schema_has_plain_string_fields_for_the_content_and_the_digest():
    schema = ReleaseRequest.model_json_schema()
    artifact_schema = schema["$defs"]["Artifact"]
    for name in ("content", "content_base64", "sha256"):
        field = artifact_schema["properties"][name]
        assert field["type"] == "string" and field["default"] == "", name
        assert "anyOf" not in field and "oneOf" not in field, name
    assert artifact_schema["required"] == ["artifact_id", "path", "validation"]
    report_url = schema["$defs"]["ArtifactValidation"]["properties"]["report_url"]
    assert report_url["type"] == "string" and "anyOf" not in report_url
    target = schema["properties"]["target_environment"]
    assert target["type"] == "string" and "anyOf" not in target
    # The source is an object with one text field, not a union: the form shows a text box.
    assert schema["properties"]["source"]["$ref"] == "#/$defs/ReleaseSource"
    assert schema["$defs"]["ReleaseSource"]["properties"]["ref"]["type"] == "string"
    assert "artifacts" not in schema.get("required", [])


def test_json_of_the_earlier_schema_still_parses():
    old = request(artifacts=[artifact(content=None, content_base64=base64.b64encode(b"x").decode(),
                                      sha256=hashlib.sha256(b"x").hexdigest(),
                                      validation={"passed": True, "validator": "ci", "report_url": None})],
                  target_environment=None)
    req = parse_request(old)
    assert req.artifacts[0].data() == b"x" and req.target_environment == ""
    assert req.artifacts[0].validation.report_url == ""


def test_the_planners_digest_is_unchanged_for_artifacts_and_covers_the_source_ref():
    req = parse_request(request())
    # Computed exactly as before the source field existed: a signature made earlier still verifies.
    assert request_digest(req) == digest({
        "release_id": "rel-1", "app": "shop", "revision": 1, "target_environment": None, "requested_by": "agent:rm",
        "strategy": None, "artifacts": [{"artifact_id": "svc-main", "path": "app/main.py", "sha256": DIGEST}]})
    one = parse_request(request(artifacts=[], source={"ref": "feature/a"}))
    other = parse_request(request(artifacts=[], source={"ref": "feature/b"}))
    assert request_digest(one) != request_digest(other) != request_digest(req)


def test_a_source_release_has_no_artifacts_and_names_its_ref():
    req = parse_request(request(artifacts=[], source={"ref": "0123456789abcdef0123456789abcdef01234567"}))
    assert req.artifacts == [] and req.source.ref.startswith("0123")
    assert parse_request(req) is req  # an already built request passes through


IDS = {"release_id": "rel-20261203-0a1b2c3d", "trace_id": "0" * 32}


@pytest.mark.parametrize("left_out", [..., None, ""], ids=["absent", "null", "empty"])
def test_ids_left_out_are_taken_from_the_run_and_ids_given_are_kept(left_out):
    body = {key: value for key, value in request(release_id=left_out, trace_id=left_out).items() if value is not ...}
    req = parse_request(body, ids=IDS)
    assert (req.release_id, req.trace_id) == (IDS["release_id"], IDS["trace_id"])
    given = parse_request(request(trace_id="given-trace-1"), ids=IDS)
    assert (given.release_id, given.trace_id) == ("rel-1", "given-trace-1")


def test_ids_derived_from_a_run_are_stable_valid_and_differ_between_runs():
    from datetime import UTC, datetime
    from uuid import UUID

    from delivery.ids import check_release_id, release_id_for_run, trace_id_for_run

    created = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)
    # UUIDv7 as Prefect makes them: runs created in the same millisecond share the leading digits
    one, other = UUID("019ae5f2-4c00-7000-8000-00000000000a"), UUID("019ae5f2-4c00-7000-8000-00000000000b")
    assert release_id_for_run(one, created) == release_id_for_run(one, created)
    assert release_id_for_run(one, created) != release_id_for_run(other, created)
    assert re.fullmatch(r"rel-20261203-[0-9a-f]{8}", check_release_id(release_id_for_run(one, created)))
    assert release_id_for_run(one, created.replace(tzinfo=None)) == release_id_for_run(one, created)
    assert trace_id_for_run(one) == one.hex
    derived = parse_request(request(release_id=None, trace_id=None),  # both pass the request's own rules
                            ids={"release_id": release_id_for_run(one, created), "trace_id": trace_id_for_run(one)})
    assert derived.trace_id == one.hex and derived.release_id.startswith("rel-20261203-")
