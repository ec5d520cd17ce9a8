"""What tests/faults/test_operations.py needs beyond the fault harness: the CLI as a user runs it,
delivery.yaml changed for a test and put back, and reads of plans, transitions and events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from fault_support import ROOT, FaultStack, Release, api, commits, wait_until

from blocks.gitops_repo import GitOpsRepo
from delivery.events import EventName, event_type
from delivery.ledger import PULL_REQUEST_CHECKS_FAILED, PULL_REQUEST_CHECKS_PASSED, PULL_REQUEST_MERGED
from delivery.plan import PlanState, ReleasePlan, Transition


@dataclass(frozen=True)
class Cli:
    """One finished ``delivery`` command: its exit code and what it printed."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return " ".join(f"{self.out} {self.err}".split())

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"delivery {' '.join(self.args)} -> exit {self.code}: {self.text[-600:]}"


def _env(stack: FaultStack) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": stack.info.api_url, "DELIVERY_LEDGER_URL": stack.info.ledger_url,
            "PREFECT_API_AUTH_STRING": stack.info.auth_string() or "", "COLUMNS": "200"}


@dataclass
class Running:
    """A ``delivery`` command started and not waited for yet."""

    args: tuple[str, ...]
    process: subprocess.Popen[str]

    def result(self, *, timeout: float = 300) -> Cli:
        """Wait for the command to end (each waits for its own operation) and return what it did."""
        out, err = self.process.communicate(timeout=timeout)
        return Cli(self.args, self.process.returncode, out.strip(), err.strip())


def launch(stack: FaultStack, *args: str) -> Running:
    """Start ``python -m cli.main ARGS`` against the stack, as a user with its API and ledger."""
    process = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(stack),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Running(tuple(args), process)


def cli(stack: FaultStack, *args: str, timeout: float = 300) -> Cli:
    """Run one ``delivery`` command against the stack and return what it did."""
    return launch(stack, *args).result(timeout=timeout)


def clis(stack: FaultStack, commands: Sequence[Sequence[str]], *, timeout: float = 300) -> list[Cli]:
    """Run several ``delivery`` commands at once; their results, in order."""
    running = [launch(stack, *args) for args in commands]
    return [command.result(timeout=timeout) for command in running]


class GitOpsConfig:
    """The stack's delivery.yaml, changed by a test (each change a commit) and put back as it was."""

    def __init__(self, stack: FaultStack) -> None:
        self.repo = GitOpsRepo(url=stack.info.gitops_repo)
        self.original = self.repo.read_config()

    def change(self, edit: Callable[[dict[str, Any]], None], message: str) -> None:
        """Commit ``edit(config)`` to delivery.yaml."""
        config = yaml.safe_load(self.repo.read_config())
        edit(config)
        self.repo.write_files({"delivery.yaml": yaml.safe_dump(config, sort_keys=False).encode()}, message=message,
                              trailers=[])

    def restore(self) -> None:
        """Commit delivery.yaml back as it was (when it changed)."""
        if self.repo.read_config() != self.original:
            self.repo.write_files({"delivery.yaml": self.original}, message="test_operations: delivery.yaml restored",
                                  trailers=[])


@contextmanager
def gitops_config(stack: FaultStack) -> Iterator[GitOpsConfig]:
    """Change the stack's delivery.yaml for a while; it is put back on exit."""
    config = GitOpsConfig(stack)
    try:
        yield config
    finally:
        config.restore()


def plan(stack: FaultStack, release: Release, environment: str) -> ReleasePlan | None:
    """The release's latest plan in ``environment``, or None."""
    plans = [p for p in stack.ledger.plans(release_id=release.release_id) if p.environment == environment]
    return max(plans, key=lambda p: p.revision) if plans else None


def plan_state(stack: FaultStack, release: Release, environment: str) -> PlanState | None:
    found = plan(stack, release, environment)
    return found.state if found else None


def wait_plan(stack: FaultStack, release: Release, environment: str, state: PlanState, *,
              timeout: float = 180) -> ReleasePlan:
    """Wait until the release's plan in ``environment`` is in ``state``."""
    def check() -> ReleasePlan | None:
        found = plan(stack, release, environment)
        return found if found is not None and found.state is state else None

    return wait_until(check, timeout=timeout, what=f"{release.release_id}: {environment} {state.value} "
                                                  f"(now {plan_state(stack, release, environment)})")


def transitions(stack: FaultStack, release: Release, environment: str) -> list[Transition]:
    """The release's transitions in ``environment``, oldest first."""
    return [t for t in stack.ledger.transitions(release_id=release.release_id)
            if t.plan_id.endswith(f"/{environment}")]


def actions(stack: FaultStack, release: Release, action: str | None = None) -> list[dict[str, Any]]:
    return stack.ledger.actions(release_id=release.release_id, action=action)


PULL_REQUEST_DECISIONS = (PULL_REQUEST_CHECKS_PASSED, PULL_REQUEST_CHECKS_FAILED, PULL_REQUEST_MERGED)


def operations(stack: FaultStack, release: Release) -> list[dict[str, Any]]:
    """The release's actions but its pull request's checks and merge (stages 3-4 write those)."""
    return [a for a in actions(stack, release) if a["action"] not in PULL_REQUEST_DECISIONS]


