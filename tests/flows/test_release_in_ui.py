"""The release as the Prefect UI shows it, read over REST as the UI reads it (issue 12, points 2 and 3).

One release started as the UI's form sends it (JSON, no release id): its one top-level run is
named after the generated release id, its task runs are named after the stage registry
(``NN-stage[-env]``) and start in stage order, the release summary artifact is attached to the
release run (every version of it), and the Event feed link opens the feed filtered to the release.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from git import Repo
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow
from support.release import APP, ReleaseStack
from support.runtime import wait_for_events

from cli.client import DeliveryClient
from delivery.events import release_events_link, trace_events_link
from delivery.plan import PlanState
from delivery.stages import STAGES
from tasks.summary import artifact_key
from tasks.timeline import timeline_key

NAME = re.compile(r"^(?P<number>\d\d)-(?P<stage>[a-z_-]+?)(?:-(?P<env>dev|staging|prod))?(?:\[(?P<phase>[^\]]+)\])?$")


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def _task_runs(api: str, flow_run_id: str) -> list[dict[str, Any]]:
    """The run's task runs in the order they started, once every one of them is Completed."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    deadline = time.monotonic() + 30
    while True:
        runs = _post(api, "/task_runs/filter", body)
        if runs and all(run["state_type"] == "COMPLETED" for run in runs) or time.monotonic() > deadline:
            return sorted(runs, key=lambda run: run["start_time"] or run["expected_start_time"])
        time.sleep(0.5)


