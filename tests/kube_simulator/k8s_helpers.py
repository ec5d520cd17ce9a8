"""Helpers shared by the simulator tests (manifests, expected failures, polling with a deadline)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException


def deployment(name: str = "web", *, replicas: int = 2, image: str = "nginx:1.27", **extra: Any) -> dict:
    """A valid Deployment manifest; ``extra`` is merged into the pod template's annotations/spec."""
    labels = {"app": name}
    template: dict = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": image}]}}
    if extra.get("annotations"):
        template["metadata"]["annotations"] = extra["annotations"]
    spec: dict = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    if "progress_deadline" in extra:
        spec["progressDeadlineSeconds"] = extra["progress_deadline"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels}, "spec": spec}


def configmap(name: str, labels: dict | None = None, data: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {"key": "value"},
    }


def api_error(call: Callable[[], object]) -> tuple[int, dict]:
    """Run a call that must fail; return its HTTP status and the decoded Status body."""
    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def condition(obj: Any, kind: str) -> Any:
    """A condition of a typed object's status, by type (None when absent)."""
    for cond in (obj.status.conditions if obj.status else None) or []:
        if cond.type == kind:
            return cond
    return None
