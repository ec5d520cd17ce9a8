"""The stage registry: every delivery stage once, with its number, scope and event.

The stage decorator (``tasks/stage.py``), the failpoints, the run names of the task runs and the
README's stage table all read this one table, so a stage is named in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from delivery.events import EventName


@dataclass(frozen=True)
class Stage:
    """One delivery stage."""

    number: int
    name: str
    per_environment: bool
    events: tuple[EventName, ...]
    summary: str

    @property
    def label(self) -> str:
        """How a task run of the stage is named: ``<number>-<name>``, so runs sort in stage order."""
        return f"{self.number:02d}-{self.name}"

    def run_name(self, environment: str | None = None) -> str:
        """A task run's name: the label, then ``-<environment>`` for a stage run per environment.

        ``08-plan_release-staging``: the Prefect UI lists a release's task runs by name, so they sort
        in stage order and say which environment each one acted on.
        """
        return f"{self.label}-{environment}" if self.per_environment and environment else self.label


STAGES: tuple[Stage, ...] = (
    Stage(1, "create_commit", False, (EventName.COMMIT_CREATED,),
          "the validated artifacts go to `release/<release_id>` with trailers"),
    Stage(2, "open_pull_request", False, (EventName.PULL_REQUEST_OPENED,), "open (or reuse) the pull request"),
    Stage(3, "check_pull_request", False, (EventName.PULL_REQUEST_CHECKED,),
          "branch policy, the app's tests on the merge result, policy gate"),
    Stage(4, "merge_pull_request", False, (EventName.PULL_REQUEST_MERGED,), "merge commit on `main`"),
    Stage(5, "generate_pipeline", False, (EventName.PIPELINE_GENERATED,),
          "Azure Pipelines YAML from `delivery-build.yaml`, committed when it changed"),
    Stage(6, "run_pipeline", False, (EventName.PIPELINE_RUN_STARTED,), "run the pipeline: tests, package, image"),
    Stage(7, "ingest_build_result", False, (EventName.BUILD_COMPLETED,),
          "test counts, the wheel on the feed and the image by digest"),
    Stage(8, "plan_release", True, (EventName.RELEASE_PLANNED,), "plan the environment with its strategy"),
    Stage(9, "request_approval", True, (EventName.RELEASE_APPROVED, EventName.RELEASE_REJECTED),
          "CEL policy gates, then a suspended wait for approvers other than the planner"),
    Stage(10, "render_manifest", True, (EventName.MANIFEST_RENDERED,),
          "render the app's templates for the environment"),
    Stage(11, "provision_infrastructure", True, (EventName.INFRASTRUCTURE_PROVISIONED,),
          "Pulumi, when the environment names a stack"),
    Stage(12, "promote", True, (EventName.DEPLOYMENT_PROMOTED,), "commit the desired state to the GitOps repo"),
    Stage(13, "sync_environment", True, (EventName.GITOPS_SYNCED,),
          "compare Git with the runtime, apply what differs, prune"),
    Stage(13, "check_health", True, (EventName.HEALTH_CHECKED,), "health gates of the phase"),
    Stage(14, "roll_back", True, (EventName.ROLLBACK_COMPLETED,), "the strategy's rollback on failure"),
)

_BY_NAME = {stage.name: stage for stage in STAGES}


def stage_named(name: str) -> Stage:
    """The registered stage called ``name``.

    Raises:
        KeyError: naming the stages that exist.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(_BY_NAME)}") from None


def markdown_table() -> str:
    """The README's stage table, generated from the registry."""
    rows = ["| # | stage | per environment | emits | what |", "|---|---|---|---|---|"]
    for stage in STAGES:
        events = ", ".join(f"`{event.value}`" for event in stage.events)
        rows.append(f"| {stage.number} | `{stage.name}` | {'yes' if stage.per_environment else 'no'} | "
                    f"{events} | {stage.summary} |")
    return "\n".join(rows)


__all__ = ["STAGES", "Stage", "markdown_table", "stage_named"]