def test_the_release_is_one_named_run_with_stage_named_tasks_and_its_summary(
        release_stack: ReleaseStack, prefect_server: str) -> None:
    from flows.release import release

    body = release_stack.request("rel-ui-unused", target_environment="dev").model_dump(mode="json")
    del body["release_id"]  # the form leaves it out: the flow generates it
    state = release(request=body, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    release_id, trace_id = summary.release_id, summary.trace_id
    run_id = str(state.state_details.flow_run_id)

    # One top-level run, named after the release, tagged with release and trace.
    run = httpx.get(f"{prefect_server}/flow_runs/{run_id}", timeout=30).json()
    assert run["name"] == release_id and run["parent_task_run_id"] is None
    assert {f"release:{release_id}", f"trace:{trace_id}"} <= set(run["tags"])
    runs = _post(prefect_server, "/flow_runs/filter", {"flow_runs": {"tags": {"all_": [f"release:{release_id}"]}}})
    assert [r["id"] for r in runs] == [run_id]  # no subflow: nothing to reach through a random name

    # Task runs named after the registry, per-environment stages naming the environment, in stage order.
    names = [task_run["name"] for task_run in _task_runs(prefect_server, run_id)]
    numbers = {stage.name: stage.number for stage in STAGES}
    per_environment = {stage.name for stage in STAGES if stage.per_environment}
    parsed = [NAME.match(name) for name in names]
    assert all(parsed), names
    assert names[:7] == ["01-create_commit", "02-open_pull_request", "03-check_pull_request",
                         "04-merge_pull_request", "05-generate_pipeline", "06-run_pipeline",
                         "07-ingest_build_result"], names
    assert names[7] == "08-plan_release-dev", names
    for match in parsed:
        if match["stage"] in numbers:
            assert int(match["number"]) == numbers[match["stage"]], match.string
            assert (match["env"] == "dev") == (match["stage"] in per_environment), match.string
    started = [int(match["number"]) for match in parsed]
    assert started == sorted(started), names  # shown in stage order
    assert any(name.startswith("13-sync_environment-dev[") for name in names), names

    # The summary artifact: every version on the release run; the last one the outcome with links.
    key = artifact_key(release_id)
    versions = _post(prefect_server, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
    assert len(versions) >= 3, versions  # merged, built, dev's outcome at least
    assert {version["flow_run_id"] for version in versions} == {run_id}
    latest = httpx.get(f"{prefect_server}/artifacts/{key}/latest", timeout=30).json()
    assert latest["flow_run_id"] == run_id and latest["type"] == "markdown"
    markdown = latest["data"]
    ui = prefect_server.removesuffix("/api")
    assert f"Trace: `{trace_id}`" in markdown and "Deployed to dev" in markdown
    assert f"({ui}/v2/runs/flow-run/{run_id})" in markdown
    assert f"[release events]({release_events_link(release_id, ui)})" in markdown
    assert f"[trace events]({trace_events_link(trace_id, ui)})" in markdown
    [image] = summary.build.images
    assert f"`{image.repository}@{image.digest}`" in markdown
    assert re.search(r"\| dev \| Deployed \| 1 \| 1 \| - \|", markdown), markdown

    # The timeline an agent reads with one REST call: the ledger's decisions and Git's commits, oldest first.
    timeline = httpx.get(f"{prefect_server}/artifacts/{timeline_key(release_id)}/latest", timeout=30).json()
    assert timeline["type"] == "table"
    rows = json.loads(timeline["data"])
    moments = [datetime.fromisoformat(row["at"]) for row in rows]
    assert moments == sorted(moments)
    seen = {(row["source"], row["kind"]) for row in rows}
    assert {("ledger", "transition"), ("git", "commit")} <= seen, seen
    assert any(row["kind"] == "transition" and "-> Deployed" in row["summary"] for row in rows), rows
    assert any(row["source"] == "git" and row["summary"].startswith("gitops ") for row in rows), rows

    # The Event feed link: the UI sends `resource` as any_resource.id_prefix; that finds the release's events.
    wait_for_events(prefect_server, trace_id, ["CommitCreated", "PullRequestMerged"])
    prefix = {"filter": {"any_resource": {"id_prefix": [f"delivery.release.{release_id}"]}, "order": "ASC"},
              "limit": 50}
    found = _post(prefect_server, "/events/filter", prefix)["events"]
    assert {"delivery.CommitCreated", "delivery.PullRequestMerged"} <= {e["event"] for e in found}
    assert all(e["resource"]["prefect.resource.id"] == f"delivery.release.{release_id}" for e in found)


def _start(flow_run_id: str) -> Any:
    """Start the run as a worker does, in this process: the flow from the top, parameters as stored."""
    from prefect.client.orchestration import get_client

    from flows.release import release

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
    return run_flow(release, flow_run=flow_run, return_type="state")


def _run(api: str, flow_run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def test_a_form_release_without_ids_keeps_its_ids_across_an_approval_wait(
        release_stack: ReleaseStack, prefect_server: str) -> None:
    from flows.release import release

    deployment = release.to_deployment(name=f"release-ui-{uuid.uuid4().hex[:6]}", enforce_parameter_schema=True)
    deployment_id = str(deployment.apply())
    body = release_stack.request("rel-ui-unused", target_environment="staging").model_dump(mode="json")
    del body["release_id"], body["trace_id"]  # the form leaves both out
    # Created as the form creates it: the deployment's parameters, no name, no tags (a random name then).
    run_id = str(_post(prefect_server, f"/deployments/{deployment_id}/create_flow_run",
                       {"parameters": {"request": body}})["id"])
    random_name = _run(prefect_server, run_id)["name"]

    # First start: dev is deployed, staging's approval suspends the run (the process would exit).
    with pytest.raises(Pause):
        _start(run_id)
    run = _run(prefect_server, run_id)
    assert run["state"]["type"] == "PAUSED", run["state"]
    [release_id] = [tag.removeprefix("release:") for tag in run["tags"] if tag.startswith("release:")]
    assert run["name"] == release_id != random_name  # renamed to the release's name as soon as it started
    with DeliveryClient(prefect_server) as client:
        [approved] = client.approve(release_id, approver="user:alice", environment="staging", verdict_timeout=0.1)
    assert approved.accepted, approved

    # Second start of the same run, from the top with the same raw parameters: the same ids throughout.
    state = _start(run_id)
    assert state.is_completed(), state
    summary = state.result()
    assert summary.release_id == release_id
    run = _run(prefect_server, run_id)
    assert run["name"] == release_id
    assert [tag for tag in run["tags"] if tag.startswith("release:")] == [f"release:{release_id}"]
    assert [tag for tag in run["tags"] if tag.startswith("trace:")] == [f"trace:{summary.trace_id}"]
    plans = release_stack.ledger.plans()
    assert [(p.release_id, p.environment, p.state) for p in plans] == [
        (release_id, "dev", PlanState.DEPLOYED), (release_id, "staging", PlanState.DEPLOYED)]
    with Repo(release_stack.host.clone_url(APP)) as repo:
        branches = [ref.path for ref in repo.references if ref.path.startswith("refs/heads/release/")]
    assert branches == [f"refs/heads/release/{release_id}"]


def test_the_event_feed_links() -> None:
    # the React UI's feed takes the resource as a URL-encoded JSON list (tests/ui follows the link in a browser)
    assert release_events_link("rel-20261201-1a2b3c4d", "http://127.0.0.1:4200/") == (
        "http://127.0.0.1:4200/v2/events?resource=%5B%22delivery.release.rel-20261201-1a2b3c4d%22%5D")
    assert trace_events_link("tr-1", "http://ui") == "http://ui/v2/events?resource=%5B%22delivery.trace.tr-1%22%5D"
    assert release_events_link("rel-1", None) is None
