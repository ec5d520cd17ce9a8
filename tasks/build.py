"""Stages 6 and 7: run the pipeline, then ingest what it built.

``run_pipeline`` queues the generated pipeline on the configured runner (``PipelineRunStarted``
as soon as the run has an id) and waits for it. ``ingest_build_result`` turns the run into a
:class:`~delivery.models.BuildResult`, checks that what the publish jobs reported is really in the
feed and the registry, and emits ``BuildCompleted``. A failed build is emitted as
``BuildCompleted(status=Failed)`` and then raised as :class:`~delivery.errors.BuildFailed`, which
stops the release: nothing can be planned from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blocks.git_host import GitHost
from blocks.image_registry import ImageRegistry
from blocks.package_feed import PackageFeed
from blocks.pipeline_runner import PipelineRunner, PipelineRunResult
from delivery.errors import BuildFailed
from delivery.events import EventName, emit
from delivery.models import BuildResult, BuildStatus, ReleaseRequest
from tasks.pipeline import GeneratedPipeline
from tasks.stage import stage


@stage("run_pipeline")
def run_pipeline(
    runner: PipelineRunner,
    request: ReleaseRequest,
    pipeline: GeneratedPipeline,
    *,
    clone_url: str,
    variables: Mapping[str, str] | None = None,
    source: GitHost | None = None,
    publishers: Sequence[PackageFeed | ImageRegistry] = (),
) -> PipelineRunResult:
    """Run the generated pipeline at the commit it was generated for, to completion.

    Args:
        runner: the pipeline runner block.
        request: the release (ids for the event and the run's name).
        pipeline: from ``generate_pipeline``: repository, file and commit.
        clone_url: where the runner clones the repository from.
        variables: queue-time variables: the feed and registry locations.
        source: the host of ``clone_url``, whose credentials (:meth:`GitHost.clone_env`) a runner cloning on
            this machine needs; asked for here, inside the stage, so no secret is ever a stage's parameter.
        publishers: the feed and registry the publish jobs reach: their credentials
            (``pipeline_secrets``) go to the runner as secret variables, asked for here likewise.

    Returns:
        The run's result; a failed run is returned, and judged by ``ingest_build_result``.
    """

    def started(run_id: str) -> None:
        emit(EventName.PIPELINE_RUN_STARTED, release_id=request.release_id, trace_id=request.trace_id,
             payload={"run_id": run_id, "runner": type(runner).__name__, "repository": pipeline.repository,
                      "commit": pipeline.commit, "pipeline": pipeline.path})

    secret_variables = {name: value for block in publishers for name, value in block.pipeline_secrets().items()}
    return runner.run(repository=pipeline.repository, clone_url=clone_url, commit=pipeline.commit,
                      pipeline_path=pipeline.path, variables=dict(variables or {}), run_name=request.release_id,
                      on_started=started, clone_env=source.clone_env() if source is not None else None,
                      secret_variables=secret_variables)


def _failure_reason(run: PipelineRunResult, missing: list[str]) -> str:
    reasons = [run.reason] if run.reason else []
    if run.tests.failed:
        reasons.append(f"{run.tests.failed} of {run.tests.total} tests failed")
    reasons += missing
    return "; ".join(reasons) or "the pipeline run failed"


@stage("ingest_build_result")
def ingest_build_result(
    request: ReleaseRequest,
    run: PipelineRunResult,
    *,
    feed: PackageFeed | None = None,
    registry: ImageRegistry | None = None,
) -> BuildResult:
    """Judge a pipeline run and record the build.

    Args:
        request: the release.
        run: from ``run_pipeline``.
        feed: when given, every reported package must be in it.
        registry: when given, every reported image must be served by its digest.

    Returns:
        The build result (status Succeeded).

    Raises:
        BuildFailed: the run failed, or what it reported is not where it says; ``BuildCompleted``
            with status Failed has been emitted first.
    """
    missing = []
    if run.succeeded:
        missing += [f"package {p.name} {p.version} is not in the feed" for p in run.packages
                    if feed is not None and not feed.has(p)]
        missing += [f"image {i.reference} is not in the registry" for i in run.images
                    if registry is not None and not registry.has(i)]
    ok = run.succeeded and not missing
    result = BuildResult(
        status=BuildStatus.SUCCEEDED if ok else BuildStatus.FAILED,
        commit=run.commit, run_id=run.run_id, tests=run.tests, packages=run.packages, images=run.images,
        logs_url=run.logs_url, reason="" if ok else _failure_reason(run, missing),
        started_at=run.started_at, finished_at=run.finished_at,
    )
    emit(EventName.BUILD_COMPLETED, release_id=request.release_id, trace_id=request.trace_id, payload=result)
    if not ok:
        raise BuildFailed(f"build of {request.app} at {run.commit[:12]} failed: {result.reason} "
                          f"(logs: {run.logs_url})")
    return result
