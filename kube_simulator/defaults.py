"""Per-kind defaulting and validation, the part of the API server's strategies the simulator keeps."""

from __future__ import annotations

import base64
import itertools
import re

from .resources import ResourceType
from .status import ApiError, invalid

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_cluster_ips = itertools.count(10)


def validate_name(rt: ResourceType, name: str) -> None:
    label_only = rt.kind in ("Namespace", "Service")
    pattern, limit = (_DNS_LABEL, 63) if label_only else (_DNS_SUBDOMAIN, 253)
    if not name:
        raise ApiError(
            422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required"
        )
    if len(name) > limit or not pattern.match(name):
        raise invalid(rt, name, f'metadata.name: Invalid value: "{name}": must be a lowercase RFC 1123 name')


def validate_metadata(rt: ResourceType, obj: dict) -> None:
    """Labels and annotations are maps of strings, as the API server insists."""
    meta = obj["metadata"]
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise invalid(rt, meta["name"], f"metadata.{field}: Invalid value: must be a map of string keys to strings")


def initial_status(rt: ResourceType) -> dict | None:
    if rt.kind == "Namespace":
        return {"phase": "Active"}
    if rt.kind in ("Service", "Ingress"):
        return {"loadBalancer": {}}
    if rt.kind == "Deployment":
        return {}
    return None


def apply_defaults(rt: ResourceType, obj: dict, old: dict | None) -> None:
    """Fill the defaults the API server fills and reject what it rejects (``obj`` is a private copy)."""
    name = obj["metadata"]["name"]
    if rt.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif rt.kind == "Secret":
        _default_secret(obj)
    elif rt.kind == "Service":
        _default_service(rt, obj, old)
    elif rt.kind == "Deployment":
        _default_deployment(rt, obj)


def _default_secret(obj: dict) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_service(rt: ResourceType, obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("clusterIP") != "None":
        old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") not in (None, "", old_ip):
            raise invalid(rt, obj["metadata"]["name"], "spec.clusterIP: Invalid value: field is immutable")
        ip = old_ip or spec.get("clusterIP") or _next_cluster_ip()
        spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def _next_cluster_ip() -> str:
    n = next(_cluster_ips)
    return f"10.96.{(n // 250) % 250}.{n % 250 + 1}"


def _default_deployment(rt: ResourceType, obj: dict) -> None:
    name = obj["metadata"]["name"]
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise invalid(rt, name, "spec: Required value")
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    selector = (spec.get("selector") or {}).get("matchLabels")
    if not selector and not (spec.get("selector") or {}).get("matchExpressions"):
        raise invalid(rt, name, "spec.selector: Required value")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if selector and any(template_labels.get(k) != v for k, v in selector.items()):
        raise invalid(
            rt, name, "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
        )
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        raise invalid(rt, name, "spec.template.spec.containers: Required value")
    if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
        raise invalid(rt, name, "spec.replicas: Invalid value: must be greater than or equal to 0")
