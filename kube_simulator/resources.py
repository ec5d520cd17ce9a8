"""The resource types the simulator serves, and the discovery documents describing them."""

from __future__ import annotations

from dataclasses import dataclass

_ITEM_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_STATUS_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the API and how the server treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` style name used in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def discovery_entries(self) -> list[dict]:
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(_ITEM_VERBS),
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
            }
        ]
        if self.has_status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(_STATUS_VERBS),
                }
            )
        return entries


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), has_status=True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "services", "Service", True, ("svc",), has_status=True),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), has_status=True, has_generation=True),
    ResourceType(
        "networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), has_status=True, has_generation=True
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}
GROUPS: dict[str, list[str]] = {}
for _t in RESOURCE_TYPES:
    if _t.group and _t.version not in GROUPS.setdefault(_t.group, []):
        GROUPS[_t.group].append(_t.version)

VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-delivery-simulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def core_versions() -> dict:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group(name: str) -> dict:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUPS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def group_list() -> dict:
    """``GET /apis``."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(name) for name in GROUPS]}


def group(name: str) -> dict | None:
    """``GET /apis/<group>``."""
    if name not in GROUPS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def resource_list(group_name: str, version: str) -> dict | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``."""
    types = [t for t in RESOURCE_TYPES if t.group == group_name and t.version == version]
    if not types:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": types[0].api_version,
        "resources": [entry for t in types for entry in t.discovery_entries()],
    }