def wait_waiting(release: Release, environment: str, *, timeout: float = 240) -> None:
    """Wait, approving nothing, until the release run is suspended waiting for a decision in ``environment``."""
    release.follow(until=lambda state: state[0] == "PAUSED" and environment in release.waiting_in(),
                   approve=False, timeout=timeout)


def wait_state(release: Release, *types: str, timeout: float = 240) -> tuple[str, str]:
    """Wait, approving nothing, until the release run's state type is one of ``types``."""
    return release.follow(until=lambda state: state[0] in types, approve=False, timeout=timeout)


def suspended_without_crash(release: Release, seconds: float, *, timeout: float) -> float:
    """Poll the run until it has been Suspended for ``seconds``; fail at once if it ever became Crashed.

    Returns:
        How long it has been suspended.

    Raises:
        AssertionError: a Crashed state in its history, the run left its wait, or ``timeout``.
    """
    def check() -> float | None:
        history = release.states()
        crashed = [s for s in history if s.type == "CRASHED"]
        assert not crashed, f"{release.release_id}: crashed while waiting: {crashed}"
        last = history[-1]
        assert (last.type, last.name) == ("PAUSED", "Suspended"), f"{release.release_id} left its wait: {last}"
        waited = time.time() - last.at
        return waited if waited >= seconds else None

    return wait_until(check, timeout=timeout, interval=2,
                      what=f"{release.release_id} suspended for {seconds:.0f} s without a crash")


def started_stages(stack: FaultStack, release: Release) -> list[str]:
    """The names of the release run's task runs (its stages, from ``01-create_commit`` on): once there
    is one, the run has read delivery.yaml (the release flow validates against it before any stage)."""
    body = {"flow_runs": {"id": {"any_": [release.flow_run_id]}}, "limit": 200}
    return [run["name"] for run in api(stack.info, "POST", "/task_runs/filter", json=body).json()]


def merged(stack: FaultStack, release: Release) -> bool:
    """Whether the release's pull request is merged into its app's main branch (a merge commit names it)."""
    main = commits(Path(stack.info.git_root) / f"{release.request.app}.git", "refs/heads/main", first_parent=True)
    return any(c.trailer("Release-Id") == release.release_id and len(c.parents) > 1 for c in main)


def late_heartbeat(stack: FaultStack, release: Release) -> float:
    """Send, for the release run, the heartbeat its process may send just after it suspended; return when.

    A flow-run process's heartbeat thread stops only when the process unwinds from its suspension:
    one more beat can follow the Suspended state. This one is sent on purpose, through the events
    API, with the labels the flow engine gives its heartbeats.
    """
    run = api(stack.info, "GET", f"/flow_runs/{release.flow_run_id}").json()
    now = time.time()
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.fromtimestamp(now, UTC).isoformat(),
        "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{release.flow_run_id}",
                     "prefect.resource.name": run["name"]},
        "related": [{"prefect.resource.id": f"prefect.flow.{run['flow_id']}", "prefect.resource.role": "flow",
                     "prefect.resource.name": "release"}],
        "payload": {},
    }
    api(stack.info, "POST", "/events", json=[event]).raise_for_status()
    return now


def flow_runs_of(stack: FaultStack, flow: str, **parameters: Any) -> list[dict[str, Any]]:
    """The runs of ``flow`` whose parameters include ``parameters``, oldest first."""
    body = {"flows": {"name": {"any_": [flow]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    runs = api(stack.info, "POST", "/flow_runs/filter", json=body).json()
    return [r for r in runs if all((r.get("parameters") or {}).get(k) == v for k, v in parameters.items())]


def run_logs(stack: FaultStack, flow_run_id: str) -> list[str]:
    """The log messages of one flow run, oldest first."""
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    return [entry["message"] for entry in api(stack.info, "POST", "/logs/filter", json=body).json()]


def release_events(stack: FaultStack, release: Release, name: EventName) -> list[dict[str, Any]]:
    """The release's ``delivery.<name>`` events, oldest first."""
    body = {"filter": {"event": {"name": [event_type(name)]},
                       "resource": {"id": [f"delivery.release.{release.release_id}"]},
                       "occurred": {"since": "2000-01-01T00:00:00Z"}, "order": "ASC"},
            "limit": 50}
    return list(api(stack.info, "POST", "/events/filter", json=body).json().get("events", []))


def status_artifact(stack: FaultStack, release: Release) -> str:
    """The markdown of the release's status artifact (``release-<id>``), as an agent reads it from the API."""
    from tasks.summary import artifact_key

    return str(api(stack.info, "GET", f"/artifacts/{artifact_key(release.release_id)}/latest").json().get("data")
               or "")


__all__ = ["Cli", "GitOpsConfig", "Running", "actions", "cli", "clis", "flow_runs_of", "gitops_config",
           "late_heartbeat", "launch", "merged", "plan", "plan_state", "release_events", "run_logs", "started_stages",
           "status_artifact", "suspended_without_crash", "transitions", "wait_plan", "wait_state", "wait_waiting"]
