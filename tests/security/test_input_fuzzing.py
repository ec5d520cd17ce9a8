"""Property-based fuzzing of every input a release reads (issue 11, point 7).

The release request (the ``request`` parameter dict of the release flow, and the same dict through
the client ``delivery release start`` uses), ``delivery.yaml``, ``delivery-build.yaml``, the
manifest templates and the approval inputs (the signed statement, the pasted signature, an
approval's run input): documents that are valid but for one broken field, and arbitrary text. Every
bad input is refused with the product's :class:`InvalidInput` naming the field (never a bare KeyError,
TypeError, pydantic or YAML error; an approval's run input is refused by the wait's schema, with
Prefect's ValidationError naming the field, as the resume call refuses it); a good input is
accepted. No Prefect server is needed: these are the validations the flow and the stages run before
anything is written.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect.utilities.schema_tools import ValidationError as RunInputRefused
from prefect.utilities.schema_tools import validate as validate_run_input
from pydantic import ValidationError
from security_strategies import (
    APPROVAL_STATEMENT,
    ARBITRARY_JSON,
    NOT_A_MAPPING,
    SECURITY,
    SIGNED_APPROVAL,
    Broken,
    approval_inputs,
    bad_build_settings,
    bad_configs,
    bad_requests,
    bad_statements,
    bad_templates,
    deploy_templates,
    good_configs,
    good_requests,
    manifest_spec,
    names_field,
    pasted_signatures,
    request_base,
    signing_registry,
    statement_values,
)

from cli.client import DeliveryClient
from cli.release import build_request
from delivery.approvals import ApprovalInput
from delivery.build_settings import parse_build_settings
from delivery.config import ApprovalRules, load_config
from delivery.errors import InvalidInput
from delivery.identity import SignatureRefused, SignedStatement, Statement
from delivery.intake import parse_request
from delivery.manifests import ManifestSpec, render
from delivery.models import BuildResult, BuildStatus, ReleaseRequest, RollingStrategy
from delivery.plan import ReleasePlan
from delivery.signing import check_signature, split_pasted, verify_request
from flows.release import release
from tasks.approval_form import WaitContext, decision_form
from tasks.stage import coerce

# Nothing listens here: a request that passed local validation would fail with TransientError,
# which is not InvalidInput, so the property also proves nothing reaches the server first.
UNREACHABLE_API = "http://127.0.0.1:9/api"


def refusal(call: Any, *args: Any, expected: type[BaseException] = InvalidInput) -> str:
    """Run ``call``; it must raise ``expected`` (anything else escaping fails the property)."""
    with pytest.raises(expected) as caught:
        call(*args)
    return str(caught.value)


def assert_names(message: str, broken: Broken) -> None:
    assert names_field(message, broken.field), f"{broken.what}: {broken.field!r} not named in: {message}"


# --------------------------------------------------------------------------- the release request


def flow_parameters(body: Any) -> Any:
    """What the release flow does with its parameter first (it validates it itself: validate_parameters=False)."""
    assert release.should_validate_parameters is False
    return {"request": parse_request(body)}


def start(body: Any) -> Any:
    with DeliveryClient(UNREACHABLE_API, retries=0, timeout=2) as client:
        return client.start_release(body)


@settings(SECURITY, max_examples=200)
@given(bad_requests())
def test_a_broken_request_is_refused_naming_its_field(broken: Broken):
    # The users' path (`delivery release start`, agents): the product's InvalidInput, before any HTTP.
    assert_names(refusal(start, broken.document), broken)
    # The flow itself (a run created by hand or from the UI): refused before anything is written, in one
    # sentence naming the same field (the run's state message).
    message = refusal(flow_parameters, broken.document)
    assert "\n" not in message
    assert_names(message, broken)


@settings(SECURITY, max_examples=60)
@given(ARBITRARY_JSON)
def test_any_json_value_as_a_request_is_refused(value: Any):
    refusal(start, value)
    refusal(flow_parameters, value)


@settings(SECURITY, max_examples=60)
@given(st.one_of(st.text(max_size=300), ARBITRARY_JSON.map(json.dumps)))
def test_any_text_as_a_request_file_is_refused(text: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "request.json"
        path.write_text(text)
        try:
            body = build_request(file=path, app=None, artifacts=[], requested_by=None, target=None, strategy=None,
                                 release_id=None, revision=None)
        except InvalidInput as exc:
            assert "--file" in str(exc)
            return
    refusal(start, body)


@settings(SECURITY, max_examples=60)
@given(good_requests())
def test_a_good_request_is_accepted(body: dict[str, Any]):
    request = ReleaseRequest.model_validate(body)
    validated = flow_parameters(body)["request"]
    assert validated.model_dump(exclude={"trace_id"}) == request.model_dump(exclude={"trace_id"})


# --------------------------------------------------------------------------- delivery.yaml


@settings(SECURITY, max_examples=200)
@given(bad_configs())
def test_a_broken_delivery_yaml_is_refused_naming_its_field(broken: Broken):
    message = refusal(load_config, broken.document)
    assert message.startswith("delivery.yaml: ")
    assert_names(message, broken)


@settings(SECURITY, max_examples=80)
@given(NOT_A_MAPPING)
def test_a_delivery_yaml_that_is_not_a_mapping_is_refused(text: str):
    message = refusal(load_config, text)
    assert message.startswith("delivery.yaml: ")


@settings(SECURITY, max_examples=50)
@given(good_configs())
def test_a_good_delivery_yaml_is_accepted(text: str):
    assert load_config(text).path == ["dev", "staging", "prod"]


# --------------------------------------------------------------------------- delivery-build.yaml


@settings(SECURITY, max_examples=150)
@given(bad_build_settings())
def test_a_broken_delivery_build_yaml_is_refused_naming_its_field(broken: Broken):
    message = refusal(parse_build_settings, broken.document)
    assert message.startswith("delivery-build.yaml: ")
    assert_names(message, broken)


@settings(SECURITY, max_examples=80)
@given(NOT_A_MAPPING)
def test_a_delivery_build_yaml_that_is_not_a_mapping_is_refused(text: str):
    message = refusal(parse_build_settings, text)
    assert message.startswith("delivery-build.yaml: ")


def test_the_sample_build_settings_are_accepted():
    from security_strategies import BUILD_SETTINGS

    assert parse_build_settings(BUILD_SETTINGS).app == "sample-app"


# --------------------------------------------------------------------------- manifest templates


def render_spec(spec: Any) -> Any:
    """The body of stage 10 (render_manifest) without its event: validate the input, render."""
    return render(coerce(ManifestSpec, spec, stage_name="render_manifest"))


@settings(SECURITY, max_examples=200)
@given(bad_templates())
def test_a_broken_template_is_refused_naming_the_file_and_field(broken: Broken):
    document = broken.document
    if "spec_changes" in document:
        message = refusal(render_spec, manifest_spec(document["templates"], document["spec_changes"]))
        assert message.startswith("render_manifest: invalid input: ")
    else:
        message = refusal(render_spec, manifest_spec(document))
        assert message.startswith("deploy/"), message
    assert_names(message, broken)


@settings(SECURITY, max_examples=100)
@given(st.text(max_size=300))
def test_any_text_as_a_template_renders_or_is_refused_naming_the_file(text: str):
    templates = {**deploy_templates(), "zz-any.yaml.j2": text}
    try:
        manifest = render_spec(manifest_spec(templates))
    except InvalidInput as exc:
        assert str(exc).startswith("deploy/"), str(exc)
        return
    assert "deployment-sample-app.yaml" in manifest.files


def test_the_sample_templates_render():
    manifest = render_spec(manifest_spec(deploy_templates()))
    assert sorted(manifest.files) == ["configmap-sample-app-config.yaml", "deployment-sample-app.yaml",
                                      "ingress-sample-app.yaml", "service-sample-app.yaml"]


def test_a_template_cannot_reach_python_internals(tmp_path: Path):
    """A template is code from the application repository, where artifacts write: it runs sandboxed."""
    marker = tmp_path / "pwned"
    payload = f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
    templates = {**deploy_templates(), "zz-evil.yaml.j2": f"# {payload}\n"}
    message = refusal(render_spec, manifest_spec(templates))
    assert message.startswith("deploy/zz-evil.yaml.j2 line 1: SecurityError: ")
    assert not marker.exists()


# Found by fuzzing: `re.match` with a pattern ending in "$" accepts a final newline ("rel\n" became
# the branch release/rel<newline>); the ids and names are now matched whole.
TRAILING_NEWLINE = [
    ("release_id", lambda body: {**body, "release_id": "rel-1\n"}),
    ("artifacts.0.artifact_id", lambda body: {**body, "artifacts": [{**body["artifacts"][0], "artifact_id": "a\n"},
                                                                    body["artifacts"][1]]}),
]


@pytest.mark.parametrize(("field", "change"), TRAILING_NEWLINE, ids=[f for f, _ in TRAILING_NEWLINE])
def test_an_id_with_a_trailing_newline_is_refused(field, change):
    body = change(request_base())
    assert names_field(refusal(start, body), field)
    assert names_field(refusal(flow_parameters, body), field)


@pytest.mark.parametrize(("where", "value"), [("image", "r/app@sha256:" + "a" * 64 + "\n"),
                                              ("metadata.name", "extra\n")])
def test_an_image_or_object_name_with_a_trailing_newline_is_refused(where, value):
    templates = deploy_templates()
    if where == "image":
        message = refusal(render_spec, manifest_spec(templates, {"image": value}))
    else:
        templates["zz-extra.yaml.j2"] = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "extra\\n"\n'
        message = refusal(render_spec, manifest_spec(templates))
    assert names_field(message, where), message


# --------------------------------------------------------------------------- approval inputs


@settings(SECURITY, max_examples=150)
@given(statement_values())
def test_any_value_in_a_statement_is_parsed_or_refused_naming_its_field(changed: Broken):
    try:
        parsed = Statement.parse(changed.document)
    except InvalidInput as exc:
        message = str(exc)
        assert message.startswith("statement"), message
        assert_names(message, changed)
        return
    assert parsed.canonical().decode().count("\n") == APPROVAL_STATEMENT.canonical().decode().count("\n")


@settings(SECURITY, max_examples=100)
@given(bad_statements())
def test_a_broken_statement_is_refused_naming_its_field(broken: Broken):
    message = refusal(Statement.parse, broken.document)
    assert message.startswith("statement"), message
    if broken.what == "value":  # a bad value names its field; a line out of place names its line and key
        assert_names(message.replace(", ".join(STATEMENT_KEYS), ""), broken)
    else:
        assert_names(message, broken)


STATEMENT_KEYS = ["kind", "signer", "release_id", "revision", "environment", "plan_digest", "decision",
                  "request_digest", "at"]


@settings(SECURITY, max_examples=80)
@given(st.text(max_size=400))
def test_any_text_as_a_statement_is_refused(text: str):
    assert refusal(Statement.parse, text).startswith("statement")
    refusal(SignedStatement.parse, text)


@settings(SECURITY, max_examples=150)
@given(pasted_signatures())
def test_any_pasted_signature_is_split_or_refused_and_never_counts(pasted: str):
    # What the flow does with the `signature` field of a decision and of a request: split it (or refuse
    # it naming the field), then verify it; a damaged signature is refused with a reason, never raised.
    try:
        _, armored = split_pasted(pasted)
    except InvalidInput as exc:
        assert str(exc).startswith("signature: "), str(exc)
    else:
        assert armored.startswith("-----BEGIN SSH SIGNATURE-----\n")
    check = check_signature(pasted, expected=APPROVAL_STATEMENT, registry=signing_registry())
    intact = "".join(SIGNED_APPROVAL.signature.split()) in "".join(pasted.split())
    assert check.refused or intact, check
    if check.refused is None:
        assert check.fingerprint and check.principals == ("user:alice",)


@settings(SECURITY, max_examples=100)
@given(pasted_signatures())
def test_any_pasted_text_as_a_signed_statement_is_refused_or_verified(pasted: str):
    # `delivery identity verify` reads SignedStatement.parse's input: a refusal names the signature or
    # the statement; what parses is then verified or refused by the registry with its reason.
    try:
        signed = SignedStatement.parse(pasted)
    except InvalidInput as exc:
        assert str(exc).startswith(("signature", "statement")), str(exc)
        return
    try:
        signing_registry().verify(signed)
    except SignatureRefused as exc:
        assert exc.reason
        return
    assert signed == SIGNED_APPROVAL


@settings(SECURITY, max_examples=60)
@given(pasted_signatures())
def test_any_pasted_text_as_a_request_signature_is_refused(pasted: str):
    # Even the intact signature is refused: it signs an approval, not this request. The flow prefixes
    # the reason with the field (`signature: the planner's signature over the request was refused: ...`).
    request = ReleaseRequest.model_validate(request_base("rel-fuzz-1"))
    check = verify_request(request, pasted, registry=signing_registry())
    assert check.refused and check.fingerprint is None, check


def approval_wait(*, signed: bool) -> WaitContext:
    """A wait of a signed (or not) environment where user:bob and user:carol may still decide."""
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit="c" * 40, run_id="run-1")
    plan = ReleasePlan(release_id="rel-fuzz-1", trace_id="t" * 32, app="sample-app", revision=1, environment="prod",
                       strategy=RollingStrategy(), planned_by="agent:release-manager", build=build)
    rules = ApprovalRules(required=True, approvers=["user:bob", "user:carol"], signed=signed)
    return WaitContext(plan=plan, rules=rules, key="approval-prod-r1-0", eligible=["user:bob", "user:carol"],
                       opened_at=APPROVAL_STATEMENT.at)


FORMS = {signed: decision_form(approval_wait(signed=signed)) for signed in (False, True)}


@settings(SECURITY, max_examples=200)
@given(approval_inputs(), st.booleans())
def test_any_approval_input_is_refused_by_the_wait_naming_its_field_or_judged(changed: Broken, signed: bool):
    # The resume call checks the run input against the wait's schema (Prefect's validate, as the server
    # does): refused naming the field; what it accepts, the flow reads as an ApprovalInput without error.
    form = FORMS[signed]
    run_input = dict(changed.document)
    if not signed and changed.field != "signature":  # an unsigned wait has no signature field
        del run_input["signature"]
    try:
        validate_run_input(run_input, form.model_json_schema(by_alias=True), raise_on_error=True)
    except RunInputRefused as exc:  # "Validation failed for field 'x'" or "('x' was unexpected)"
        assert repr(changed.field) in str(exc), (changed, str(exc))
        return
    received = form.model_validate(run_input)
    decision = ApprovalInput.model_validate(received.model_dump(include=set(ApprovalInput.model_fields)))
    assert decision.approver in ("user:bob", "user:carol")


@settings(SECURITY, max_examples=150)
@given(approval_inputs())
def test_any_approval_input_model_value_is_accepted_or_refused_naming_its_field(changed: Broken):
    # The model the client and the flow build a decision with: pydantic's error, located at the field.
    try:
        ApprovalInput.model_validate(changed.document)
    except ValidationError as exc:
        assert [".".join(map(str, e["loc"])) for e in exc.errors()] == [changed.field], exc
