"""The release flow: one flow run per release, its tasks the delivery stages.

Stages 1-4 here (commit, pull request, checks, merge); the build (flows/build.py, stages 5-7)
and the promotion path (flows/promotion.py, stages 8-14 per environment) follow the merge, as
plain functions inside this one run: it is the run that suspends for approvals and that recovery
resubmits after a crash, and running it again skips every stage whose result is stored.
Everything a release can be refused for is checked before the first write.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.context import FlowRunContext

from blocks import git_local
from blocks.git_host import GitHost
from blocks.image_registry import ImageRegistry
from blocks.kubernetes_runtime import KubernetesRuntime
from blocks.loading import load_block, load_configured_block
from blocks.package_feed import PackageFeed
from blocks.pipeline_runner import PipelineRunner
from delivery.config import DeliveryConfig
from delivery.errors import InvalidInput, NotFound
from delivery.models import BuildResult, CommitInfo, MergeInfo, Model, PullRequest, ReleaseRequest
from flows.build import run_build
from flows.promotion import PromotionSummary, promote_path, validate_promotion
from tasks.approval import verify_planner_signature
from tasks.commit import create_commit
from tasks.pull_request import check_pull_request, merge_pull_request, open_pull_request

PROTECTED_BRANCH = "main"


class ReleaseSummary(Model):
    """What a release run did, for the caller (CLI, agent) to show or chain on."""

    release_id: str
    trace_id: str
    app: str
    branch: str
    commit: CommitInfo
    pull_request: PullRequest
    merge: MergeInfo
    build: BuildResult
    promotion: PromotionSummary


def release_tags(request: ReleaseRequest) -> list[str]:
    """The tags of a release's flow run: ``release:<id>`` and ``trace:<id>``."""
    return [f"release:{request.release_id}", f"trace:{request.trace_id}"]


def _run_name() -> str:
    # Parameters are validated before the run is named, so this is the ReleaseRequest itself.
    ctx = FlowRunContext.get()
    request: Any = (ctx.parameters or {}).get("request") if ctx else None
    release_id = getattr(request, "release_id", None) or (request or {}).get("release_id")
    return str(release_id or "release")


def _tag_run(request: ReleaseRequest) -> None:
    """Put the release's tags on this flow run itself (``tags()`` only reaches runs created inside)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    wanted = sorted(set(ctx.flow_run.tags or []) | set(release_tags(request)))
    if wanted != sorted(ctx.flow_run.tags or []):
        ctx.client.update_flow_run(ctx.flow_run.id, tags=wanted)
        ctx.flow_run.tags = wanted


def load_git_host() -> GitHost:
    """Load the configured GitHost block (``DELIVERY_GIT_HOST_BLOCK``, default ``local-git-host/default``).

    Raises:
        NotFound: no block is saved under that reference (the message names the variable).
        InvalidInput: the reference names another kind of block.
    """
    return load_configured_block("git_host", GitHost)


def validate_release(git_host: GitHost, request: ReleaseRequest, *, target: str = PROTECTED_BRANCH) -> None:
    """Refuse a release before anything is written: its repository and target branch must exist.

    Raises:
        InvalidInput: naming the field at fault.
    """
    git_local.check_branch(request.branch)
    try:
        head = git_host.resolve(request.app, f"refs/heads/{target}")
    except NotFound as exc:
        raise InvalidInput(f"app {request.app!r}: no such repository on the git host ({exc})") from exc
    if head is None:
        raise InvalidInput(f"app {request.app!r}: its repository has no branch {target!r} to release into")


def validate_blocks(request: ReleaseRequest, config: DeliveryConfig) -> None:
    """Refuse a release before anything is written when a block it will load after the merge is missing.

    The build's blocks (``DELIVERY_PIPELINE_RUNNER_BLOCK``, ``..._PACKAGE_FEED_...``,
    ``..._IMAGE_REGISTRY_...``) and the runtime of every environment on the path up to the target.

    Raises:
        NotFound, InvalidInput: naming the reference and where it is set.
    """
    for role, kind in (("pipeline_runner", PipelineRunner), ("package_feed", PackageFeed),
                       ("image_registry", ImageRegistry)):
        load_configured_block(role, kind)
    for environment in config.path_to(request.target_environment):
        load_block(config.environment(environment).runtime, KubernetesRuntime,
                   source=f"delivery.yaml environments.{environment}.runtime")


@flow(name="release", flow_run_name=_run_name, log_prints=True)
def release(request: ReleaseRequest) -> ReleaseSummary:
    """Deliver a release request: commit, pull request, checks, merge, build, then promotion.

    Args:
        request: what to deliver; invalid requests are refused before the flow starts.

    Returns:
        The release summary.
    """
    _tag_run(request)
    logger = get_run_logger()
    with tags(*release_tags(request)):
        git_host = load_git_host()
        validate_release(git_host, request)
        config = validate_promotion(request)
        validate_blocks(request, config)
        if any(config.environment(name).approval.signed for name in config.path_to(request.target_environment)):
            verify_planner_signature(request)
        commit = create_commit(git_host, request, base=PROTECTED_BRANCH)
        logger.info("commit %s on %s (created=%s)", commit.sha[:12], commit.branch, commit.created)
        pull_request = open_pull_request(git_host, request, commit, target=PROTECTED_BRANCH)
        pull_request = check_pull_request(git_host, request, pull_request)
        merge = merge_pull_request(git_host, request, pull_request)
        logger.info("merged #%s as %s (created=%s)", merge.pull_request, merge.merge_sha[:12], merge.created)
        build = run_build(request, merge)
        promotion = promote_path(request, build, config)
    return ReleaseSummary(release_id=request.release_id, trace_id=request.trace_id, app=request.app,
                          branch=request.branch, commit=commit, pull_request=pull_request, merge=merge,
                          build=build, promotion=promotion)
