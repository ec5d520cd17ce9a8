"""Release benchmark: where the time of one release of the sample app through dev, staging and prod goes.

Starts its own stack (``delivery up``) in a temporary folder, with ``DELIVERY_PROVIDER_TIMINGS_FILE``
set so the flow run records every provider call (git host, GitOps repo, registry, feed, runtime,
Pulumi, the pipeline's commands: :mod:`delivery.provider_timing`). It drives the release as
``delivery demo`` does (:mod:`delivery.cli.demo_full`: started through the API, signed approvals by
people other than the planner), then prints:

- per stage (a task run; stages that ran again from a stored result are left out): its wall time
  from Prefect's task run, the time of its own provider calls, and what else (the difference);
- commit-to-converged per environment: from the end of its first GitOps commit (the ``promote``
  stage's write) to its last ``HealthChecked`` event;
- the ratio of the release's wall time (submitted to finished), approval waits (Suspended) and the
  pick-up of each resumed run (resumed to Running again) excluded and printed apart, to the sum of
  its provider work. Target 1.3: reported, never asserted; above it, :mod:`_release_figures` says
  where the rest goes.

Stops everything it started. Run: ``.venv/bin/python bench/release.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _machine import print_machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _release_figures import Figures, print_figures  # noqa: E402

from delivery import provider_timing  # noqa: E402
from delivery.cli.client import DeliveryClient  # noqa: E402
from delivery.cli.demo_full import PLANNER, demo_approvals, demo_request, follow_release  # noqa: E402
from delivery.cli.stack import StackInfo, down, up  # noqa: E402
from delivery.signing import key_file_name  # noqa: E402

# How long to wait for the last HealthChecked events to be stored after the run ended.
EVENTS_SECONDS = 30.0


def prepare(tmp: Path) -> Path:
    """This process's environment for the stack it starts (its worker and flow runs inherit it)."""
    # The pipeline's steps run `python`: this interpreter's, as `make test` and `make demo` arrange.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for key in [k for k in os.environ if k.startswith(("PREFECT_API", "DELIVERY_"))]:
        del os.environ[key]
    # This checkout's code in the stack's processes too (the package may be installed from another).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    timings = tmp / "provider-timings.jsonl"
    os.environ[provider_timing.SETTING] = str(timings)
    return timings


def release(info: StackInfo, began: float) -> tuple[str, str]:
    """Release the sample app as the demo does; return its flow run id and trace id once the run ended."""
    config, approvals = demo_approvals(info)
    keys = Path(info.home) / "keys"
    with DeliveryClient(info.api_url, auth_string=info.auth_string()) as client:
        started = client.start_release(demo_request(), key=keys / key_file_name(PLANNER))
        print(f"release {started.release_id} along {' -> '.join(config.path)}", flush=True)
        run = follow_release(client, started, approvals=approvals, keys=keys, timeout=600, ledger_url=info.ledger_url,
                             on_change=lambda line: print(f"  {time.monotonic() - began:6.1f}s {line}", flush=True))
    if run.get("state", {}).get("type") != "COMPLETED":
        raise SystemExit(f"the release ended {run.get('state_name')}: no figures")
    return started.flow_run_id, started.trace_id


def collect(info: StackInfo, flow_run_id: str, trace_id: str, timings: Path) -> Figures:
    """Read the run's states and task runs and the trace's events from the API, and the provider calls."""
    with httpx.Client(base_url=info.api_url, headers=info.auth_headers(), timeout=60) as http:
        states = http.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).raise_for_status().json()
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
        task_runs = http.post("/task_runs/filter", json=body).raise_for_status().json()
    calls = [row for row in provider_timing.read_timings(timings) if row["flow_run"] == flow_run_id]
    promoted = {row["environment"] for row in calls if row["stage"] == "promote"}
    with DeliveryClient(info.api_url, auth_string=info.auth_string()) as client:
        deadline = time.monotonic() + EVENTS_SECONDS
        while True:  # the server stores events a moment after they are emitted
            events = client.trace_events(trace_id)
            checked = {e.environment for e in events if e.event.endswith("HealthChecked")}
            if promoted <= checked or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    return Figures.of(states=states, task_runs=task_runs, events=events, calls=calls)


def main() -> None:
    print_machine()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        timings = prepare(Path(tmp))
        home = Path(tmp) / "state"
        try:
            info = up(home=home, say=lambda _line: None)
            print(f"stack up: {time.monotonic() - began:.1f}s", flush=True)
            flow_run_id, trace_id = release(info, began)
            figures = collect(info, flow_run_id, trace_id, timings)
        finally:
            down(home=home, say=lambda _line: None)
    print_figures(figures)
    print(f"bench: {time.monotonic() - began:.0f}s in all (stack start and stop included)")


if __name__ == "__main__":
    main()
