"""What a release leaves in the Prefect UI, in headless Chromium: its summary artifact, the environments
overview, its events.

Measured (Prefect 3.9, the React UI under ``/v2``): ``/v2/artifacts/key/<key>`` shows the key's
description and a timeline of its versions, newest first, each a link (the artifact id's first 8
characters) to ``/v2/artifacts/artifact/<id>``, which renders the markdown (tables as ``<table>``;
an "Artifact"/"Raw" switch). The release's summary is keyed ``release-<release_id>``, the overview
``environments`` (a version per release and per drift check). The summary's "release events" link
(``delivery.events.events_link``) opens the event feed ``/v2/events`` filtered on the release with
``?resource=`` and a JSON list (``["delivery.release.<id>"]``, URL-encoded): the resource picker then
says "1 resource selected"; a bare string there fails the page ("expected array, received string").
The "Past day" window ends at the start of the current minute: an
event shows once the clock has left the minute it occurred in. Each event is a card: a title
("Delivery Commitcreated"), its name in monospace (``delivery.CommitCreated``), the resource (the
release id), related resources (trace, flow run, task run, deployment, work pool) and tags;
newest first, loaded as the page scrolls.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ui_support import api, snapshot, wait_settled, wait_until

from cli.stack_info import StackInfo
from delivery.events import release_events_link, release_resource
from delivery.overview import OVERVIEW_COLUMNS


@pytest.fixture(scope="module")
def dev_release(ui_stack: StackInfo) -> dict[str, Any]:
    """A release of ``sample-app`` to dev, started over REST as the Custom run form does, once it has completed."""
    deployment = api(ui_stack, "GET", "/deployments/name/release/release").json()
    request = {"app": "sample-app", "target_environment": "dev", "requested_by": "agent:release-manager",
               "artifacts": [{"artifact_id": f"ui-{uuid.uuid4().hex[:8]}", "path": "app/ui_views.txt",
                              "content": "for the UI's views\n",
                              "validation": {"passed": True, "validator": "ui-test"}}]}
    response = api(ui_stack, "POST", f"/deployments/{deployment['id']}/create_flow_run",
                   json={"parameters": {"request": request}})
    response.raise_for_status()
    run_id = response.json()["id"]

    run = wait_settled(ui_stack, run_id, timeout=180, what=f"the dev release {run_id} finished")
    assert run["state_type"] == "COMPLETED", run["state"]
    return run


def _open_summary(page: Any, ui_stack: StackInfo, release_id: str) -> None:
    """Open the latest version of the release's summary artifact."""
    page.goto(f"{ui_stack.ui_url}/v2/artifacts/key/release-{release_id}")
    # the key's description: the first version's ("Status of release ..." while promoting), or a later one's
    page.get_by_text(re.compile(rf"(Status|Summary) of release {re.escape(release_id)}")).first.wait_for()
    page.locator("a[href*='/artifacts/artifact/']").first.click()
    page.get_by_text(f"Release {release_id}", exact=True).first.wait_for()


def test_the_release_summary_artifact_opens(page: Any, ui_stack: StackInfo, dev_release: dict[str, Any]) -> None:
    _open_summary(page, ui_stack, dev_release["name"])  # the flow names its run after the release

    row = page.locator("table tr", has=page.get_by_role("cell", name="dev", exact=True))
    row.get_by_role("cell", name="Deployed", exact=True).wait_for()
    snapshot(page, "release-summary")


def test_the_environments_overview_opens(page: Any, ui_stack: StackInfo, dev_release: dict[str, Any]) -> None:
    page.goto(f"{ui_stack.ui_url}/v2/artifacts/key/environments")

    page.get_by_text("Every environment at a glance").first.wait_for()
    page.locator("a[href*='/artifacts/artifact/']").first.click()

    page.locator("table").first.wait_for()
    for header in OVERVIEW_COLUMNS:  # release, revision, since, approved by, health, drift, last check...
        page.get_by_role("columnheader", name=header, exact=True).wait_for()
    for environment in ("dev", "staging", "prod"):
        page.get_by_role("cell", name=environment, exact=True).first.wait_for()
    snapshot(page, "environments-overview")


def test_the_summary_links_to_the_release_events_in_the_event_feed(page: Any, ui_stack: StackInfo,
                                                                     dev_release: dict[str, Any]) -> None:
    release_id = dev_release["name"]
    resource = release_resource(release_id)
    expected = ("delivery.CommitCreated", "delivery.ReleasePlanned", "delivery.HealthChecked")

    def filed() -> list[datetime] | None:  # the server files events a little after they are emitted
        response = api(ui_stack, "POST", "/events/filter",
                       json={"filter": {"resource": {"id": [resource]}}, "limit": 50})
        response.raise_for_status()
        events = response.json()["events"]
        if not set(expected) <= {event["event"] for event in events}:
            return None
        return [datetime.fromisoformat(event["occurred"]) for event in events]

    newest = max(wait_until(filed, timeout=90, what=f"the events of {resource} filed by the server"))
    # measured: the feed's "Past day" window ends at the start of the current minute, so an event shows
    # only once the clock has passed the minute it occurred in
    shown_from = newest.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)
    time.sleep(max(0.0, (shown_from - datetime.now(UTC)).total_seconds()))

    _open_summary(page, ui_stack, release_id)
    link = page.get_by_role("link", name="release events", exact=True)
    assert link.get_attribute("href") == release_events_link(release_id, ui_stack.ui_url)
    link.click()  # the link the CLI prints too (DeliveryClient.events_url)

    page.wait_for_url("**/v2/events?resource=*")
    page.get_by_text("1 resource selected", exact=True).wait_for()
    for event in expected:
        page.get_by_text(event, exact=True).first.wait_for()
    assert page.get_by_text("prefect.flow-run.Completed", exact=True).count() == 0  # only the release's
    snapshot(page, "release-events")
