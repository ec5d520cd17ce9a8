"""Operations on releases, as a user and an agent run them, on the real stack of the fault suite.

- timeout: an approval window closes while no worker runs: Prefect's server fails the suspended
  run by itself, and once a worker is back the plan is Rejected by ``system:timeout``; a late
  approval is refused and audited;
- retry: a release whose health gate failed in dev is retried after a fix (``delivery release
  retry``): Failed -> Promoting by the actor who asked, the same run resumes and dev ends
  Deployed; a retry that does not apply (unknown release, nothing Failed, or an environment that
  already runs a newer build) is refused and changes nothing;
- cancel: a release waiting for approval, and one stuck Running whose process died with its
  worker, are cancelled (``delivery release cancel``): run Cancelled, open plans closed by the
  actor, ``cancelled`` in the ledger; a second cancel is refused; the environment lock the stuck
  one held is taken by another release afterwards;
- long waits: releases suspended for approval stay Suspended well past the heartbeat automation's
  silence window, never Crashed, even when their process beat once more just after suspending
  (the automation then asks recover-release, which leaves a wait alone), and an approval then
  continues one to the end;
- never backwards: of two releases of one app, the older by merge order, approved after the newer
  was deployed, is Rejected "superseded by <newer>" (status, ReleaseRejected event, status
  artifact) and the environment keeps the newer image.

Every case has a lane of its own (fault_support.Lane: its app, work queue, worker, failpoints).
Flow runs start slowly on a loaded machine, so the module runs one scenario in which the cases
overlap and every operation that can run at the same time as others does (the ``scenario``
fixture, in phases); the tests then check what each case left: runs, ledger, events, what serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from fault_support import FaultStack, Lane, Release, built_image, outcome, release_request, wait_until
from operations_support import (
    Cli,
    GitOpsConfig,
    actions,
    clis,
    flow_runs_of,
    gitops_config,
    late_heartbeat,
    launch,
    merged,
    operations,
    plan,
    plan_state,
    release_events,
    run_logs,
    started_stages,
    status_artifact,
    suspended_without_crash,
    transitions,
    wait_plan,
    wait_state,
    wait_waiting,
)

from blocks.git_host import LocalGitHost
from cli.automations import SILENCE_SECONDS
from delivery.approvals import LATE_REASON, TIMEOUT_ACTOR
from delivery.events import EventName
from delivery.plan import PlanState
from tasks.approval import POLICY_ACTOR

OPS = "user:ops"
APPROVER = "user:alice"
FAIL_ANNOTATION = "simulator.delivery.gitops/fail"
# Short enough to close during the scenario, long enough to kill every worker inside it.
# T's approval window: it must still be open once S's cancel ended (S silent for GONE_AFTER_SECONDS, 75 s)
SHORT_WINDOW_SECONDS = 70
# How long an approval wait is watched: the heartbeat automation's silence window and a margin.
LONG_WAIT_SECONDS = SILENCE_SECONDS + 25
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


@dataclass
class Scenario:
    """The module's lanes and releases, and what the scenario saw on its way (for the tests)."""

    stack: FaultStack
    lanes: dict[str, Lane]
    config: GitOpsConfig
    releases: dict[str, Release] = field(default_factory=dict)
    said: dict[str, Cli] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)

    def start(self, key: str, lane: str, *, target: str, failing: bool = False) -> Release:
        request = release_request(self.lanes[lane].app, failing=failing, target=target)
        self.releases[key] = self.stack.start(request, queue=lane, armed=self.lanes[lane].failpoints, approvals={})
        return self.releases[key]

    def __getitem__(self, key: str) -> Release:
        return self.releases[key]

    def note(self, text: str) -> None:
        self.stack.say(f"[operations {time.monotonic() - self.began:5.0f}s] {text}")

    def run(self, commands: dict[str, tuple[str, ...]]) -> None:
        """Run ``delivery`` commands at once, each under a name the tests read its result by."""
        self.note(f"running {', '.join(commands)}")
        self.said.update(zip(commands, clis(self.stack, list(commands.values())), strict=True))


