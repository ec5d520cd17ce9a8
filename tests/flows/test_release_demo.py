"""``delivery demo`` as a user runs it: the local stack, one release of the sample app through the API, stopped after.

It starts its own Prefect server, simulator, registry and worker (not the test session's server),
so it is the slowest test here (about 80 s on two cores); it is the one that proves the command the
README gives works from a fresh state folder and leaves nothing running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from delivery.ledger import Ledger
from delivery.plan import PlanState

STACK_PROCESSES = {"prefect-server", "simulator", "registry", "worker"}


def running(pid: str) -> bool:
    """Alive and not a zombie waiting for its reaper (a zombie's command line is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def wait_until_gone(processes: dict[str, str], timeout: float = 15.0) -> list[str]:
    """The names of the processes still running after ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while (alive := [name for name, pid in processes.items() if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_the_demo_releases_the_sample_app_to_prod_and_stops_everything_it_started(tmp_path: Path) -> None:
    home = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_API", "DELIVERY_"))}
    env.update({"DELIVERY_HOME": str(home), "CI": "true", "COLUMNS": "200"})
    try:
        done = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--stop", "--timeout", "600"],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=840)
    finally:
        if (home / "stack.json").exists():  # the demo did not get to stop its stack: stop what it recorded
            from cli.stack import down

            down(home=home, say=lambda _line: None)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    assert "release run:   Completed" in output
    for environment in ("dev", "staging", "prod"):
        assert re.search(rf"│ {environment}\s+│ 1\s+│ Deployed", output), output[-3000:]
    assert "user:alice approves staging (signed): counted" in output
    assert "user:bob approves prod (signed): counted" in output
    # the planner's own approval is refused at once, the field and the refused value named
    assert re.search(r"agent:release-manager approves staging: refused: staging: REJECT: .*Validation failed for "
                     r"field 'approver'.*'agent:release-manager' is not one of", output), output[-3000:]

    # The stack's own ledger holds the release, approved by people other than the planner.
    plans = {p.environment: p for p in Ledger(f"sqlite:///{home / 'ledger.db'}").plans()}
    assert {env: p.state for env, p in plans.items()} == dict.fromkeys(("dev", "staging", "prod"), PlanState.DEPLOYED)
    assert sorted(a.approver for a in plans["prod"].approvals) == ["user:alice", "user:bob"]
    assert all(a.key_fingerprint and a.signature_digest for a in plans["prod"].approvals)  # signed, verified
    assert all(p.planned_by == "agent:release-manager" for p in plans.values())

    # Everything it started is stopped, and only that.
    stopped = dict(re.findall(r"stopped (\S+) \(pid (\d+)\)", output))
    assert set(stopped) == STACK_PROCESSES, output[-2000:]
    assert wait_until_gone(stopped) == []
    assert not (home / "stack.json").exists()
