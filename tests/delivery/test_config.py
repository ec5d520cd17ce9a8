"""delivery.yaml: the schema, its validation table and the example the demo uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from delivery.config import load_config
from delivery.errors import InvalidInput
from delivery.models import CanaryStrategy, RollingStrategy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops" / "delivery.yaml"

MINIMAL = {
    "path": ["dev", "prod"],
    "environments": {
        "dev": {"namespace": "app-dev", "runtime": "kubernetes-runtime/local"},
        "prod": {
            "namespace": "app-prod",
            "runtime": "kubernetes-runtime/local",
            "approval": {"required": True, "approvers": ["user:alice", "user:bob"], "min_approvers": 2},
        },
    },
}


def _with(path: str, value) -> bytes:
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return yaml.safe_dump(data).encode()


_DELETE = object()


def test_example_loads_with_the_demo_rules() -> None:
    config = load_config(EXAMPLE.read_bytes())
    assert config.path == ["dev", "staging", "prod"]
    assert config.environments["dev"].approval.required is False
    assert config.environments["staging"].approval.min_approvers == 1
    prod = config.environments["prod"]
    assert prod.approval.required and prod.approval.min_approvers == 2
    assert isinstance(prod.strategy, CanaryStrategy) and prod.strategy.steps == [50, 100]
    assert config.path_to("staging") == ["dev", "staging"]
    assert config.path_to(None) == ["dev", "staging", "prod"]


def test_defaults() -> None:
    config = load_config(yaml.safe_dump(MINIMAL).encode())
    dev = config.environments["dev"]
    assert isinstance(dev.strategy, RollingStrategy)
    assert dev.drift.mode == "reconcile" and dev.drift.degraded_after == 3
    assert dev.health.timeout_seconds == 120 and dev.health.http_probe is None
    assert dev.infrastructure is None and dev.policies == {}


def test_shorthands() -> None:
    config = load_config(_with("environments.dev.health", {"http_probe": "http://127.0.0.1:8080/ready"}))
    assert config.environments["dev"].health.http_probe.url == "http://127.0.0.1:8080/ready"
    config = load_config(_with("environments.dev.health", {"http_probe": "/ready"}))
    probe = config.environments["dev"].health.http_probe
    assert (probe.url, probe.path, probe.port) == (None, "/ready", None)
    config = load_config(_with("environments.dev.strategy", "blue_green"))
    assert config.environments["dev"].strategy.name == "blue_green"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("environments.prod.approval.min_approvers", 3, "environments.prod.approval.min_approvers: 3 distinct"),
        ("environments.prod.approval.min_approvers", 0, "environments.prod.approval.min_approvers:"),
        ("environments.prod.approval.approvers", [], "environments.prod.approval.min_approvers: approval is required"),
        ("environments.prod.approval.approvers", ["user:a", "USER:A "], "prod.approval.approvers: approver"),
        ("environments.prod.approval.timeout_seconds", 0, "environments.prod.approval.timeout_seconds:"),
        ("environments.prod.approval.quorum", 2, "environments.prod.approval.quorum: Extra inputs"),
        ("environments.dev.policies", {"ok": "build.tests.failed =="}, "dev.policies.ok: CEL syntax error"),
        ("environments.dev.policies", {"ok": ""}, "environments.dev.policies.ok:"),
        ("environments.dev.strategy", "big_bang", "environments.dev.strategy: unknown strategy 'big_bang'"),
        ("environments.dev.strategy", {"name": "canary", "steps": [50, 10]}, "environments.dev.strategy.canary.steps"),
        ("environments.dev.runtime", "local", "environments.dev.runtime: String should match pattern"),
        ("environments.dev.namespace", _DELETE, "environments.dev.namespace: Field required"),
        ("environments.dev.namespace", "Not_A_Namespace", "environments.dev.namespace:"),
        ("environments.dev.drift", {"mode": "ignore"}, "environments.dev.drift.mode:"),
        ("environments.dev.drift", {"degraded_after": 0}, "environments.dev.drift.degraded_after:"),
        ("environments.dev.health", {"timeout_seconds": -1}, "environments.dev.health.timeout_seconds:"),
        ("environments.dev.health", {"http_probe": "healthz"}, "environments.dev.health.http_probe.path:"),
        ("environments.dev.health", {"http_probe": "ftp://x/"}, "environments.dev.health.http_probe.url:"),
        ("environments.dev.infrastructure", "not a ref", "environments.dev.infrastructure:"),
        ("path", ["dev", "dev"], "path: an environment appears twice"),
        ("path", [], "path: List should have at least 1 item"),
        ("path", ["dev", "qa", "prod"], "qa on the path but not under environments"),
        ("path", ["dev"], "prod configured but not on the path"),
        ("environments", {}, "path: dev, prod on the path but not under environments"),
        ("colour", "blue", "colour: Extra inputs are not permitted"),
    ],
)
def test_validation_table(path: str, value, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_config(_with(path, value))
    assert expected in str(info.value)
    assert str(info.value).startswith("delivery.yaml: ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "not found"),
        (b"", "the file is empty"),
        (b"path: [dev\n", "not valid YAML"),
        (b"- dev\n- prod\n", "expected a mapping"),
    ],
)
def test_unreadable_files(raw, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        load_config(raw)


def test_unknown_environment_is_named() -> None:
    config = load_config(yaml.safe_dump(MINIMAL).encode())
    with pytest.raises(InvalidInput, match="unknown environment 'qa'; the promotion path is dev -> prod"):
        config.path_to("qa")
