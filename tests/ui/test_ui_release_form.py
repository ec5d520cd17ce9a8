"""The ``release`` deployment's Custom run form, in headless Chromium: what it shows, and starting a release.

Measured (Prefect 3.9, the React UI under ``/v2``): the deployment page has a "Run" menu button whose
"Custom run" item opens ``/v2/deployments/deployment/<id>/run``. The form renders the ``request``
parameter (a ReleaseRequest) field by field from its JSON schema: each field is a ``<label for=...>``
(the schema's title, "(Optional)" appended when it has a default) over a one-row ``<textarea>`` (text),
an ``<input type=number>`` (Revision) or a ``role=switch`` button (booleans); each has an "Open menu"
button ("Use JSON Input", "Omit value"). ``artifacts`` starts as "No items in this list" with an
"Add item" button; an item shows Artifact Id, Path, Content, Content Base64, Sha256 and the nested
ArtifactValidation (Passed switch, Validator, Report Url). ``strategy`` (a union) shows "Field"/"None"
tabs, "None" selected. Submit creates the run and goes back to the deployment page (``?tab=Runs``).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from ui_support import api, persona_key, snapshot, stack_client, wait_until

from cli.stack_info import StackInfo
from delivery.errors import InvalidInput, NotFound
from delivery.models import Artifact, ReleaseRequest

REQUEST_FIELDS = ("Release Id (Optional)", "Trace Id (Optional)", "App", "Artifacts (Optional)", "Ref (Optional)",
                  "Target Environment (Optional)", "Strategy (Optional)", "Requested By", "Revision (Optional)",
                  "Signature (Optional)")
ARTIFACT_FIELDS = ("Artifact Id", "Path", "Content (Optional)", "Content Base64 (Optional)", "Sha256 (Optional)",
                   "Passed", "Validator", "Report Url (Optional)")


def _release_deployment(info: StackInfo) -> dict[str, Any]:
    response = api(info, "GET", "/deployments/name/release/release")
    response.raise_for_status()
    return response.json()


def test_the_custom_run_form_shows_the_release_request_field_by_field(page: Any, ui_stack: StackInfo) -> None:
    page.goto(f"{ui_stack.ui_url}/v2/deployments")
    page.get_by_role("link", name="release", exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()

    page.wait_for_url("**/run**")
    for label in REQUEST_FIELDS:
        page.get_by_text(label, exact=True).wait_for()
    assert page.get_by_label("App", exact=True).evaluate("e => e.tagName") == "TEXTAREA"
    assert page.get_by_label("Revision (Optional)", exact=True).input_value() == "1"
    page.get_by_text("No items in this list").wait_for()

    page.get_by_role("button", name="Add item").click()
    for label in ARTIFACT_FIELDS:
        page.get_by_label(label, exact=True).wait_for()
    assert page.get_by_label("Passed", exact=True).get_attribute("role") == "switch"


# what the server logs for a call it refused as retryable (a 503: SQLite locked), with the stack's setting
REFUSED = re.compile(r"\b503\b|database is locked|retryable exception")
OTHER_RELEASES = 3  # with the form's, four at once: bench/api_contention.py met 503s with four before the fix


def _start_other_releases(info: StackInfo, count: int) -> dict[str, str]:
    """Releases to dev started by an agent through the client; returns release id -> flow run id once all run."""
    started = {}
    with stack_client(info) as client:
        for number in range(count):
            request = ReleaseRequest(
                release_id=f"rel-ui-busy-{uuid.uuid4().hex[:8]}", app="sample-app",
                requested_by="agent:release-manager", target_environment="dev",
                artifacts=[Artifact.from_text(f"ui-busy-{number}", f"app/ui_busy_{number}.txt",
                                              "another release meanwhile\n", validator="ui-test")])
            key = persona_key(info, request.requested_by)
            started[request.release_id] = client.start_release(request, key=key).flow_run_id
    wait_until(lambda: _all_running(info, list(started.values())), timeout=180,
               what=f"the {count} other releases running")
    return started


def _cancel(info: StackInfo, release_ids: list[str]) -> None:
    """Cancel releases the test is done with (their locks freed), so the next tests do not queue behind them."""
    with stack_client(info) as client:
        for release_id in release_ids:
            try:
                client.run_operation("cancel-release/cancel-release", {
                    "release_id": release_id, "requested_by": "user:ui-test", "reason": "the UI test is done"})
            except (InvalidInput, NotFound):
                pass  # it ended already: nothing to cancel


def _all_running(info: StackInfo, run_ids: list[str]) -> bool:
    return all(api(info, "GET", f"/flow_runs/{run_id}").json()["state_type"] == "RUNNING" for run_id in run_ids)


def _server_log(info: StackInfo) -> Path:
    """The stack's Prefect server log (``delivery up`` sends its output to ``<home>/logs/prefect-server.log``)."""
    [server] = [process for process in info.processes if process.name == "prefect-server"]
    return Path(server.log)


