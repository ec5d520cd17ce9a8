"""The environment platform program under Pulumi's mocks (no CLI, no Azure).

Every test records what the program declared (inputs as the engine received them, outputs as
resolved) inside the Pulumi run, and asserts on the record *after* the run returns, so an
assertion can never be skipped by an Output that does not resolve.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest

KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- name: aks-delivery-dev\nusers:\n- user: {token: s3cr3t-token}\n"
)

# The input that carries each resource's Azure name (its `name` output).
AZURE_NAME_INPUT = {
    "azure-native:resources:ResourceGroup": "resourceGroupName",
    "azure-native:operationalinsights:Workspace": "workspaceName",
    "azure-native:containerregistry:Registry": "registryName",
    "azure-native:containerservice:ManagedCluster": "resourceName",
}


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like Azure would and remembers every resource and invoke."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources[args.name] = dict(args.inputs)
        self.types[args.name] = args.typ
        state = dict(args.inputs)
        state["name"] = args.inputs.get(AZURE_NAME_INPUT.get(args.typ, ""), args.name)
        if args.typ == "azure-native:containerregistry:Registry":
            state["loginServer"] = f"{args.inputs['registryName']}.azurecr.io"
        return f"/subscriptions/sub/resourceGroups/rg/providers/{args.typ}/{args.name}", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.invokes.append((args.token, dict(args.args)))
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            return {"kubeconfigs": [{"name": "clusterUser", "value": base64.b64encode(KUBECONFIG.encode()).decode()}]}
        raise AssertionError(f"unexpected invoke {args.token}")


@pytest.fixture
def mocks() -> RecordingMocks:
    # Pulumi's mocks need the main thread's event loop, which an earlier asyncio.run() (any test's) unsets
    asyncio.set_event_loop(asyncio.new_event_loop())
    recorder = RecordingMocks()
    pulumi.runtime.set_mocks(recorder, project="gitops-delivery-platform", stack="dev", preview=False)
    return recorder


def _spec(**overrides: Any):
    from infra.platform import PlatformSpec

    return PlatformSpec(**{"environment": "dev", "release_id": "rel-1", "trace_id": "trace-0001", **overrides})


def _run(build) -> dict[str, Any]:
    """Run ``build`` as a Pulumi program under the mocks; return what it recorded once everything resolved."""
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        return asyncio.ensure_future(build(seen))

    program()
    return seen


def test_importing_the_program_declares_nothing() -> None:
    # In a fresh interpreter (so the import really happens) where declaring any resource raises.
    script = textwrap.dedent(
        """
        import pulumi

        def refuse(self, *args, **kwargs):
            raise RuntimeError("declared " + str(args[:2]))

        pulumi.Resource.__init__ = refuse
        import infra.platform, infra.stacks

        program = infra.platform.platform_program(infra.platform.PlatformSpec(environment="dev"))
        try:
            program()
        except RuntimeError as exc:
            print("control:", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    # The patch works (calling the program declares), and neither the imports nor building the program did.
    assert "control: declared" in done.stdout and "EnvironmentPlatform" in done.stdout


def test_names_skus_and_monitoring(mocks: RecordingMocks) -> None:
    from infra.platform import EnvironmentPlatform

    async def build(seen: dict[str, Any]) -> None:
        platform = EnvironmentPlatform("delivery-dev", _spec(registry_sku="Standard", node_count=3))
        seen["workspace_id"] = await platform.workspace.id.future()

    seen = _run(build)

    assert mocks.types == {
        "delivery-dev": "gitops-delivery:infra:EnvironmentPlatform",
        "rg-delivery-dev": "azure-native:resources:ResourceGroup",
        "log-delivery-dev": "azure-native:operationalinsights:Workspace",
        "acrdeliverydev": "azure-native:containerregistry:Registry",
        "aks-delivery-dev": "azure-native:containerservice:ManagedCluster",
    }
    group, workspace = mocks.resources["rg-delivery-dev"], mocks.resources["log-delivery-dev"]
    registry, cluster = mocks.resources["acrdeliverydev"], mocks.resources["aks-delivery-dev"]
    assert group["resourceGroupName"] == "rg-delivery-dev" and group["location"] == "westeurope"
    assert workspace["sku"] == {"name": "PerGB2018"} and workspace["retentionInDays"] == 30
    assert workspace["resourceGroupName"] == "rg-delivery-dev"
    assert registry["sku"] == {"name": "Standard"} and registry["adminUserEnabled"] is False
    assert cluster["resourceName"] == "aks-delivery-dev" and cluster["dnsPrefix"] == "delivery-dev"
    assert cluster["sku"] == {"name": "Base", "tier": "Free"}
    assert cluster["identity"] == {"type": "SystemAssigned"}
    (pool,) = cluster["agentPoolProfiles"]
    assert pool == {"name": "system", "mode": "System", "count": 3, "vmSize": "Standard_D2s_v5", "osType": "Linux"}
    # The cluster ships its logs to the workspace declared beside it.
    oms = cluster["addonProfiles"]["omsagent"]
    assert oms["enabled"] is True
    assert oms["config"]["logAnalyticsWorkspaceResourceID"] == seen["workspace_id"]
    assert seen["workspace_id"].endswith("/log-delivery-dev")


def test_every_resource_is_tagged_with_environment_and_release(mocks: RecordingMocks) -> None:
    from infra.platform import EnvironmentPlatform

    async def build(seen: dict[str, Any]) -> None:
        platform = EnvironmentPlatform("delivery-prod", _spec(environment="prod", tags={"cost-center": "42"}))
        seen["cluster"] = await platform.cluster.name.future()

    seen = _run(build)

    expected = {
        "environment": "prod",
        "managed-by": "gitops-delivery",
        "delivery-release-id": "rel-1",
        "delivery-trace-id": "trace-0001",
        "cost-center": "42",
    }
    azure = [name for name, typ in mocks.types.items() if typ.startswith("azure-native:")]
    assert len(azure) == 4
    assert {name: mocks.resources[name]["tags"] for name in azure} == dict.fromkeys(azure, expected)
    assert seen["cluster"] == "aks-delivery-prod"


def test_kubeconfig_is_a_secret_and_outputs_resolve(mocks: RecordingMocks) -> None:
    from infra.platform import declare_platform

    async def build(seen: dict[str, Any]) -> None:
        platform = declare_platform(_spec())
        seen["kubeconfig_secret"] = await platform.kubeconfig.is_secret()
        seen["kubeconfig"] = await platform.kubeconfig.future()
        seen["login_server_secret"] = await platform.registry.login_server.is_secret()
        exported = pulumi.runtime.settings.get_root_resource().outputs
        seen["exports"] = {}
        for name, value in exported.items():
            output = pulumi.Output.from_input(value)
            seen["exports"][name] = (await output.future(), await output.is_secret())

    seen = _run(build)

    assert seen["kubeconfig_secret"] is True
    assert seen["kubeconfig"] == KUBECONFIG  # decoded from the base64 AKS returns
    assert seen["login_server_secret"] is False
    assert mocks.invokes == [
        (
            "azure-native:containerservice:listManagedClusterUserCredentials",
            {"resourceGroupName": "rg-delivery-dev", "resourceName": "aks-delivery-dev"},
        )
    ]
    assert seen["exports"] == {
        "resource_group_name": ("rg-delivery-dev", False),
        "registry_login_server": ("acrdeliverydev.azurecr.io", False),
        "cluster_name": ("aks-delivery-dev", False),
        "log_analytics_workspace_id": (
            "/subscriptions/sub/resourceGroups/rg/providers/azure-native:operationalinsights:Workspace/log-delivery-dev",
            False,
        ),
        "kubeconfig": (KUBECONFIG, True),
        "release_id": ("rel-1", False),
        "trace_id": ("trace-0001", False),
    }


def test_program_is_a_plain_function_of_the_spec(mocks: RecordingMocks) -> None:
    from infra.platform import platform_program

    program = platform_program(_spec(environment="staging", name_prefix="shop", registry_name="shopregistry01"))
    assert mocks.resources == {}  # building the program declares nothing

    async def build(seen: dict[str, Any]) -> None:
        program()
        seen["declared"] = True

    seen = _run(build)

    assert seen == {"declared": True}
    assert set(mocks.resources) == {
        "shop-staging",
        "rg-shop-staging",
        "log-shop-staging",
        "shopregistry01",
        "aks-shop-staging",
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"environment": "Prod!"}, "environment"),
        ({"registry_sku": "Gold"}, "registry_sku"),
        ({"node_count": 0}, "node_count"),
        ({"log_retention_days": 7}, "log_retention_days"),
        ({"registry_name": "has-dash"}, "registry_name"),
        ({"tags": {"environment": "other"}}, "tags"),
        ({"nodes": 3}, "nodes"),
    ],
)
def test_spec_rejects_bad_settings(overrides: dict[str, Any], field: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        _spec(**overrides)
    assert [err["loc"][0] for err in caught.value.errors()] == [field]
