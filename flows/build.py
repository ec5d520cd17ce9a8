"""The build part of a release: stages 5-7 (generate the pipeline, run it, ingest the result).

The release flow calls :func:`run_build` after the merge. It is a plain function, not a subflow:
the stages are task runs of the release run itself, so the release run alone is what suspends,
crashes and resumes (a subflow can neither suspend nor be resubmitted on its own).
"""

from __future__ import annotations

from blocks.git_host import GitHost
from blocks.image_registry import ImageRegistry
from blocks.loading import load_configured_block
from blocks.package_feed import PackageFeed
from blocks.pipeline_runner import PipelineRunner
from delivery.models import BuildResult, MergeInfo, ReleaseRequest
from tasks.build import ingest_build_result, run_pipeline
from tasks.pipeline import generate_pipeline


def run_build(request: ReleaseRequest, merge: MergeInfo) -> BuildResult:
    """Generate or refresh the pipeline, run it, and ingest the build (inside a flow run).

    Args:
        request: the release.
        merge: the merge commit of the release's pull request.

    Returns:
        The build result (Succeeded): test counts, published packages, image digests.

    Raises:
        BuildFailed: the build failed; ``BuildCompleted(status=Failed)`` has been emitted.
        InvalidInput: bad build settings or block configuration.
        NotFound: a block the build needs is not saved (the message names its variable).
    """
    git_host = load_configured_block("git_host", GitHost)
    runner = load_configured_block("pipeline_runner", PipelineRunner)
    feed = load_configured_block("package_feed", PackageFeed)
    registry = load_configured_block("image_registry", ImageRegistry)
    pipeline = generate_pipeline(git_host, request, merge)
    run = run_pipeline(runner, request, pipeline, clone_url=git_host.clone_url(request.app), source=git_host,
                       variables={**feed.pipeline_variables(), **registry.pipeline_variables()},
                       publishers=(feed, registry))
    return ingest_build_result(request, run, feed=feed, registry=registry)
