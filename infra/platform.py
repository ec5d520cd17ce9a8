"""The platform of one environment on Azure: resource group, registry, AKS and its monitoring.

Everything here is a plain function of a :class:`PlatformSpec`; importing the module declares
nothing. Call :func:`platform_program` to get the inline program the Automation API runs, or
create :class:`EnvironmentPlatform` inside any Pulumi program.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Literal

import pulumi

# Only the submodules the platform uses: the package root would pull in hundreds of services.
from pulumi_azure_native import containerregistry, containerservice, operationalinsights, resources
from pydantic import BaseModel, ConfigDict, Field, field_validator

COMPONENT_TYPE = "gitops-delivery:infra:EnvironmentPlatform"
MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "gitops-delivery"
ENVIRONMENT_TAG = "environment"
RELEASE_TAG = "delivery-release-id"
TRACE_TAG = "delivery-trace-id"
RESERVED_TAGS = frozenset({MANAGED_BY_TAG, ENVIRONMENT_TAG, RELEASE_TAG, TRACE_TAG})

# Stack output names; the release/trace stamp lets the next run preview "as if only the stamp changed".
OUTPUT_RESOURCE_GROUP = "resource_group_name"
OUTPUT_REGISTRY_LOGIN_SERVER = "registry_login_server"
OUTPUT_CLUSTER_NAME = "cluster_name"
OUTPUT_WORKSPACE_ID = "log_analytics_workspace_id"
OUTPUT_KUBECONFIG = "kubeconfig"
OUTPUT_RELEASE_ID = "release_id"
OUTPUT_TRACE_ID = "trace_id"


class PlatformSpec(BaseModel):
    """What an environment's platform looks like. Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    name_prefix: str = Field(default="delivery", pattern=r"^[a-z][a-z0-9]{1,11}$")
    location: str = Field(default="westeurope", pattern=r"^[a-z0-9]{2,40}$")
    registry_sku: Literal["Basic", "Standard", "Premium"] = "Basic"
    registry_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9]{5,50}$")
    node_count: int = Field(default=2, ge=1, le=100)
    node_vm_size: str = Field(default="Standard_D2s_v5", min_length=1)
    kubernetes_version: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    cluster_tier: Literal["Free", "Standard", "Premium"] = "Free"
    log_retention_days: int = Field(default=30, ge=30, le=730)
    release_id: str | None = None
    trace_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _no_reserved_tags(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(RESERVED_TAGS & set(value))
        if clash:
            raise ValueError(f"tags {clash} are set by the product and cannot be overridden")
        return value

    @property
    def base_name(self) -> str:
        return f"{self.name_prefix}-{self.environment}"

    def resource_name(self, abbreviation: Literal["rg", "log", "aks"]) -> str:
        """A resource's name: Azure's abbreviation of its type, then the base name (``aks-delivery-dev``)."""
        return f"{abbreviation}-{self.base_name}"

    @property
    def acr_name(self) -> str:
        """Registry names are global and alphanumeric only, hence no dashes."""
        return self.registry_name or f"acr{self.name_prefix}{self.environment.replace('-', '')}"

    def resource_tags(self) -> dict[str, str]:
        """The tags every resource carries: environment, owner and the release that last changed it."""
        tags = {**self.tags, ENVIRONMENT_TAG: self.environment, MANAGED_BY_TAG: MANAGED_BY_VALUE}
        if self.release_id:
            tags[RELEASE_TAG] = self.release_id
        if self.trace_id:
            tags[TRACE_TAG] = self.trace_id
        return tags


def _decode_kubeconfig(result: containerservice.ListManagedClusterUserCredentialsResult) -> str:
    if not result.kubeconfigs:
        raise ValueError("AKS returned no user credentials")
    return base64.b64decode(result.kubeconfigs[0].value).decode()


class EnvironmentPlatform(pulumi.ComponentResource):
    """Resource group, container registry, Log Analytics workspace and an AKS cluster monitored by it."""

    def __init__(self, name: str, spec: PlatformSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = spec.resource_tags()
        self.resource_group = resources.ResourceGroup(
            spec.resource_name("rg"),
            resource_group_name=spec.resource_name("rg"),
            location=spec.location,
            tags=tags,
            opts=child,
        )
        # Every other resource lives in the group, in its location, with the same tags, as a child.
        placed = {"resource_group_name": self.resource_group.name, "location": spec.location, "tags": tags,
                  "opts": child}
        self.workspace = operationalinsights.Workspace(
            spec.resource_name("log"),
            workspace_name=spec.resource_name("log"),
            sku={"name": "PerGB2018"},
            retention_in_days=spec.log_retention_days,
            **placed,
        )
        self.registry = containerregistry.Registry(
            spec.acr_name,
            registry_name=spec.acr_name,
            sku={"name": spec.registry_sku},
            admin_user_enabled=False,
            **placed,
        )
        self.cluster = containerservice.ManagedCluster(
            spec.resource_name("aks"),
            resource_name_=spec.resource_name("aks"),
            dns_prefix=spec.base_name,
            kubernetes_version=spec.kubernetes_version,
            identity={"type": "SystemAssigned"},
            sku={"name": "Base", "tier": spec.cluster_tier},
            enable_rbac=True,
            agent_pool_profiles=[
                {
                    "name": "system",
                    "mode": "System",
                    "count": spec.node_count,
                    "vm_size": spec.node_vm_size,
                    "os_type": "Linux",
                }
            ],
            addon_profiles={
                "omsagent": {
                    "enabled": True,
                    "config": {"logAnalyticsWorkspaceResourceID": self.workspace.id},
                }
            },
            **placed,
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=self.resource_group.name,
            resource_name=self.cluster.name,
        )
        # The kubeconfig grants access to the cluster: it must stay a secret in state and outputs.
        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(credentials.apply(_decode_kubeconfig))
        self.register_outputs(
            {
                OUTPUT_RESOURCE_GROUP: self.resource_group.name,
                OUTPUT_REGISTRY_LOGIN_SERVER: self.registry.login_server,
                OUTPUT_CLUSTER_NAME: self.cluster.name,
                OUTPUT_WORKSPACE_ID: self.workspace.id,
                OUTPUT_KUBECONFIG: self.kubeconfig,
            }
        )


def declare_platform(spec: PlatformSpec) -> EnvironmentPlatform:
    """Declare the platform and export its outputs; call it inside a Pulumi program.

    Args:
        spec: the environment's platform.

    Returns:
        The component, whose attributes hold the child resources.
    """
    platform = EnvironmentPlatform(spec.base_name, spec)
    pulumi.export(OUTPUT_RESOURCE_GROUP, platform.resource_group.name)
    pulumi.export(OUTPUT_REGISTRY_LOGIN_SERVER, platform.registry.login_server)
    pulumi.export(OUTPUT_CLUSTER_NAME, platform.cluster.name)
    pulumi.export(OUTPUT_WORKSPACE_ID, platform.workspace.id)
    pulumi.export(OUTPUT_KUBECONFIG, platform.kubeconfig)
    pulumi.export(OUTPUT_RELEASE_ID, spec.release_id or "")
    pulumi.export(OUTPUT_TRACE_ID, spec.trace_id or "")
    return platform


def platform_program(spec: PlatformSpec) -> Callable[[], None]:
    """The inline program for the Automation API: declares the platform of ``spec`` when run.

    Args:
        spec: the environment's platform.

    Returns:
        A no-argument function; nothing is declared until Pulumi calls it.
    """

    def program() -> None:
        declare_platform(spec)

    return program