def test_a_release_started_from_the_custom_run_form_while_others_run_reaches_the_api(
        page: Any, ui_stack: StackInfo) -> None:
    deployment = _release_deployment(ui_stack)
    server_log = _server_log(ui_stack)
    log_start = server_log.stat().st_size
    busy = _start_other_releases(ui_stack, OTHER_RELEASES)
    others = list(busy.values())
    try:
        _submit_from_the_form(page, ui_stack, deployment, others, server_log, log_start)
    finally:
        _cancel(ui_stack, list(busy))


def _submit_from_the_form(page: Any, ui_stack: StackInfo, deployment: dict[str, Any], others: list[str],
                          server_log: Path, log_start: int) -> None:
    artifact_id = f"ui-{uuid.uuid4().hex[:8]}"
    content = "written from the Custom run form\n"
    page.goto(f"{ui_stack.ui_url}/v2/deployments/deployment/{deployment['id']}/run")

    page.get_by_label("App", exact=True).fill("sample-app")
    page.get_by_role("button", name="Add item").click()
    page.get_by_label("Artifact Id", exact=True).fill(artifact_id)
    page.get_by_label("Path", exact=True).fill("app/ui_note.txt")
    page.get_by_label("Content (Optional)", exact=True).fill(content)
    page.get_by_label("Passed", exact=True).click()
    page.get_by_label("Validator", exact=True).fill("ui-test")
    # dev only: its approval is not signed, so the planner's request needs no signature (flows/release.py)
    page.get_by_label("Target Environment (Optional)", exact=True).fill("dev")
    page.get_by_label("Requested By", exact=True).fill("agent:release-manager")
    snapshot(page, "custom-run-form")
    assert _all_running(ui_stack, others)  # the submit meets them running
    page.get_by_role("button", name="Submit").click()
    # a 503 would leave the form open with "Unknown error while creating flow run" (SQLite locked; see
    # cli/prefect_server.py): the form leaves for the deployment's runs only once the run exists
    page.wait_for_url("**/deployments/deployment/*?tab=Runs")

    def created() -> dict[str, Any] | None:
        response = api(ui_stack, "POST", "/flow_runs/filter",
                       json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 50})
        response.raise_for_status()
        return next((run for run in response.json()
                     if [a.get("artifact_id") for a in run["parameters"]["request"].get("artifacts") or []]
                     == [artifact_id]), None)

    run = wait_until(created, timeout=60, what=f"a release flow run with artifact {artifact_id}")
    request = run["parameters"]["request"]
    assert request["app"] == "sample-app"
    assert request["requested_by"] == "agent:release-manager"
    assert request["target_environment"] == "dev"
    [artifact] = request["artifacts"]
    assert (artifact["path"], artifact["content"]) == ("app/ui_note.txt", content)
    assert artifact["validation"]["passed"] is True and artifact["validation"]["validator"] == "ui-test"
    assert run["deployment_id"] == deployment["id"]
    # the worker picks it up: it leaves the Scheduled state (its end is other tests' business)
    wait_until(lambda: api(ui_stack, "GET", f"/flow_runs/{run['id']}").json()["state_type"] != "SCHEDULED",
               timeout=120, what="the release run picked up by the worker")
    # nor did any other call meet a locked database meanwhile (the server logs each such error)
    with server_log.open(errors="replace") as log:
        log.seek(log_start)
        refused = [line for line in log if REFUSED.search(line)]
    assert refused == [], refused[:5]
