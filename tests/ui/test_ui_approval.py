"""Approving a release from the Prefect UI's Resume dialog, in headless Chromium: a refusal, then a signed approval.

Measured (Prefect 3.9, the React UI under ``/v2``): a paused or suspended run's page
(``/v2/runs/flow-run/<id>``) has an "Open menu" button whose "Resume" item opens "Resume Flow Run".
The dialog shows the wait's description (markdown) over a form of the wait's input schema. Each
field sits under its title (" (Optional)" appended when it has a default). An ``enum`` is a button
labelled "Select <title>" that opens a list of the allowed values; text is a textarea. "Resume"
posts ``/flow_runs/<id>/resume`` with the input and shows the toast "Flow run resumed". Read in the
UI's code, not exercised here: a resume the server answers ``REJECT`` shows the server's reason in a
toast instead. The form cannot send one: the ``approver`` list leaves out the planner and those who
already approved.

A person approves staging as the description says: they run the ``delivery identity sign ...``
command it shows, with their own key and identity, and paste its output into ``signature``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from ui_support import persona_key, snapshot, stack_client, wait_settled, wait_until

from cli.release_status import release_status
from cli.stack_info import StackInfo
from delivery.models import Artifact, ReleaseRequest

PLANNER = "agent:release-manager"
APPROVER = "user:alice"
OTHER = "user:bob"


@pytest.fixture(scope="module")
def staging_wait(ui_stack: StackInfo) -> dict[str, Any]:
    """A release of ``sample-app`` up to staging, signed by its planner, once it waits for staging's approval."""
    request = ReleaseRequest(
        release_id=f"rel-ui-{uuid.uuid4().hex[:8]}", app="sample-app", requested_by=PLANNER,
        target_environment="staging",
        artifacts=[Artifact.from_text("ui-approval", "app/ui_approval.txt", "approved in the UI\n",
                                      validator="ui-test")])
    with stack_client(ui_stack) as client:
        started = client.start_release(request, key=persona_key(ui_stack, PLANNER))
        paused = client.wait_for_pause(request.release_id, environment="staging", timeout=300)
    return {"release_id": request.release_id, "run_id": started.flow_run_id, "pause_key": paused.pause_key}


def _open_resume_dialog(page: Any, info: StackInfo, run_id: str) -> Any:
    page.goto(f"{info.ui_url}/v2/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Open menu").click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Resume Flow Run").wait_for()
    dialog.get_by_text("Approve release").first.wait_for()  # the wait's description, once loaded
    return dialog


def _sign_as_shown(dialog: Any, *, identity: str, key: Path) -> str:
    """Run the signing command the description shows, as ``identity`` with ``key``; return what it prints."""
    shown = dialog.get_by_text(re.compile(r"^\s*delivery identity sign ")).first.inner_text()
    words = shlex.split(shown.replace("<your key>", str(key)).replace("<your identity>", identity))
    assert words[:3] == ["delivery", "identity", "sign"], shown
    done = subprocess.run([sys.executable, "-m", "cli.main", *words[1:]], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _choose(dialog: Any, page: Any, title: str, value: str) -> None:
    """Pick ``value`` in the combobox of the field titled ``title`` (an ``enum`` of the wait's schema)."""
    dialog.get_by_role("button", name=f"Select {title}", exact=True).click()
    page.get_by_role("option", name=value, exact=True).click()
    assert dialog.get_by_role("button", name=f"Select {title}", exact=True).inner_text().strip() == value


def _decide(page: Any, dialog: Any, *, approver: str, signature: str) -> None:
    _choose(dialog, page, "Decision", "approve")
    _choose(dialog, page, "Approver", approver)
    dialog.get_by_label("Signature", exact=True).fill(signature)
    dialog.get_by_role("button", name="Resume", exact=True).click()


def _paused_again(info: StackInfo, release_id: str, after_key: str) -> str:
    def waiting() -> str | None:
        with stack_client(info) as client:
            keys = [p.pause_key for p in client.paused_runs(release_id, environment="staging")]
        return next((key for key in keys if key and key != after_key), None)

    return wait_until(waiting, timeout=180, what=f"{release_id} waiting again in staging")


def test_a_decision_signed_with_someone_elses_key_is_refused_with_its_reason_then_a_signed_one_approves(
        page: Any, ui_stack: StackInfo, staging_wait: dict[str, Any]) -> None:
    release_id, run_id = staging_wait["release_id"], staging_wait["run_id"]

    # The dialog says what is approved and who may decide; Alice's command, signed with Bob's key.
    dialog = _open_resume_dialog(page, ui_stack, run_id)
    dialog.get_by_text(f"Approve release {release_id}", exact=False).first.wait_for()
    assert PLANNER in dialog.inner_text()  # named as the one who may not approve
    page.get_by_text("Suspended").first.wait_for()  # the release run itself shows that it waits
    snapshot(page, "resume-dialog")
    forged = _sign_as_shown(dialog, identity=APPROVER, key=persona_key(ui_stack, OTHER))
    _decide(page, dialog, approver=APPROVER, signature=forged)
    page.get_by_text("Flow run resumed").wait_for()

    # The run judged it, refused it, and waits again; the dialog now says why.
    second_key = _paused_again(ui_stack, release_id, staging_wait["pause_key"])
    dialog = _open_resume_dialog(page, ui_stack, run_id)
    refused = dialog.get_by_text(re.compile(r"Last refused: "))
    refused.wait_for()
    assert APPROVER in refused.inner_text() and "key" in refused.inner_text(), refused.inner_text()
    refused.scroll_into_view_if_needed()
    snapshot(page, "refused-approval")

    # Alice signs with her own key: counted, staging deployed, the run completes.
    signed = _sign_as_shown(dialog, identity=APPROVER, key=persona_key(ui_stack, APPROVER))
    _decide(page, dialog, approver=APPROVER, signature=signed)
    page.get_by_text("Flow run resumed").wait_for()

    run = wait_settled(ui_stack, run_id, timeout=300, what=f"{release_id} finished after the approval")
    assert run["state_type"] == "COMPLETED", (second_key, run["state"])
    with stack_client(ui_stack) as client:
        status = release_status(client, release_id, ledger_url=ui_stack.ledger_url)
    staging = [plan for plan in status.plans if plan.environment == "staging"]
    assert [plan.state.value for plan in staging] == ["Deployed"], staging
    assert staging[0].approvers == [APPROVER] and [r.approver for r in staging[0].refused] == [APPROVER], staging