@pytest.fixture(scope="module")
def scenario(fault_stack: FaultStack) -> Iterator[Scenario]:
    """Run the module's scenario; see each phase."""
    stack = fault_stack
    live = stack.workers()
    if any(p.name == "worker" for p in live):
        stack.serve_default_queue_only()  # up's worker polls every queue: lanes own theirs
    elif not any(p.name.startswith("worker-default") for p in live):
        stack.start_worker(queue="default", label="default")  # the operations run there
    lanes = stack.lanes(dict.fromkeys(("ops-order", "ops-stuck", "ops-cancel", "ops-retry")))
    with ExitStack() as cleanup:
        run = Scenario(stack, lanes, cleanup.enter_context(gitops_config(stack)))
        _start(run)
        _time_out(run)
        _retry_cancel_approve(run)
        _late_ones(run)
        run.note("done")
        yield run
    for lane in lanes.values():
        lane.kill_workers()  # nothing runs in the module's lanes any more
        assert not lane.armed(), f"{lane.name}: failpoints that never fired: {lane.armed()}"


def _start(run: Scenario) -> None:
    """Phase 1: every release starts; S gets stuck; C and S are cancelled; T starts with a short window.

    - ``ops-order``: A, then B once A runs in dev (merge order A, B), both target staging, where
      they wait for approval (A and B are the longest path: they start first). Once A waits, the
      heartbeat its process may send just after suspending is sent for it;
    - ``ops-stuck``: S, target staging; once it waits there its lane arms ``promote:worker`` and S
      is approved: its process and its worker die inside the staging promotion, holding the
      staging lock, its run left Running with nobody to tell;
    - ``ops-cancel``: C, target staging, waits there; C and S are then cancelled by ``user:ops``
      through the CLI (S's cancel ends once its silence shows its process gone: ~75 s after its
      last heartbeat). Then T, target staging, with a staging approval window of
      SHORT_WINDOW_SECONDS. A run reads delivery.yaml when it starts or resumes: T starts once
      the others have read it, and none resumes until phase 2 puts it back;
    - ``ops-retry``: F1 (with B), then F2 once F1 is merged, failing in dev (their rollout never
      becomes ready), target dev.
    """
    stack, lanes = run.stack, run.lanes
    run.start("A", "ops-order", target="staging")
    run.start("S", "ops-stuck", target="staging")
    run.start("C", "ops-cancel", target="staging")
    wait_plan(stack, run["A"], "dev", PlanState.DEPLOYED, timeout=300)
    run.start("B", "ops-order", target="staging")
    run.start("F1", "ops-retry", target="dev", failing=True)

    wait_waiting(run["S"], "staging")
    lanes["ops-stuck"].arm("promote:worker")
    with stack.client() as client:
        client.approve(run["S"].release_id, approver=APPROVER, environment="staging", comment="the stuck case")
    # the heartbeat a suspended run's process may send just after it suspended (see late_heartbeat)
    wait_waiting(run["A"], "staging")
    run.seen["A's late heartbeat"] = late_heartbeat(stack, run["A"])
    # one app's releases branch from main: F2 once F1 is merged, or their version files conflict
    wait_until(lambda: merged(stack, run["F1"]), timeout=180, what="F1 merged")
    run.start("F2", "ops-retry", target="dev", failing=True)
    lanes["ops-stuck"].wait_fired("promote:worker", timeout=240)
    run.seen["S when its worker died"] = (run["S"].state(), plan_state(stack, run["S"], "staging"))
    wait_waiting(run["C"], "staging")
    cancels = {"cancel C": ("release", "cancel", run["C"].release_id, "--as", OPS, "--reason", "no longer wanted"),
               "cancel S": ("release", "cancel", run["S"].release_id, "--as", OPS, "--reason", "its worker died")}
    run.seen["cancels"] = {name: launch(stack, *args) for name, args in cancels.items()}
    run.note("C and S being cancelled")

    wait_until(lambda: started_stages(stack, run["B"]), timeout=120, what="B past its validation")
    run.config.change(lambda config: config["environments"]["staging"]["approval"].update(
        timeout_seconds=SHORT_WINDOW_SECONDS), f"staging: a {SHORT_WINDOW_SECONDS} s approval window")
    run.start("T", "ops-cancel", target="staging")


