"""The release's summary artifact (``release-<id>``): where the release is, per environment, with its links.

One markdown artifact per release, attached to the release's run whoever refreshes it (the release
run itself, recovery, an operation, an incident), so that run's Artifacts tab holds the summary; the
release's timeline (:mod:`tasks.timeline`) is republished with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from uuid import UUID

from delivery.approvals import counted_approvers
from delivery.ids import RELEASE_FLOW, release_tag
from delivery.ledger import Ledger
from delivery.models import BuildResult
from delivery.overview import format_time, markdown_cell


def artifact_key(release_id: str) -> str:
    """The markdown artifact's key for a release (lowercase letters, digits and dashes)."""
    return "release-" + re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")


def _ui_links(release_id: str, trace_id: str | None, flow_run_id: UUID | None) -> list[str]:
    from delivery.events import release_events_link, run_link, trace_events_link, ui_base_url

    ui = ui_base_url()
    links = []
    if run := run_link(flow_run_id, ui):
        links.append(f"[release run]({run})")
    if events := release_events_link(release_id, ui):
        links.append(f"[release events]({events})")
    if trace_id and (traced := trace_events_link(trace_id, ui)):
        links.append(f"[trace events]({traced})")
    return links


def render_status(release_id: str, ledger: Ledger, *, progress: str = "", build: BuildResult | None = None,
                  trace_id: str | None = None, flow_run_id: UUID | None = None,
                  artifacts: Mapping[str, str] | None = None) -> str:
    """The markdown of a release's summary artifact, from the ledger and what the run knows.

    Where the release is (``progress``), its trace id and links (the release run, the Event feed
    filtered to the release and to its trace), the artifacts' sha256 (``artifacts``: id -> hex, given
    by the release run, which holds the request), the images by digest; then per environment the
    latest revision's plan: state, attempt, approvers, when it started and last moved, the last
    reason; then the operations done to the release from outside its run.
    """
    plans = ledger.latest_plans(release_id)
    trace = trace_id or (plans[0].trace_id if plans else None)
    build = build or (plans[0].build if plans else None)
    lines = [f"# Release `{release_id}`", ""]
    if progress:
        lines += [f"**{markdown_cell(progress)}**", ""]
    lines += [f"Trace: `{trace or '-'}`", ""]
    links = _ui_links(release_id, trace, flow_run_id)
    if links:
        lines += [" · ".join(links), ""]
    if artifacts:
        lines += ["Artifacts (sha256): " + ", ".join(f"`{name}` `{sha256}`" for name, sha256 in artifacts.items()), ""]
    if build is not None and build.images:
        lines += ["Images: " + ", ".join(f"`{image.reference}`" for image in build.images), ""]
    lines += ["| environment | state | revision | attempt | approvers | started | last change | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for plan in plans:
        last = ledger.last_transition(plan.plan_id)
        lines.append(f"| {plan.environment} | {plan.state.value} | {plan.revision} | {plan.attempt} | "
                     f"{', '.join(counted_approvers(plan.approvals)) or '-'} | {format_time(plan.created_at)} | "
                     f"{format_time(last.at if last else plan.updated_at)} | "
                     f"{markdown_cell(last.reason if last else '')} |")
    if not plans:
        lines.append("| - | not planned yet | | | | | | |")
    actions = ledger.actions(release_id=release_id)
    if actions:
        lines += ["", "| when | operation | by | reason |", "|---|---|---|---|"]
        lines += [f"| {format_time(a['at'])} | {a['action']} | {a['actor']} | {markdown_cell(a['reason'])} |"
                  for a in actions]
    return "\n".join(lines) + "\n"


def release_run_id(release_id: str) -> UUID | None:
    """The release's run: the current flow run when it is the release run, else its newest release run.

    Without any release run (a flow that calls :func:`promote_path` itself), the current flow run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context and context.flow_run and context.flow.name == RELEASE_FLOW and not context.flow_run.parent_task_run_id:
        return context.flow_run.id
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RELEASE_FLOW])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[release_tag(release_id)])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    if runs:
        return runs[0].id
    return context.flow_run.id if context and context.flow_run else None  # a flow that promotes by itself


def publish_status(release_id: str, ledger: Ledger | None = None, *, progress: str = "",
                   build: BuildResult | None = None, trace_id: str | None = None,
                   artifacts: Mapping[str, str] | None = None) -> None:
    """Refresh the release's summary artifact (``release-<id>``, one key per release) on the release run,
    and its timeline (``timeline-<id>``, :mod:`tasks.timeline`).

    The artifact is attached to the release's run even when another flow (recovery, retry, cancel)
    refreshes it, so the release run's Artifacts tab holds the release's summary.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    run_id = release_run_id(release_id)
    markdown = render_status(release_id, ledger or Ledger(), progress=progress, build=build, trace_id=trace_id,
                             flow_run_id=run_id, artifacts=artifacts)
    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(key=artifact_key(release_id), type="markdown", data=markdown,
                                              description=f"Summary of release {release_id}", flow_run_id=run_id))
    from tasks.timeline import publish_timeline

    publish_timeline(release_id, ledger)



__all__ = ["artifact_key", "publish_status", "release_run_id", "render_status"]
