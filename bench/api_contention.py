"""API contention benchmark: what a person's submit meets on the embedded default while releases run.

The embedded default keeps Prefect's state in SQLite. A person's submit from the Custom run form is
one ``POST /deployments/{id}/create_flow_run`` from the browser, which does not retry: a 503 there
is the form's "Unknown error while creating flow run". This starts its own stack (``delivery up``),
opens ``LANES`` lanes (each an app, work queue and worker, as the fault-injection suite does),
starts a release in each, and while they run submits a release every ``PROBE_INTERVAL`` seconds the
way the browser does: once, no retry (scheduled far ahead, so no worker takes it; deleted after).

Prints the probes' status codes and latencies (median, 95th percentile, max), the "database is
locked" errors of the server's log, and how the releases ended. Stops everything it started.
Run: ``.venv/bin/python bench/api_contention.py [lanes] [seconds]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from _machine import print_machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault-injection harness of the test suite

from fault_support import SETTLED, FaultStack, release_request  # noqa: E402

LANES = 4
PROBE_INTERVAL = 0.5
FAR_AHEAD = "2099-01-01T00:00:00Z"


def probe(client: httpx.Client, deployment: str) -> tuple[int, float, str | None]:
    """One submit as the browser makes it; return (status, seconds, the run's id when created)."""
    request = release_request(target="dev").model_dump(mode="json")
    body = {"parameters": {"request": request}, "name": request["release_id"],
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": FAR_AHEAD}}}
    began = time.monotonic()
    try:
        response = client.post(f"/deployments/{deployment}/create_flow_run", json=body)
    except httpx.TimeoutException:
        return 0, time.monotonic() - began, None
    created = response.json()["id"] if response.status_code == 201 else None
    return response.status_code, time.monotonic() - began, created


def main() -> None:
    lanes = int(sys.argv[1]) if len(sys.argv) > 1 else LANES
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    print_machine()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for key in [k for k in os.environ if k.startswith(("PREFECT_API", "DELIVERY_"))]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp:
        with FaultStack.running(Path(tmp) / "state") as stack:
            opened = stack.lanes({f"load{i}": None for i in range(lanes)})
            with stack.client() as client:
                deployment = client.deployment_id()
            releases = [lane.start() for lane in opened.values()]
            print(f"{lanes} releases running (full promotion path, approved as they wait); probing every "
                  f"{PROBE_INTERVAL}s", flush=True)
            results, created = [], []
            began = time.monotonic()
            with httpx.Client(base_url=stack.info.api_url, headers=stack.info.auth_headers(), timeout=120) as http:
                while True:
                    states = [r.state()[0] for r in releases]
                    for release, state in zip(releases, states, strict=True):
                        if state == "PAUSED":
                            release.approve_waiting()
                    if all(s in SETTLED for s in states) or (seconds and time.monotonic() - began > seconds):
                        break
                    status, took, run = probe(http, deployment)
                    results.append((status, took))
                    created += [run] if run else []
                    time.sleep(PROBE_INTERVAL)
                for run in created:
                    http.delete(f"/flow_runs/{run}")
            codes = Counter(status for status, _ in results)
            took = sorted(t for _, t in results)
            locked = sum(log.read_text(errors="replace").count("database is locked")
                         for log in (stack.home / "logs").glob("prefect-server*.log"))
            print(f"probes: {len(results)} in {time.monotonic() - began:.0f}s; status codes "
                  f"{dict(sorted(codes.items()))} (0: no answer within 120 s)")
            if took:
                p95 = took[min(len(took) - 1, int(len(took) * 0.95))]
                print(f"latency: median {statistics.median(took):.2f}s, p95 {p95:.2f}s, max {took[-1]:.2f}s")
            print(f"server log: {locked} 'database is locked'")
            print("releases: " + ", ".join(f"{r.release_id} {r.state()[1]}" for r in releases))


if __name__ == "__main__":
    main()