def _time_out(run: Scenario) -> None:
    """Phase 2: T waits; every worker is killed; the window closes; workers come back; T is rejected.

    The workers are killed once nothing else runs (a flow-run process dies with its worker). While
    T's plan is settled, the first refusals run (a few operations at a time: the SQLite-backed
    server of the local stack answers 503 to many concurrent writers).
    """
    stack, late = run.stack, run["T"]
    wait_waiting(late, "staging")
    cancels = run.seen.pop("cancels")
    run.said.update({name: command.result() for name, command in cancels.items()})
    for key in ("F1", "F2"):
        run.seen[f"{key} ended"] = wait_state(run[key], *ENDED)
    wait_waiting(run["B"], "staging")
    for worker in stack.workers():
        stack.kill(worker)
    run.seen["T after the kill"] = late.state()
    run.note("every worker killed")
    run.seen["T expired"] = wait_state(late, *ENDED, timeout=SHORT_WINDOW_SECONDS + 90)
    run.seen["T's plan when its run expired"] = plan_state(stack, late, "staging")
    # the default queue's worker (operations, recovery) and those of the lanes still used
    stack.wait_online(stack.start_worker(queue="default", label="default", wait=False),
                      *(run.lanes[name].start_worker(wait=False) for name in ("ops-order", "ops-retry")))
    run.note("workers back")
    run.run({
        "retry unknown": ("release", "retry", "rel-never-started", "--as", OPS),
        "retry nothing failed": ("release", "retry", run["A"].release_id, "--as", OPS),
        "cancel C again": ("release", "cancel", run["C"].release_id, "--as", OPS),
    })
    wait_plan(stack, late, "staging", PlanState.REJECTED, timeout=180)
    run.run({"approve T late": ("release", "approve", late.release_id, "--as", APPROVER, "--environment",
                                "staging")})
    run.config.restore()


def _retry_cancel_approve(run: Scenario) -> None:
    """Phase 3: the fix, then at once: the retry of the newer failed release and B's approval.

    F1 and F2 were merged in some order: the newer is retried, the older is refused in phase 4.
    A and B are approved only after a wait longer than the heartbeat automation's silence window.
    """
    stack = run.stack
    for key in ("F1", "F2"):
        wait_plan(stack, run[key], "dev", PlanState.FAILED)
    host = LocalGitHost(root=stack.info.git_root)
    one, two = (plan(stack, run[key], "dev").build.commit for key in ("F1", "F2"))
    run.releases["older"], run.releases["newer"] = (run["F1"], run["F2"]) if host.is_ancestor(
        run["F1"].request.app, one, two) else (run["F2"], run["F1"])
    for key in ("A", "B"):
        run.seen[f"{key} waited"] = suspended_without_crash(run[key], LONG_WAIT_SECONDS,
                                                            timeout=LONG_WAIT_SECONDS + 180)
    # the heartbeat automation saw A's late heartbeat followed by silence and asked recover-release
    run.seen["A's silence checked"] = wait_until(lambda: [r for r in flow_runs_of(
        stack, "recover-release", flow_run_id=run["A"].flow_run_id, silent_for=SILENCE_SECONDS)
        if r["state_type"] in ENDED], timeout=120, what="the silence of A checked")
    # The fix: dev's values in the GitOps repository (reviewed there) no longer carry the failure.
    run.config.change(lambda config: config["environments"]["dev"]["values"].update(
        {"podAnnotations": {FAIL_ANNOTATION: "false"}, "progressDeadlineSeconds": 60}), "dev: fix the rollout")
    newer = run["newer"]
    run.run({
        "retry": ("release", "retry", newer.release_id, "--as", OPS, "--env", "dev", "--reason", "dev values fixed"),
        "approve B": ("release", "approve", run["B"].release_id, "--as", APPROVER, "--environment", "staging"),
    })
    for key in ("newer", "B"):
        run.seen[f"{key} ended"] = wait_state(run[key], *ENDED)


def _late_ones(run: Scenario) -> None:
    """Phase 4: the older failed release retried, A approved: both would move an environment backwards."""
    older = run["older"]
    run.run({
        "retry older": ("release", "retry", older.release_id, "--as", OPS, "--env", "dev"),
        "retry elsewhere": ("release", "retry", older.release_id, "--as", OPS, "--env", "staging", "--json"),
        "approve A": ("release", "approve", run["A"].release_id, "--as", APPROVER, "--environment", "staging"),
    })
    run.config.restore()
    run.seen["A ended"] = wait_state(run["A"], *ENDED)
    run.run({"status A": ("release", "status", run["A"].release_id, "--json")})


# --------------------------------------------------------------------------- timeout


