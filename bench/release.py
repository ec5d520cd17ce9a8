"""Release benchmark: where the time of one release of the sample app through dev, staging and prod goes.

Starts its own stack (``delivery up``) in a temporary folder, with ``DELIVERY_PROVIDER_TIMINGS_FILE``
set so the flow run records every provider call (git host, GitOps repo, registry, feed, runtime,
Pulumi, the pipeline's commands: :mod:`delivery.provider_timing`). It drives the release as
``delivery demo`` does (:mod:`cli.demo_full`: started through the API, signed approvals by
people other than the planner), then prints:

- per stage (a task run; stages that ran again from a stored result are left out): its wall time
  from Prefect's task run, the time of its own provider calls, and what else (the difference);
- commit-to-converged per environment: from the end of its first GitOps commit (the ``promote``
  stage's write) to its last ``HealthChecked`` event;
- the ratio of the release's wall time (submitted to finished), approval waits (Suspended) and the
  pick-up of each resumed run (resumed to Running again) excluded and printed apart, to the sum of
  its provider work. Target 1.3: reported, never asserted; above it, the bench prints where the
  rest goes (:mod:`_release_figures`).

Stops everything it started. Run: ``.venv/bin/python bench/release.py`` (about 2 minutes).

Figures (2026-12-03, in ``make bench``, other work running: three runs gave ratios 2.7, 3.8 and 3.8):

machine: 2 cores, 23.5 GiB memory, load 2.3, Python 3.11.7 (CPython), Linux x86_64
stage (task run)                              wall s  provider s  other s
09-planner-signature                            0.09        0.04     0.04
01-create_commit                                0.29        0.28     0.01
02-open_pull_request                            0.03        0.03     0.01
03-check_pull_request                           0.73        0.73     0.00
04-merge_pull_request                           0.21        0.21     0.00
05-generate_pipeline                            0.06        0.04     0.02
06-run_pipeline                                 8.18        8.17     0.00
07-ingest_build_result                          0.03        0.02     0.00
08-plan_release-dev                             0.02        0.00     0.02
09-policy-gates-dev[before approval]            0.01        0.00     0.01
10-render_manifest-dev[render]                  0.06        0.00     0.06
10-plan_phases-dev[phases]                      0.11        0.09     0.02
12-promote-dev[deploy]                          0.10        0.09     0.01
13-sync_environment-dev[deploy]                 0.62        0.61     0.01
13-check_health-dev[deploy]                     1.03        0.03     1.01
(staging and prod alike: promote 0.05 / 0.19, sync 0.51 / 0.38, check_health 1.03 / 1.04, the rest <= 0.05)
(flow code) outside the stages                 22.57        0.58    22.00
commit-to-converged: dev 1.71s, staging 1.59s, prod 1.45s (1 commit, 1 health check each)
release wall 69.8s; excluded: approval waits 2.0s (0.4, 0.3, 1.3), resumed-run pick-up 21.9s (7.0, 6.3, 8.6)
ratio: 46.0s / 12.1s of provider work = 3.79 (target 1.3: missed; reported, not asserted)

Where the 33.8 s beyond the provider work go:

- 22.0 s of flow code outside the stages, with no provider call. The run executes from the top four
  times (its start, then after each resume: staging, and prod once per approver), 5-7 s each.
  The largest stretches: from an execution's start to its first task run (1.4-2.1 s), and from
  ``04-merge_pull_request`` to ``05-generate_pipeline`` (0.9-1.3 s in every execution). What runs
  there (read from flows/release.py and flows/build.py, not timed one by one): the request parsed,
  the git host, pipeline runner, feed, registry and the three runtimes loaded from the API, the
  checks before the first write; then the release's status artifact published and the build's
  blocks loaded. The 35 stages read back from stored results take 0.2 s in all: the time is the flow
  code around them (Prefect API round trips, ledger, events), not the cache look-ups.
- 8.3 s first pick-up: the worker's poll, then a new process importing Prefect and the flows before
  the run is Running (each resumed run pays it again: the 21.9 s excluded).
- 3.0 s waiting for rollouts in ``check_health`` (the simulator's rollout takes 1 s,
  ``delivery up --ready-delay``; the gate polls every 0.5 s); 0.5 s in the other stages outside
  provider calls (planning, rendering, policy gates, Prefect's task run).

Commit-to-converged is the sync (0.4-0.6 s), that rollout second and Prefect's task runs between.
The pipeline is two thirds of the provider work (8.2 of 12.1 s).
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

from cli.client import DeliveryClient  # noqa: E402
from cli.demo_full import PLANNER, demo_approvals, demo_request, follow_release  # noqa: E402
from cli.stack import down, up  # noqa: E402
from cli.stack_info import StackInfo  # noqa: E402
from delivery import provider_timing  # noqa: E402
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
