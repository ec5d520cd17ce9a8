"""The ``roll_back`` flow: return an environment to its last healthy revision, on demand.

The GitOps repository's ``delivery.yaml`` says which runtime block and namespace the environment
uses and its default strategy; the flow loads those blocks, restores ``healthy/<env>/<app>`` and
syncs it (:func:`tasks.rollback.roll_back`). The rollback is kept in the ledger (an operation under
the rollback's own release id) and the ``environments`` artifact (``tasks/overview.py``) refreshed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.blocks.core import Block
from pydantic import Field

from blocks.argocd_runtime import ArgoCDRuntime
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from blocks.loading import load_block, load_runtime
from delivery.config import load_config
from delivery.ids import new_release_id, new_trace_id
from delivery.ledger import Ledger, OnDemandRollback
from delivery.models import Model
from delivery.settings import block_ref, block_setting
from tasks.overview import refresh_overview
from tasks.rollback import RollbackResult, RollbackSpec, roll_back

# Imported so Block.load finds these block types by slug.
__all__ = ["ArgoCDRuntime", "GitOpsRepo", "KubernetesRuntime", "RollbackRequest", "roll_back_environment"]


class RollbackRequest(Model):
    """An on-demand rollback: which application, where, who asks and why."""

    environment: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    app: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
    requested_by: str = Field(min_length=1, description="Who asks, e.g. user:alice")
    reason: str = Field(default="on-demand rollback", max_length=2000)
    release_id: str = Field(default_factory=lambda: new_release_id().replace("rel-", "rollback-", 1))
    trace_id: str = Field(default_factory=new_trace_id, pattern=r"^[A-Za-z0-9-]{8,64}$")
    timeout_seconds: float = Field(default=120, gt=0, le=3600)
    gitops_repo: str | None = Field(default=None, description="GitOpsRepo block ref; default from settings")


def _load(ref: str, source: str) -> Any:
    return load_block(ref, Block, source=source)


@flow(name="roll_back", log_prints=True)
def roll_back_environment(request: RollbackRequest) -> RollbackResult:
    """Roll an environment back to its last healthy revision.

    Args:
        request: the environment, the application, who asks and why.

    Returns:
        The restoring revision and whether the restored rollouts are healthy.

    Raises:
        InvalidInput: the environment is not in ``delivery.yaml``.
    """
    repo = _load(request.gitops_repo or block_ref("gitops_repo"),
                 "the request's gitops_repo" if request.gitops_repo else block_setting("gitops_repo"))
    config = load_config(repo.read_config(ref=repo.branch))
    environment = config.environment(request.environment)
    # a KubernetesRuntime, or an ArgoCDRuntime (Argo CD syncs the restoring commit)
    runtime = load_runtime(environment.runtime, source=f"delivery.yaml environments.{request.environment}.runtime")
    spec = RollbackSpec(
        release_id=request.release_id, trace_id=request.trace_id, app=request.app,
        environment=request.environment, namespace=environment.namespace, strategy=environment.strategy.name,
        reason=request.reason, requested_by=request.requested_by, timeout_seconds=request.timeout_seconds,
    )
    result = roll_back(runtime, repo, spec)
    ledger = Ledger()
    ledger.record_on_demand_rollback(OnDemandRollback(
        release_id=request.release_id, environment=request.environment, app=request.app,
        actor=request.requested_by, reason=request.reason, git_revision=result.git_revision,
        restored_from=result.restored_from, healthy=result.healthy))
    refresh_overview(path=config.path, ledger=ledger)
    return result
