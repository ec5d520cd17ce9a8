"""The build settings validation table: bad settings are refused with a message naming the field."""

from __future__ import annotations

import pytest

from delivery.build_settings import parse_build_settings
from delivery.errors import InvalidInput

GOOD = {
    "app": "sample-app",
    "test": {"command": "python -m pytest --junitxml=out/junit.xml", "junit": "out/junit.xml"},
    "package": {"name": "sample-app"},
    "image": {"repository": "sample-app", "context": "src", "command": ["python", "-m", "sample_app"]},
}


def with_change(section: str | None, key: str, value) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    target = data if section is None else data.setdefault(section, {})
    if value is ...:
        target.pop(key, None)
    else:
        target[key] = value
    return data


def dump(data) -> str:
    import yaml

    return yaml.safe_dump(data)


def test_the_good_settings_parse():
    settings = parse_build_settings(dump(GOOD))
    assert settings.test.junit == "out/junit.xml" and settings.pipeline.path == "azure-pipelines.yml"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (None, "colour", "blue", "colour: Extra inputs are not permitted"),
        ("test", "retries", 3, "test.retries: Extra inputs are not permitted"),
        ("image", "base", "python:3.11", "image.base: Extra inputs are not permitted"),
        ("test", "command", ..., "test.command: Field required"),
        ("test", "command", "   ", "test.command: the test command is empty"),
        (None, "test", ..., "test: Field required"),
        ("test", "working_directory", "../elsewhere", "test.working_directory: '../elsewhere' escapes the checkout"),
        ("test", "junit", "/tmp/junit.xml", "test.junit: '/tmp/junit.xml' is absolute"),
        ("test", "junit", "reports/../../junit.xml", "test.junit: 'reports/../../junit.xml' escapes the checkout"),
        ("package", "path", "../other-app", "package.path: '../other-app' escapes the checkout"),
        ("image", "context", "~/src", "image.context: '~/src' is absolute"),
        ("image", "context", ".git/hooks", "image.context: '.git/hooks' points into .git"),
        ("pipeline", "path", "../azure-pipelines.yml", "pipeline.path: '../azure-pipelines.yml' escapes"),
        ("image", "command", [], "image.command: List should have at least 1 item"),
        ("image", "repository", "Sample App", "image.repository: String should match pattern"),
        (None, "app", "Sample_App", "app: String should match pattern"),
        ("test", "timeout_minutes", 0, "test.timeout_minutes: Input should be greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(section, key, value, message):
    with pytest.raises(InvalidInput) as caught:
        parse_build_settings(dump(with_change(section, key, value)), source="sample-app:delivery-build.yaml")
    assert str(caught.value).startswith("sample-app:delivery-build.yaml: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"), [("app: [unclosed", "not valid YAML"), ("- a\n- b\n", "expected a mapping")]
)
def test_documents_that_are_not_settings_are_refused(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_build_settings(text)
