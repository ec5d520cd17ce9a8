"""Manifests and the live objects a server would return for them, for the drift tests."""

from __future__ import annotations

import copy

from delivery.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "app.kubernetes.io/name": "web"}


def deployment(name: str = "web", image: str = "reg/web:1", replicas: int = 2) -> dict:
    """A managed Deployment as Git has it: two named containers, ports and env by merge key."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "dev", "labels": dict(MANAGED)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}],
                         "env": [{"name": "MODE", "value": "dev"}]},
                        {"name": "proxy", "image": "reg/proxy:1"},
                    ]
                },
            },
        },
    }


def config_map(name: str = "web-config", data: dict | None = None, labels: dict | None = None) -> dict:
    """A managed ConfigMap as Git has it, without a namespace."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": dict(MANAGED if labels is None else labels)},
        "data": data or {"greeting": "hello"},
    }


def as_live(obj: dict) -> dict:
    """What a server returns: the object plus metadata, defaults and status it fills in."""
    live = copy.deepcopy(obj)
    meta = live["metadata"]
    meta.setdefault("namespace", "dev")
    meta.update(uid="u-1", resourceVersion="42", generation=3, creationTimestamp="2026-11-27T00:00:00Z",
                managedFields=[{"manager": "gitops-delivery"}])
    meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "3"
    if live["kind"] == "Deployment":
        live["spec"]["strategy"] = {"type": "RollingUpdate"}
        live["spec"]["template"]["spec"]["restartPolicy"] = "Always"
        for container in live["spec"]["template"]["spec"]["containers"]:
            container["imagePullPolicy"] = "IfNotPresent"
        live["status"] = {"readyReplicas": 2}
    return live
