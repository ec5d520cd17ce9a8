"""The roll_back flow: blocks and environment settings come from saved blocks and delivery.yaml."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from support.runtime import APP, IMAGE_V1, IMAGE_V2, in_flow, runtime_env

from delivery.config import HealthGates
from delivery.errors import InvalidInput
from delivery.manifests import render
from flows.rollback import RollbackRequest, roll_back_environment
from flows.strategies import deploy_with_strategy
from tasks.promote import Promotion, write_promotion
from tasks.sync import SyncSpec, reconcile


def test_the_flow_rolls_an_environment_back_to_its_healthy_revision(prefect_server: str, tmp_path: Path,
                                                                    ledger) -> None:
    suffix = uuid.uuid4().hex[:8]
    with runtime_env(tmp_path, ready_delay=0.1) as env:
        runtime_ref = f"kubernetes-runtime/rt-{suffix}"
        env.runtime.save(runtime_ref.split("/")[1], overwrite=True)
        env.repo.save(f"gitops-{suffix}", overwrite=True)
        config = (f"path: [dev]\nenvironments:\n  dev:\n    namespace: {env.namespace}\n"
                  f"    runtime: {runtime_ref}\n    strategy: rolling\n")
        env.repo.write_files({"delivery.yaml": config.encode()}, message="configure", trailers=[("Release-Id", "x")])
        good = in_flow(lambda: deploy_with_strategy(env.runtime, env.repo, env.spec(image=IMAGE_V1),
                                                    health=HealthGates(timeout_seconds=20), poll_seconds=0.05))
        assert good.healthy
        later = env.spec(image=IMAGE_V2)  # promoted and synced; a problem is found after the gate
        target = later.target().model_dump()
        reconcile(env.runtime, env.repo, SyncSpec(**target, git_revision=write_promotion(
            env.repo, Promotion(**target, files=render(later).files)).git_revision))

        result = roll_back_environment(RollbackRequest(
            environment="dev", app=APP, requested_by="user:oncall", reason="errors after release",
            gitops_repo=f"gitops-repo/gitops-{suffix}", timeout_seconds=20))

        assert result.restored_from == good.git_revision and result.healthy and result.strategy == "rolling"
        live = env.runtime.get(api_version="apps/v1", kind="Deployment", name=APP, namespace=env.namespace)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V1
        assert result.release_id.startswith("rollback-")
        [kept] = ledger.on_demand_rollbacks()  # the audit trail and the environments overview see it
        assert (kept.release_id, kept.environment, kept.app, kept.actor) == (result.release_id, "dev", APP,
                                                                            "user:oncall")
        assert (kept.git_revision, kept.restored_from, kept.healthy) == (result.git_revision, good.git_revision, True)

        with pytest.raises(InvalidInput, match="unknown environment 'prod'"):
            roll_back_environment(RollbackRequest(environment="prod", app=APP, requested_by="user:oncall",
                                                  gitops_repo=f"gitops-repo/gitops-{suffix}"))
