"""The release flow: one flow run per release, its tasks the delivery stages.

Stages 1-4 here (commit, pull request, checks, merge); the build (flows/build.py, stages 5-7)
and the promotion path (flows/promotion.py, stages 8-14 per environment) follow the merge, as
plain functions inside this one run: it is the run that suspends for approvals and that recovery
resubmits after a crash, and running it again skips every stage whose result is stored.
Everything a release can be refused for is checked before the first write (the request,
``delivery.yaml``, and a pre-flight of the application's ``delivery-build.yaml`` and deploy templates,
which the build and the rendering read only after the merge), and a refusal ends the run Failed with
one sentence naming the field as its state message (``InvalidInput: artifacts.0.path: '../x' escapes
...``), which the Prefect UI shows on the run, not only a traceback in its logs. For that the flow
validates its parameter itself (``validate_parameters=False``; the schema the UI's form renders is
still the :class:`ReleaseRequest` model's): Prefect's own validation would end the run with a
multi-line "Validation of flow parameters failed" message instead.

A request without ``release_id`` or ``trace_id`` (the form leaves them out) gets both from its flow
run (:func:`run_ids`), not generated: the run starts again from the top after an approval wait or a
crash, and each start must be the same release (branch, plan, name and tags).

A release carries either inline artifacts or ``source.ref``, an existing branch, tag or commit of
the application repository: the ref is resolved once, before the first write, and the release
branch starts at that commit with one commit of no file changes carrying the release's trailers
(``Source-Ref``, ``Source-Commit`` among them), so the pull request, its checks, the merge and the
build are the same as for artifacts, and the build runs on what is merged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.states import Failed, State

from blocks.git_host import GitHost
from blocks.image_registry import ImageRegistry
from blocks.loading import load_configured_block, load_runtime
from blocks.package_feed import PackageFeed
from blocks.pipeline_runner import PipelineRunner
from delivery import git_grammar
from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings
from delivery.config import DeliveryConfig
from delivery.errors import InvalidInput, NotFound, PermanentError
from delivery.ids import RELEASE_FLOW, release_id_for_run, release_tags, trace_id_for_run
from delivery.intake import parse_request, refusal_message
from delivery.manifests import DEPLOY_FOLDER, TEMPLATE_SUFFIX, check_templates, templates_from_files
from delivery.models import (
    BuildResult,
    CommitInfo,
    MergeInfo,
    Model,
    PullRequest,
    ReleaseRequest,
    release_run_name,
)
from flows.build import run_build
from flows.promotion import PromotionSummary, deployed_environments, promote_path, validate_promotion
from tasks.approval import verify_planner_signature
from tasks.commit import create_commit
from tasks.pull_request import check_pull_request, merge_pull_request, open_pull_request
from tasks.summary import publish_status

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


def run_ids(run: FlowRun | None) -> dict[str, str]:
    """The release and trace ids of a request sent without them, derived from its flow run.

    The run starts again from the top with the same raw parameters after an approval wait or a
    crash: ids derived from the run (not generated) are the same on every start of it.
    """
    if run is None:
        return {}
    created = run.created or run.expected_start_time or datetime.now(UTC)
    return {"release_id": release_id_for_run(run.id, created), "trace_id": trace_id_for_run(run.id)}


def _run_name() -> str:
    # The flow validates its parameter itself: this is the request as sent (a model or its JSON).
    ctx = FlowRunContext.get()
    request: Any = (ctx.parameters or {}).get("request") if ctx else None
    if isinstance(request, dict):
        release_id, revision = request.get("release_id"), request.get("revision")
    else:
        release_id, revision = getattr(request, "release_id", None), getattr(request, "revision", None)
    if not release_id:  # left out (the form): the id the flow will derive from this run
        release_id = run_ids(ctx.flow_run if ctx else None).get("release_id")
    if not isinstance(release_id, str) or not release_id:
        return "release"
    return release_run_name(release_id, revision if isinstance(revision, int) else 1)


def _tag_run(request: ReleaseRequest) -> None:
    """Put the release's tags on this flow run itself (``tags()`` only reaches runs created inside).

    Also names the run after the release (:func:`release_run_name`) when it is named otherwise (the
    run was named before the request was validated: ``release`` for a request that is no mapping).
    """
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    wanted = sorted(set(ctx.flow_run.tags or []) | set(release_tags(request.release_id, request.trace_id)))
    name = release_run_name(request.release_id, request.revision)
    if wanted != sorted(ctx.flow_run.tags or []) or ctx.flow_run.name != name:
        ctx.client.update_flow_run(ctx.flow_run.id, tags=wanted, name=name)
        ctx.flow_run.tags = wanted
        ctx.flow_run.name = name


def load_git_host() -> GitHost:
    """Load the configured GitHost block (``DELIVERY_GIT_HOST_BLOCK``, default ``local-git-host/default``).

    Raises:
        NotFound: no block is saved under that reference (the message names the variable).
        InvalidInput: the reference names another kind of block.
    """
    return load_configured_block("git_host", GitHost)


def validate_release(git_host: GitHost, request: ReleaseRequest, *, target: str = PROTECTED_BRANCH) -> str:
    """Refuse a release before anything is written: its repository and target branch must exist.

    Returns:
        The commit at the head of ``target``.

    Raises:
        InvalidInput: naming the field at fault.
    """
    git_grammar.check_branch(request.branch)
    try:
        head = git_host.resolve(request.app, f"refs/heads/{target}")
    except NotFound as exc:
        raise InvalidInput(f"app {request.app!r}: no such repository on the git host ({exc})") from exc
    if head is None:
        raise InvalidInput(f"app {request.app!r}: its repository has no branch {target!r} to release into")
    return head


def validate_application_files(git_host: GitHost, request: ReleaseRequest, commit: str) -> None:
    """Refuse, before the first write, build settings or deploy templates the release would fail on later.

    ``delivery-build.yaml`` is read at the build (after the branch, pull request and merge are
    written) and the templates are rendered after the build: a bad one would leave all of that
    behind. So both are checked here as the release will build them: at ``commit``, with the
    version an artifact of the request brings in place of the repository's. The build and the
    rendering check again and stay the authority (the merge may differ from ``commit`` when the
    protected branch moves, and values are only known per environment); this is a cheap pre-flight.

    Args:
        git_host: holds the application repository.
        request: the release (its app and artifacts).
        commit: the commit the release starts from: the protected branch's head, or ``source.ref``'s.

    Raises:
        InvalidInput: naming the file and the field (or the template's line).
    """
    brought = {artifact.path: artifact.data() for artifact in request.artifacts}
    if BUILD_SETTINGS_FILE in brought:
        settings = brought[BUILD_SETTINGS_FILE]
    else:
        settings = git_host.read_file(request.app, BUILD_SETTINGS_FILE, ref=commit)
    if settings is None:
        raise InvalidInput(f"{request.app}: {BUILD_SETTINGS_FILE} is missing at {commit[:12]}")
    parse_build_settings(settings, source=f"{request.app}:{BUILD_SETTINGS_FILE}")
    files = {**git_host.read_tree(request.app, DEPLOY_FOLDER, ref=commit), **brought}
    templates = templates_from_files(files)
    if not templates:
        raise InvalidInput(f"{request.app}: no {DEPLOY_FOLDER}/*{TEMPLATE_SUFFIX} templates at {commit[:12]}")
    check_templates(templates, source=f"{request.app}:{DEPLOY_FOLDER}")


def resolve_source(git_host: GitHost, request: ReleaseRequest) -> str | None:
    """The commit ``source.ref`` names in the application repository (None for an artifacts release).

    Raises:
        InvalidInput: ``source.ref: ...`` names no branch, tag or commit of the repository.
    """
    if not request.source.ref:
        return None
    sha = git_host.resolve(request.app, request.source.ref)
    if sha is None:
        raise InvalidInput(f"source.ref: {request.source.ref!r} is no branch, tag or commit of "
                           f"repository {request.app!r}")
    return sha


def refuse(exc: BaseException) -> State:
    """End the run Failed with the refusal as its one-line state message; ``result()`` raises ``exc``."""
    message = refusal_message(exc)
    get_run_logger().error("release refused: %s", message)
    return Failed(message=message, data=exc)


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
    for environment in config.path_to(request.target_environment or None):
        load_runtime(config.environment(environment).runtime,
                     source=f"delivery.yaml environments.{environment}.runtime")


@flow(name=RELEASE_FLOW, flow_run_name=_run_name, log_prints=True, validate_parameters=False)
def release(request: ReleaseRequest) -> ReleaseSummary | State:
    """Deliver a release request: commit, pull request, checks, merge, build, then promotion.

    Args:
        request: what to deliver (a ReleaseRequest, or its JSON as the UI's form and the API send it).

    Returns:
        The release summary; or, for a request refused before anything is written, a Failed state whose
        message is the refusal in one sentence naming the field (its ``result()`` raises the error).
    """
    context = FlowRunContext.get()
    try:
        request = parse_request(request, ids=run_ids(context.flow_run if context else None))
    except InvalidInput as exc:
        return refuse(exc)
    _tag_run(request)
    logger = get_run_logger()
    with tags(*release_tags(request.release_id, request.trace_id)):
        try:
            git_host = load_git_host()
            head = validate_release(git_host, request)
            source_commit = resolve_source(git_host, request)
            config = validate_promotion(request)
            validate_blocks(request, config)
            validate_application_files(git_host, request, source_commit or head)
            path = config.path_to(request.target_environment or None)
            if any(config.environment(name).approval.signed for name in path):
                verify_planner_signature(request)
        except PermanentError as exc:
            return refuse(exc)
        commit = create_commit(git_host, request, base=PROTECTED_BRANCH, source_commit=source_commit)
        logger.info("commit %s on %s (created=%s)", commit.sha[:12], commit.branch, commit.created)
        pull_request = open_pull_request(git_host, request, commit, target=PROTECTED_BRANCH)
        pull_request = check_pull_request(git_host, request, pull_request)
        merge = merge_pull_request(git_host, request, pull_request)
        logger.info("merged #%s as %s (created=%s)", merge.pull_request, merge.merge_sha[:12], merge.created)
        # a run resumed after an approval wait replays these stages from their stored results: its status
        # is already further along, and republishing it costs each resumed run about a second
        deployed_before = deployed_environments(request)
        if not deployed_before:
            publish_status(request.release_id, progress=f"Merged #{merge.pull_request} as {merge.merge_sha[:12]}; "
                           "building", trace_id=request.trace_id, artifacts=request.artifact_digests())
        build = run_build(request, merge)
        if not deployed_before:
            publish_status(request.release_id, progress=f"Built; promoting along {' -> '.join(path)}", build=build,
                           trace_id=request.trace_id, artifacts=request.artifact_digests())
        promotion = promote_path(request, build, config, deployed_before=deployed_before)
    return ReleaseSummary(release_id=request.release_id, trace_id=request.trace_id, app=request.app,
                          branch=request.branch, commit=commit, pull_request=pull_request, merge=merge,
                          build=build, promotion=promotion)