def test_an_approval_window_that_closes_with_no_worker_rejects_the_plan_for_timeout(scenario: Scenario):
    stack, late = scenario.stack, scenario["T"]
    assert scenario.seen["T after the kill"] == ("PAUSED", "Suspended"), "every worker died inside the window"
    # Prefect's server failed the expired suspension by itself; nothing of the product ran meanwhile
    assert scenario.seen["T expired"][0] == "FAILED", late.states()
    assert "paused and never resumed" in late.states()[-1].message
    assert scenario.seen["T's plan when its run expired"] is PlanState.PENDING_APPROVAL

    rejected = plan(stack, late, "staging")
    last = transitions(stack, late, "staging")[-1]
    assert (last.from_state, last.to_state, last.actor) == (PlanState.PENDING_APPROVAL, PlanState.REJECTED,
                                                            TIMEOUT_ACTOR)
    assert last.reason.startswith(f"approval timed out after {SHORT_WINDOW_SECONDS} s"), last.reason

    too_late = scenario.said["approve T late"]
    assert too_late.code == 1, str(too_late)
    assert "ApprovalRefused" in too_late.text and LATE_REASON in too_late.text, str(too_late)
    [refused] = stack.ledger.approvals(rejected.plan_id)
    assert (refused.approver, refused.counted, refused.refused_reason) == (APPROVER, False, LATE_REASON)
    assert rejected.approvals == [] and plan_state(stack, late, "staging") is PlanState.REJECTED
    assert late.state()[0] == "FAILED"


# --------------------------------------------------------------------------- retry


def test_retry_promotes_a_failed_environment_again_after_the_fix(scenario: Scenario):
    stack, said, older, newer = scenario.stack, scenario.said, scenario["older"], scenario["newer"]
    for key in ("F1", "F2"):
        assert scenario.seen[f"{key} ended"][0] == "FAILED"
    assert transitions(stack, older, "dev")[-1].reason.startswith("HealthCheckFailed")

    assert said["retry unknown"].code == 1, str(said["retry unknown"])
    assert "NotFound: release rel-never-started: no such release" in said["retry unknown"].text
    assert said["retry elsewhere"].code == 2, str(said["retry elsewhere"])
    assert said["retry elsewhere"].json() == {"type": "InvalidInput", "error": (
        f"release {older.release_id}: no Failed environment in staging to retry (dev Failed)")}
    waiting = scenario["A"]
    assert said["retry nothing failed"].code == 2, str(said["retry nothing failed"])
    assert (f"release {waiting.release_id}: no Failed environment to retry (dev Deployed, staging PendingApproval)"
            in said["retry nothing failed"].text), str(said["retry nothing failed"])

    retried = said["retry"]
    assert retried.code == 0, str(retried)
    assert f"release {newer.release_id}: retrying" in retried.text
    assert scenario.seen["newer ended"][0] == "COMPLETED", newer.states()
    history = transitions(stack, newer, "dev")
    moves = [(t.from_state.value, t.to_state.value, t.actor) for t in history]
    assert moves[-3:] == [("Promoting", "Failed", "system:promotion"), ("Failed", "Promoting", OPS),
                          ("Promoting", "Deployed", "system:promotion")]
    assert history[-2].reason == "retry after fix, asked by user:ops: dev values fixed"
    after = plan(stack, newer, "dev")
    assert (after.state, after.attempt) == (PlanState.DEPLOYED, 2)
    [retry] = actions(stack, newer, "retried")
    assert (retry["actor"], retry["detail"]["environments"]) == (OPS, ["dev"])
    assert retry["detail"]["flow_run_id"] == newer.flow_run_id  # the same run resumed
    types = [s.type for s in newer.states()]
    assert types.count("FAILED") == 1 and types[-1] == "COMPLETED"
    assert outcome(stack, newer).serving["dev"] == {built_image(stack, newer)}

    # the older one cannot be retried over it: dev would move backwards
    backwards = said["retry older"]
    assert backwards.code == 2, str(backwards)
    assert (f"release {older.release_id}: dev is not retried: superseded by {newer.release_id}: dev already runs "
            "its build" in backwards.text), str(backwards)
    assert plan_state(stack, older, "dev") is PlanState.FAILED
    # refusals change nothing: the older one's only operations are its own health gate's rollback
    assert [(a["action"], a["actor"]) for a in operations(stack, older)] == [
        ("rollback-started", "system:promotion"), ("rolled-back", "system:promotion")]
    assert operations(stack, waiting) == []


# --------------------------------------------------------------------------- cancel


