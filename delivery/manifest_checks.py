"""The checks a rendered Kubernetes object must pass before anything is committed.

Each refusal names the template file, the object and the field, e.g.
``deploy/app.yaml.j2: Deployment/web: field spec.replicas must be an integer in [0, 1000], got -1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from delivery.errors import InvalidInput

DIGEST_REFERENCE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def object_problem(display: str, obj: Mapping[str, Any], field: str, problem: str) -> InvalidInput:
    """The refusal of an object rendered from ``display``: file, ``kind/name``, field and problem."""
    kind = obj.get("kind", "?")
    name = (obj.get("metadata") or {}).get("name", "?") if isinstance(obj.get("metadata"), dict) else "?"
    return InvalidInput(f"{display}: {kind}/{name}: field {field} {problem}")


def _check_int(display: str, obj: Mapping[str, Any], field: str, value: Any, *, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise object_problem(display, obj, field, f"must be an integer in [{low}, {high}], got {value!r}")


def _check_string_map(display: str, obj: Mapping[str, Any], field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise object_problem(display, obj, field, f"must map names to strings, got {value!r}")


def check_object(display: str, obj: Any) -> None:
    """Refuse a rendered YAML document that is not a well-formed object of a kind the product deploys.

    Args:
        display: the template it came from, for the message.
        obj: the parsed document.

    Raises:
        InvalidInput: naming the file, the object and the field at fault.
    """
    if not isinstance(obj, dict):
        raise InvalidInput(f"{display}: each YAML document must be a Kubernetes object, got {type(obj).__name__}")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise object_problem(display, obj, field, "is required")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise object_problem(display, obj, "metadata.name", "is required")
    if not DNS_NAME.fullmatch(metadata["name"]):
        raise object_problem(display, obj, "metadata.name", f"{metadata['name']!r} is not a DNS-1123 name")
    _check_string_map(display, obj, "metadata.labels", metadata.get("labels"))
    _check_string_map(display, obj, "metadata.annotations", metadata.get("annotations"))
    kind = obj["kind"]
    spec = obj.get("spec")
    if kind == "Deployment":
        _check_deployment(display, obj, spec)
    elif kind == "Service":
        ports = (spec or {}).get("ports") if isinstance(spec, dict) else None
        if not isinstance(ports, list) or not ports:
            raise object_problem(display, obj, "spec.ports", "must list at least one port")
        for index, port in enumerate(ports):
            if not isinstance(port, dict):
                raise object_problem(display, obj, f"spec.ports[{index}]", f"must be a mapping, got {port!r}")
            _check_int(display, obj, f"spec.ports[{index}].port", port.get("port"), low=1, high=65535)
    elif kind in ("ConfigMap", "Secret"):
        _check_string_map(display, obj, "data", obj.get("data"))


def _check_deployment(display: str, obj: Mapping[str, Any], spec: Any) -> None:
    if not isinstance(spec, dict):
        raise object_problem(display, obj, "spec", "is required")
    if "replicas" in spec:
        _check_int(display, obj, "spec.replicas", spec["replicas"], low=0, high=1000)
    if "progressDeadlineSeconds" in spec:
        _check_int(display, obj, "spec.progressDeadlineSeconds", spec["progressDeadlineSeconds"], low=1, high=86400)
    template = spec.get("template")
    if not isinstance(template, dict):
        raise object_problem(display, obj, "spec.template", "is required")
    pod_meta = template.get("metadata") or {}
    if not isinstance(pod_meta, dict):
        raise object_problem(display, obj, "spec.template.metadata", f"must be a mapping, got {pod_meta!r}")
    _check_string_map(display, obj, "spec.template.metadata.labels", pod_meta.get("labels"))
    _check_string_map(display, obj, "spec.template.metadata.annotations", pod_meta.get("annotations"))
    pod_spec = template.get("spec") or {}
    if not isinstance(pod_spec, dict):
        raise object_problem(display, obj, "spec.template.spec", f"must be a mapping, got {pod_spec!r}")
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise object_problem(display, obj, "spec.template.spec.containers", "must list at least one container")
    for index, container in enumerate(containers):
        where = f"spec.template.spec.containers[{index}]"
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            raise object_problem(display, obj, f"{where}.name", "is required")
        image = container.get("image")
        if not isinstance(image, str) or not DIGEST_REFERENCE.fullmatch(image):
            raise object_problem(display, obj, f"{where}.image", f"must pin the image by digest, got {image!r}")
        ports = container.get("ports") or []
        if not isinstance(ports, list):
            raise object_problem(display, obj, f"{where}.ports", f"must be a list, got {ports!r}")
        for port_index, port in enumerate(ports):
            if not isinstance(port, dict):
                raise object_problem(display, obj, f"{where}.ports[{port_index}]", f"must be a mapping, got {port!r}")
            value = port.get("containerPort")
            _check_int(display, obj, f"{where}.ports[{port_index}].containerPort", value, low=1, high=65535)
        if "resources" in container and not isinstance(container["resources"], dict):
            resources = container["resources"]
            raise object_problem(display, obj, f"{where}.resources", f"must be a mapping, got {resources!r}")
