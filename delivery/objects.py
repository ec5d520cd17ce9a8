"""Kubernetes object identity: which object a manifest or live object is, and the order kinds apply in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from delivery.errors import InvalidInput

# Apply order: what others reference first, then workloads, then what routes to them.
APPLY_ORDER = ("Namespace", "ConfigMap", "Secret", "Service", "Deployment", "Ingress")
# Kinds that live outside any namespace: their key never carries one.
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
     "StorageClass", "IngressClass", "PriorityClass"}
)


def apply_rank(kind: str) -> int:
    """The place of a kind in :data:`APPLY_ORDER`; kinds it does not name come last."""
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


def apply_order(obj: Mapping[str, Any]) -> tuple[int, str, str]:
    """Sort key giving the apply order of a manifest's objects: by kind rank, then kind, then name."""
    kind = obj.get("kind", "")
    return (apply_rank(kind), kind, obj.get("metadata", {}).get("name", ""))


class ObjectKey(BaseModel):
    """Which object: group, kind, namespace and name (the API version does not matter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: str
    kind: str
    namespace: str | None = None
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def identity(self) -> tuple[str, str, str | None, str]:
        # An empty namespace and none are the same place.
        return (self.group, self.kind, self.namespace or None, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def object_key(obj: Mapping[str, Any], *, namespace: str | None = None) -> ObjectKey:
    """The key of a manifest or live object; ``namespace`` fills in a namespaced object without one.

    Args:
        obj: the object, as a manifest has it or the API server returns it.
        namespace: the environment's namespace, for a namespaced object that leaves it out.

    Returns:
        Its key; a cluster-scoped kind's key has no namespace whatever the object says.

    Raises:
        InvalidInput: the object has no apiVersion, kind or metadata.name.
    """
    meta = obj.get("metadata") or {}
    if not obj.get("apiVersion") or not obj.get("kind") or not meta.get("name"):
        raise InvalidInput("a manifest object needs apiVersion, kind and metadata.name")
    kind = str(obj["kind"])
    ns = None if kind in CLUSTER_SCOPED_KINDS else (meta.get("namespace") or namespace)
    return ObjectKey(api_version=str(obj["apiVersion"]), kind=kind, namespace=ns, name=str(meta["name"]))
