"""A release survives SIGKILL of its flow-run process in every stage, and of its worker, with no duplicate.

Six lanes of releases run at once on the session's stack (fault_support.Lane: each with its
own copy of the sample app, work queue, worker and failpoints file), so that the suite stays within
its time budget and a worker one lane kills serves nothing of another. A failpoint
(delivery/failpoints.py) SIGKILLs the flow-run process after its stage's outside effect and before
Prefect persists the result; the worker sees the process die and marks the run Crashed, or, with
``:worker``, the worker dies too and only the heartbeat automation can tell. Either way the
product's recovery resubmits the run (recover-release, audited as ``system:recovery``), the
persisted stages come back Cached, and the next armed failpoint fires.

Every test then compares its release with what an uninterrupted release ends as (run Completed,
every environment up to its target Deployed and serving the built image by digest, or, for the failing release,
rolled back) and counts every outside write: one branch commit, pull request, merge, pipeline run,
package and image publish, one GitOps commit per phase and one ledger transition per real change.

Not here: stage 11 (``provision_infrastructure``) needs a Pulumi stack, which flow runs of the
deployed stack can only reach through the Pulumi CLI and a cloud account; the recording backend of
tests/tasks/test_infrastructure_promotion.py replaces the CLI inside one process only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from fault_support import (
    FaultStack,
    Lane,
    Outcome,
    Release,
    built_image,
    delivered,
    holds,
    reached,
    uninterrupted_transitions,
    wait_until,
)

from cli.automations import SILENCE_SECONDS
from flows.recovery import WORKER_EXIT_REPORT

# Six lanes share two cores and a SQLite-backed server: the module may take longer than one test usually does.
pytestmark = pytest.mark.timeout(1800)

# Stages 1-7, in two lanes so that no lane waits for seven recoveries in a row.
GIT_STAGES = ("create_commit", "open_pull_request", "check_pull_request", "merge_pull_request")
PIPELINE_STAGES = ("generate_pipeline", "run_pipeline", "ingest_build_result")
# Crash detection by heartbeats must take less than this after the kill.
DETECTION_LIMIT = 120
# Longer than the heartbeat trigger's window after the last beat before a suspension (and its evaluation).
WAIT_SECONDS = SILENCE_SECONDS + 15
RECOVERY = "system:recovery"


# --------------------------------------------------------------------------- the lanes


def git_stages(lane: Lane) -> Release:
    """Stages 1-4 killed one after another, each recovered before the next fires (a release to dev)."""
    lane.arm(*GIT_STAGES)
    release = lane.start(target="dev")
    release.follow()
    return release


def plan_and_approval(lane: Lane) -> Release:
    """The worker dies with the run in stage 2 (heartbeat detection); then stages 8 and 9 are killed in dev
    (a release to dev)."""
    lane.arm("open_pull_request:worker", "plan_release", "request_approval")
    release = lane.start(target="dev")
    lane.mark("killed", lane.wait_fired("open_pull_request:worker"))
    lane.start_worker()
    release.follow()
    return release


def approval_wait(lane: Lane) -> Release:
    """The worker is killed while the run waits for staging, longer than the heartbeat window, and replaced;
    staging is approved and the run dies with its worker right after the decision is written (heartbeats)."""
    release = lane.start()
    release.wait_waiting("staging")
    lane.kill_workers()
    holds(release.state, ("PAUSED", "Suspended"), seconds=WAIT_SECONDS, what="the suspended release with no worker")
    lane.start_worker()
    lane.arm("request_approval:worker")
    release.approve_waiting()
    lane.mark("killed", lane.wait_fired("request_approval:worker"))
    lane.start_worker()
    release.follow()
    return release


def promotion_stages(lane: Lane) -> Release:
    """Stages 10 and 12 killed in dev, 13 (sync) in staging and 13 (health) in prod, each under the lock."""
    lane.arm("render_manifest", "promote")
    release = lane.start()
    release.wait_waiting("staging")
    lane.arm("sync_environment")
    release.wait_waiting("prod")
    lane.arm("check_health")
    release.follow()
    return release


def rollback(lane: Lane) -> tuple[Release, Release]:
    """A first release to dev killed in stages 5-7, then one failing its health gate there, killed in stage 14."""
    lane.arm(*PIPELINE_STAGES)
    first = lane.start(target="dev")
    first.follow()
    lane.arm("roll_back")
    failing = lane.start(failing=True)
    failing.follow()
    return first, failing


def restarts(lane: Lane) -> Release:
    """The Prefect server restarted mid-build; the run that lived through it is killed in stage 9 (dev) and
    recovered, and its approval wait outlives the heartbeat window."""
    release = lane.start()
    wait_until(lambda: release.footprint().branch_commits, timeout=300, what="the release branch committed")
    lane.stack.restart_server()
    lane.mark("server restarted")
    lane.arm("request_approval")
    killed = lane.mark("killed", lane.wait_fired("request_approval"))
    wait_until(lambda: release.running_again_after(killed), timeout=DETECTION_LIMIT, interval=2,
               what="the run killed after the server restart running again")
    release.wait_waiting("staging")
    holds(release.state, ("PAUSED", "Suspended"), seconds=WAIT_SECONDS,
          what="the suspended release after a server restart")
    release.follow()
    return release


LANES: dict[str, Callable[[Lane], object]] = {
    "restarts": restarts, "build": git_stages, "plan": plan_and_approval, "approval": approval_wait,
    "promotion": promotion_stages, "rollback": rollback,
}


@pytest.fixture(scope="module")
def lanes(fault_stack: FaultStack) -> Iterator[dict[str, tuple[Lane, Future]]]:
    """Every lane at once (the build lane on the stack's own sample-app); the tests wait for theirs.

    The server restart comes first and the other lanes start after it, so that only the restart
    lane's run lives across it.
    """
    opened = fault_stack.lanes({name: "sample-app" if name == "build" else None for name in LANES})
    with ThreadPoolExecutor(max_workers=len(LANES)) as pool:
        started = {"restarts": pool.submit(restarts, opened["restarts"])}
        wait_until(lambda: "server restarted" in opened["restarts"].marks or started["restarts"].done(),
                   timeout=300, what="the server restarted")
        started.update({name: pool.submit(LANES[name], lane) for name, lane in opened.items() if name not in started})
        yield {name: (lane, started[name]) for name, lane in opened.items()}
    for lane in opened.values():
        assert lane.armed() == [], f"lane {lane.name}: failpoints that never fired: {lane.armed()}"


def finished(lanes: dict[str, tuple[Lane, Future]], name: str) -> tuple[Lane, object]:
    """The lane's result; when it failed, the failure with what the lane did and its runs went through."""
    lane, future = lanes[name]
    try:
        return lane, future.result(timeout=1500)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{lane.report()}") from exc


# --------------------------------------------------------------------------- checks


def assert_like_uninterrupted(stack: FaultStack, release: Release) -> None:
    """Ended as an uninterrupted release would, with each outside write done once."""
    assert release.outcome() == delivered(stack, release)
    written = release.footprint()
    assert written.duplicates() == {}
    assert written.built_once(), written
    environments = reached(stack, release)
    assert written.transitions == uninterrupted_transitions(release.release_id, environments)
    assert {key.split("/")[0] for key in written.gitops_commits} == set(environments)


def crashes(release: Release) -> list[tuple[float, str]]:
    return [(state.at, state.message) for state in release.states() if state.type == "CRASHED"]


def deaths(release: Release) -> list[tuple[float, str]]:
    """The crashes, less the worker's second report of an exit already reported (flows/recovery.py restores
    the resubmission such a late report overwrites): one entry per process that died."""
    return [(at, message) for at, message in crashes(release) if not message.startswith(WORKER_EXIT_REPORT)]


def assert_detected_by_heartbeat(lane: Lane, release: Release) -> None:
    """The first crash after the kill came from the heartbeat automation, within the limit."""
    after = [(at, message) for at, message in crashes(release) if at >= lane.marks["killed"] - 1]
    assert after, "the run was never marked Crashed"
    at, message = after[0]
    assert "heartbeat" in message, message
    assert at - lane.marks["killed"] < DETECTION_LIMIT


def resubmitted_by_recovery(release: Release) -> list[str]:
    """Who resubmitted the run after each of our kills (SIGKILL reported by the runner or the worker, or silence).

    One kill is reported twice (by the run's runner, then by its worker): it must be resubmitted
    once. Other crashes (a worker that could not submit the run to its process under load) are
    recovered too, and are not counted here.
    """
    return [action["actor"] for action in release.resubmissions()
            if "code: -9" in action["reason"] or "code -9" in action["reason"] or "heartbeat" in action["reason"]]


# --------------------------------------------------------------------------- tests


def test_a_kill_in_each_git_stage_is_resubmitted_and_nothing_is_committed_twice(fault_stack, lanes):
    _, release = finished(lanes, "build")
    assert resubmitted_by_recovery(release) == [RECOVERY] * len(GIT_STAGES)
    assert_like_uninterrupted(fault_stack, release)


def test_a_dead_worker_is_noticed_by_heartbeats_then_kills_in_plan_and_approval_are_recovered(fault_stack, lanes):
    lane, release = finished(lanes, "plan")
    assert_detected_by_heartbeat(lane, release)
    assert resubmitted_by_recovery(release) == [RECOVERY] * 3
    assert_like_uninterrupted(fault_stack, release)


def test_an_approval_wait_outlives_its_worker_and_a_run_dying_after_the_decision_keeps_it(fault_stack, lanes):
    lane, release = finished(lanes, "approval")
    assert_detected_by_heartbeat(lane, release)
    assert resubmitted_by_recovery(release) == [RECOVERY]
    assert_like_uninterrupted(fault_stack, release)
    approvals = fault_stack.ledger.approvals(f"{release.release_id}/r1/staging")
    assert [(a.approver, a.counted) for a in approvals] == [("user:alice", True)]


def test_kills_under_the_environment_lock_are_recovered_without_a_second_commit(fault_stack, lanes):
    _, release = finished(lanes, "promotion")
    assert resubmitted_by_recovery(release) == [RECOVERY] * 4
    assert_like_uninterrupted(fault_stack, release)


def test_kills_in_the_pipeline_stages_then_in_the_rollback_end_as_uninterrupted_releases(fault_stack, lanes):
    lane, (first, failing) = finished(lanes, "rollback")
    dev = list(fault_stack.namespaces())[0]
    # The first release, killed in stages 5-7: built once, deployed to dev.
    assert resubmitted_by_recovery(first) == [RECOVERY] * len(PIPELINE_STAGES)
    written = first.footprint()
    assert written.duplicates() == {} and written.built_once(), written
    assert written.transitions == uninterrupted_transitions(first.release_id, [dev])
    # The failing one, killed in roll_back: as without the kill, the run failed on the health gate,
    # dev is back on the first release, nothing else moved.
    assert resubmitted_by_recovery(failing) == [RECOVERY]
    assert failing.outcome() == Outcome(
        run_state="Failed", plans={dev: "Failed"},
        serving={env: {built_image(fault_stack, first)} if env == dev else set() for env in fault_stack.namespaces()},
    ), lane.report()
    written = failing.footprint()
    assert written.duplicates() == {} and written.built_once(), written
    assert written.gitops_commits == {f"{dev}/deploy": 1, f"{dev}/rollback": 1}
    steps = uninterrupted_transitions(failing.release_id, [dev])
    steps[f"{failing.release_id}/r1/{dev}: Promoting -> Failed"] = steps.pop(f"{failing.release_id}/r1/{dev}: "
                                                                             "Promoting -> Deployed")
    assert written.transitions == steps


def test_a_run_living_through_a_server_restart_is_recovered_and_keeps_its_approval_wait(fault_stack, lanes):
    lane, release = finished(lanes, "restarts")
    assert [at >= lane.marks["killed"] - 1 for at, _ in deaths(release)] == [True]
    assert resubmitted_by_recovery(release) == [RECOVERY]
    assert_like_uninterrupted(fault_stack, release)
