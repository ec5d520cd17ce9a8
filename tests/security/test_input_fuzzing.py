"""Property-based fuzzing of every input a release reads (issue 11, point 7).

The release request (the ``request`` parameter dict of the release flow, and the same dict through
the client ``delivery release start`` uses), ``delivery.yaml``, ``delivery-build.yaml`` and the
manifest templates: documents that are valid but for one broken field, and arbitrary text. Every bad
input is refused with the product's :class:`InvalidInput` naming the field (never a bare KeyError,
TypeError, pydantic or YAML error); a good input is accepted. No Prefect server is needed: these
are the validations the flow and the stages run before anything is written.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from security_strategies import (
    ARBITRARY_JSON,
    NOT_A_MAPPING,
    SECURITY,
    Broken,
    bad_build_settings,
    bad_configs,
    bad_requests,
    bad_templates,
    deploy_templates,
    good_configs,
    good_requests,
    manifest_spec,
    names_field,
)

from cli.client import DeliveryClient
from cli.release import build_request
from delivery.build_settings import parse_build_settings
from delivery.config import load_config
from delivery.errors import InvalidInput
from delivery.intake import parse_request
from delivery.manifests import ManifestSpec, render
from delivery.models import ReleaseRequest
from flows.release import release
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
    from security_strategies import request_base

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
