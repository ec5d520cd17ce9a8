"""Recovery decisions on a real Prefect server: one resubmission per crash however often it is asked,
the sweep that makes up for missed automation events, and the bound past which an incident is raised.

Stand-in release runs (a flow named ``release`` tagged ``release:<id>``) are put in the states a
dead process leaves; the whole path with real workers is in tests/faults.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.states import Crashed, Failed, Pending, Running
from support.runtime import wait_until

import flows.recovery as recovery
from flows.release_runs import last_sign_of_life, latest_beat


@flow(name="release")
def stand_in_release() -> None:
    """Never runs: its runs are only put in states."""


def _release_run(state) -> tuple[str, uuid.UUID]:
    release_id = f"rel-{uuid.uuid4().hex[:10]}"
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(stand_in_release, tags=["delivery", f"release:{release_id}"], state=state)
    return release_id, run.id


def _state(run_id: uuid.UUID):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _crash(run_id: uuid.UUID) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Crashed(message="its process died"), force=True)


def test_a_crash_asked_about_twice_at_once_is_resubmitted_once(prefect_server, ledger) -> None:
    release_id, run_id = _release_run(Crashed(message="its process died"))
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(recovery.recover_release(str(run_id))))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer.split(" (")[0] for answer in answers) == ["nothing to do: the run is AwaitingRetry",
                                                                   "resubmitted"]
    assert _state(run_id).name == "AwaitingRetry"
    resubmitted = ledger.actions(release_id=release_id, action="resubmitted")
    assert [(a["actor"], a["detail"]["flow_run_id"]) for a in resubmitted] == [("system:recovery", str(run_id))]


def test_the_sweep_resubmits_a_crash_nobody_reported_and_gives_up_once_past_the_bound(
        prefect_server, ledger, monkeypatch) -> None:
    monkeypatch.setenv("DELIVERY_RECOVERY_ATTEMPTS", "1")
    release_id, run_id = _release_run(Crashed(message="its process died"))

    first = [line for line in recovery.sweep_releases() if release_id in line]
    assert len(first) == 1 and "resubmitted (1 of 1)" in first[0]
    assert _state(run_id).name == "AwaitingRetry"

    _crash(run_id)  # it crashed again
    second = [line for line in recovery.sweep_releases() if release_id in line]
    assert len(second) == 1 and "gave up after 1 resubmissions: incident" in second[0]
    state = _state(run_id)
    assert state.type.value == "FAILED" and "recovery gave up" in state.message
    [incident] = [i for i in ledger.incidents() if i["release_id"] == release_id]
    assert incident["status"] == "open" and "crashed 2 times" in incident["error"]

    # settled: later sweeps raise nothing more
    assert not [line for line in recovery.sweep_releases() if release_id in line]
    assert len([i for i in ledger.incidents() if i["release_id"] == release_id]) == 1


def test_the_sweep_crashes_a_silent_running_run_and_leaves_alone_one_that_never_beat(
        prefect_server, ledger, monkeypatch) -> None:
    # the server stamps states with its own clock: the silence that counts is shortened instead
    monkeypatch.setattr(recovery, "GONE_AFTER_SECONDS", 3)
    silent_release, silent_run = _release_run(Running())
    _, beatless_run = _release_run(Running())
    emit_event("prefect.flow-run.heartbeat", resource={"prefect.resource.id": f"prefect.flow-run.{silent_run}"},
               occurred=datetime.now(UTC) - timedelta(minutes=4))
    with get_client(sync_client=True) as client:
        wait_until(lambda: latest_beat(client, client.read_flow_run(silent_run)) is not None,
                   timeout=60, what="the heartbeat stored")
        wait_until(lambda: datetime.now(UTC) - last_sign_of_life(client, client.read_flow_run(silent_run))
                   > timedelta(seconds=4), timeout=60, what="the run silent for longer than it may be")

    lines = recovery.sweep_releases()

    mine = [line for line in lines if silent_release in line]
    assert len(mine) == 1 and "resubmitted (1 of 3)" in mine[0]
    assert _state(silent_run).name == "AwaitingRetry"
    crash = [s for s in _states(silent_run) if s.type.value == "CRASHED"]
    assert len(crash) == 1 and "no heartbeat for" in crash[0].message
    assert _state(beatless_run).type.value == "RUNNING"  # a worker without heartbeats: silence proves nothing


RUNNER_EXIT = "Process exited with status code: -9. Process exited due to a SIGKILL signal."
WORKER_EXIT = "Flow run infrastructure exited with non-zero status code -9. Process exited due to a SIGKILL signal."


def _set(run_id: uuid.UUID, state) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, state, force=True)


def test_the_workers_late_report_of_an_exit_already_recovered_starts_no_second_process(
        prefect_server, ledger, monkeypatch) -> None:
    # the runner reports the kill; recovery resubmits; the worker's report of the same exit lands on the resubmission
    release_id, run_id = _release_run(Crashed(message=RUNNER_EXIT))
    assert recovery.recover_release(str(run_id)).startswith("resubmitted (1 of 3)")
    _set(run_id, Crashed(message=WORKER_EXIT))
    assert recovery.recover_release(str(run_id)) == "restored the resubmission a late exit report overwrote"
    assert _state(run_id).name == "AwaitingRetry"

    # the same, landing on the new process's start: that process moves the run on, nothing is resubmitted
    _set(run_id, Running())
    _set(run_id, Crashed(message=RUNNER_EXIT))
    assert recovery.recover_release(str(run_id)).startswith("resubmitted (2 of 3)")
    _set(run_id, Pending())
    _set(run_id, Crashed(message=WORKER_EXIT))
    assert recovery.recover_release(str(run_id)).startswith("left alone: a late report of an exit already recovered")
    assert _state(run_id).type.value == "CRASHED"
    assert len(ledger.actions(release_id=release_id, action="resubmitted")) == 2

    # ... unless no process ever moved it on: then it is a crash like any other
    monkeypatch.setattr(recovery, "GONE_AFTER_SECONDS", 0)
    assert recovery.recover_release(str(run_id)).startswith("resubmitted (3 of 3)")


def test_the_sweep_ignores_runs_that_ended_normally(prefect_server, ledger) -> None:
    release_id, run_id = _release_run(Failed(message="prod: Failed: HealthCheckFailed"))
    assert not [line for line in recovery.sweep_releases() if release_id in line]
    assert _state(run_id).type.value == "FAILED"


def _states(run_id: uuid.UUID):
    with get_client(sync_client=True) as client:
        return client.read_flow_run_states(run_id)


@pytest.fixture(autouse=True)
def _no_status_artifacts(monkeypatch) -> None:
    """The stand-in releases have no plans: their status artifact would be an empty table."""
    monkeypatch.setattr(recovery, "publish_status", lambda release_id, ledger=None: None)