def test_cancel_ends_a_waiting_release_and_a_stuck_one(scenario: Scenario):
    stack, said, waiting, stuck = scenario.stack, scenario.said, scenario["C"], scenario["S"]
    assert [said[name].code for name in ("cancel C", "cancel S")] == [0, 0], [str(said["cancel C"]),
                                                                            str(said["cancel S"])]

    # the waiting release: its suspended run Cancelled at once, its waiting plan Rejected by the actor
    assert waiting.state() == ("CANCELLED", "Cancelled")
    last = transitions(stack, waiting, "staging")[-1]
    assert (last.from_state, last.to_state, last.actor) == (PlanState.PENDING_APPROVAL, PlanState.REJECTED, OPS)
    assert last.reason == "cancelled by user:ops: no longer wanted"
    assert plan_state(stack, waiting, "dev") is PlanState.DEPLOYED  # what was done stays done
    [done] = actions(stack, waiting, "cancelled")
    assert (done["actor"], done["reason"]) == (OPS, "cancelled by user:ops: no longer wanted")

    # the stuck release died Running inside the staging promotion; no process would ever answer the
    # cancel: the operation ended the run itself once the run's silence showed its process gone
    assert scenario.seen["S when its worker died"] == (("RUNNING", "Running"), PlanState.PROMOTING)
    history = stuck.states()
    assert [s.type for s in history][-3:] == ["RUNNING", "CANCELLING", "CANCELLED"], history
    assert "no sign of life" in history[-1].message
    last = transitions(stack, stuck, "staging")[-1]
    assert (last.from_state, last.to_state, last.actor) == (PlanState.PROMOTING, PlanState.FAILED, OPS)
    assert last.reason == "cancelled by user:ops: its worker died"
    # the heartbeat automation never took the cancelled run for a crashed one to resubmit
    assert "CRASHED" not in [s.type for s in history] and not stuck.resubmissions()
    # the staging lock it held was taken by B afterwards
    assert plan_state(stack, scenario["B"], "staging") is PlanState.DEPLOYED

    again = said["cancel C again"]
    assert again.code == 2, str(again)
    assert (f"release {waiting.release_id}: nothing to cancel: its run ended and its plans are settled "
            "(dev Deployed, staging Rejected)") in again.text, str(again)
    for release in (waiting, stuck):
        assert [a["actor"] for a in actions(stack, release, "cancelled")] == [OPS]


# --------------------------------------------------------------------------- long waits


def test_an_approval_wait_outlives_the_heartbeat_silence_window_and_then_continues(scenario: Scenario):
    stack, older, newer = scenario.stack, scenario["A"], scenario["B"]
    for key in ("A", "B"):
        assert scenario.seen[f"{key} waited"] >= LONG_WAIT_SECONDS
        assert "CRASHED" not in [s.type for s in scenario[key].states()]
    # A's process beat once more after A suspended: the heartbeat automation, SILENCE_SECONDS later,
    # asked recover-release, which left the wait alone
    [check] = scenario.seen["A's silence checked"]
    assert check["state_type"] == "COMPLETED", check
    logs = run_logs(stack, check["id"])
    assert any(f"release run {older.release_id}: not crashed: it is Suspended" in line for line in logs), logs
    assert scenario.said["approve B"].code == 0, str(scenario.said["approve B"])
    assert scenario.seen["B ended"] == ("COMPLETED", "Completed"), newer.states()
    assert {p.environment: p.state for p in stack.ledger.plans(release_id=newer.release_id)} == {
        "dev": PlanState.DEPLOYED, "staging": PlanState.DEPLOYED}


# --------------------------------------------------------------------------- never backwards


def test_an_older_build_never_replaces_a_newer_one(scenario: Scenario):
    """A (merged before B) is approved once B runs in staging: the built-in policy rejects it."""
    stack, older, newer = scenario.stack, scenario["A"], scenario["B"]
    assert scenario.said["approve A"].code == 0, str(scenario.said["approve A"])
    assert scenario.seen["A ended"][0] == "FAILED", older.states()
    last = transitions(stack, older, "staging")[-1]
    assert (last.to_state, last.actor) == (PlanState.REJECTED, POLICY_ACTOR)
    assert last.reason.startswith(f"superseded by {newer.release_id}: staging already runs its build"), last.reason

    status = scenario.said["status A"]
    assert status.code == 0, str(status)
    assert {p["environment"]: p["state"] for p in status.json()["plans"]} == {"dev": "Deployed",
                                                                              "staging": "Rejected"}
    assert f"superseded by {newer.release_id}" in status_artifact(stack, older)

    def rejected_event() -> dict[str, Any] | None:
        events = release_events(stack, older, EventName.RELEASE_REJECTED)
        return events[-1] if events else None

    event = wait_until(rejected_event, timeout=60, what="A's ReleaseRejected event")
    assert (event["payload"]["environment"], event["payload"]["actor"]) == ("staging", POLICY_ACTOR)
    assert event["payload"]["reason"].startswith(f"superseded by {newer.release_id}")

    image = built_image(stack, newer)
    assert built_image(stack, older) != image
    assert outcome(stack, newer).serving == {"dev": {image}, "staging": {image}, "prod": set()}
