"""The promotion loop calls stage 11 for an environment that names a stack, and only for it."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import yaml
from pydantic import SecretStr
from support.governance import new_request
from support.promotion import FAST, promote, promotion_stack

from blocks.pulumi_stack import PulumiStack
from delivery.plan import PlanState
from infra.pulumi_backend import backend_override
from infra.testing import RecordingBackend

pytestmark = pytest.mark.usefixtures("prefect_server")


def environment(name: str, runtime_ref: str, infrastructure: str | None = None) -> dict:
    settings = {
        "namespace": f"infra-{name}",
        "runtime": runtime_ref,
        "strategy": "rolling",
        "values": FAST,
        "approval": {"required": False},
        "health": {"timeout_seconds": 20},
    }
    if infrastructure:
        settings["infrastructure"] = infrastructure
    return settings


def provisioned_environments(api: str, trace_id: str, *, expected: int, timeout: float = 20.0) -> list[str]:
    body = {"filter": {"related": {"id": [f"delivery.trace.{trace_id}"]},
                       "event": {"name": ["delivery.InfrastructureProvisioned"]}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while True:
        events = httpx.post(f"{api}/events/filter", json=body).json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return sorted(e["resource"]["delivery.environment"] for e in events)
        time.sleep(0.25)


def test_only_the_environment_with_a_stack_is_provisioned(prefect_server: str, ledger, tmp_path) -> None:
    stack_name = f"infra-dev-{uuid.uuid4().hex[:8]}"
    PulumiStack(stack="dev", passphrase=SecretStr("promotion-passphrase")).save(stack_name, overwrite=True)
    fake = RecordingBackend(outputs={"cluster_name": "aks-delivery-dev", "resource_group_name": "rg-delivery-dev"})

    with promotion_stack(tmp_path) as stack:
        runtime_ref = yaml.safe_load(stack.repo.read_config())["environments"]["dev"]["runtime"]
        config = {
            "path": ["dev", "staging"],
            "environments": {
                "dev": environment("dev", runtime_ref, f"pulumi-stack/{stack_name}"),
                "staging": environment("staging", runtime_ref),
            },
        }
        stack.repo.write_files(
            {"delivery.yaml": yaml.safe_dump(config).encode()}, message="infra test: dev has a stack", trailers=[]
        )
        request = new_request()
        with backend_override(fake):
            summary = promote(request, stack.build)

    assert [(e.environment, e.state) for e in summary.environments] == [
        ("dev", PlanState.DEPLOYED), ("staging", PlanState.DEPLOYED)]
    # One stack opened (dev's), previewed and applied; staging has no stack and never reached Pulumi.
    assert [t.stack for t in fake.targets] == ["dev"]
    assert fake.count("preview") == 1 and fake.count("up") == 1
    assert provisioned_environments(prefect_server, request.trace_id, expected=1) == ["dev"]
