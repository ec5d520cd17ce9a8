"""Recovery benchmark: a release killed mid-way is noticed, resubmitted and finished, with nothing done twice.

Starts its own stack (``delivery up``) in a temporary folder, releases the sample app to dev through
the API, and kills the release's flow-run process with a failpoint after stage 7
(``ingest_build_result``: the build is done, its result not yet persisted), in two ways:

- process death: only the flow-run process dies; its worker sees it exit and marks the run Crashed;
- heartbeat: the worker dies with it (``:worker``) and a new worker is started; only the heartbeat
  automation (``delivery-release-heartbeat``) can tell the run died.

Prints, per case, seconds from the kill until the run is Crashed, until it runs again (the
product's recovery resubmitted it), until the release ends, and the duplicate count (writes done
twice: commits, pull requests, merges, pipeline runs, publishes, GitOps commits, ledger
transitions). Stops everything it started. Run: ``.venv/bin/python bench/recovery.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault-injection harness of the test suite

from fault_support import FaultStack, Release, release_request  # noqa: E402

STAGE = "ingest_build_result"


def measure(stack: FaultStack, failpoint: str) -> dict[str, float | int | str]:
    """Release to dev with ``failpoint`` armed; return the timings from the kill and the duplicate count."""
    stack.arm(failpoint)
    release = stack.start(release_request(target="dev"))
    deadline = time.monotonic() + 600
    while failpoint in stack.armed():
        if time.monotonic() > deadline:
            raise SystemExit(f"{failpoint} never fired")
        time.sleep(0.2)
    killed = stack.failpoints.stat().st_mtime  # rewritten just before the kill
    if failpoint.endswith(":worker"):
        while stack.workers():  # the worker died with the run: start its replacement
            time.sleep(0.2)
        stack.start_worker()
    final = release.follow(timeout=600)
    return {"state": final[1], **timings(release, killed), "duplicates": release.footprint().duplicate_count,
            "resubmissions": len(release.resubmissions())}


def timings(release: Release, killed: float) -> dict[str, float]:
    """Seconds from the kill to Crashed, to Running again, and to the end, from the run's state history."""
    states = [s for s in release.states() if s.at >= killed - 1]
    crashed = next(s.at for s in states if s.type == "CRASHED")
    running = next(s.at for s in states if s.type == "RUNNING" and s.at > crashed)
    return {"crashed": crashed - killed, "running": running - killed, "finished": states[-1].at - killed}


def main() -> None:
    print_machine()
    # The pipeline's steps run `python`: this interpreter's, as `make test` and `make demo` arrange.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for key in [k for k in os.environ if k.startswith(("PREFECT_API", "DELIVERY_"))]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        began = time.monotonic()
        with FaultStack.running(Path(tmp) / "state") as stack:
            print(f"stack up: {time.monotonic() - began:.1f}s; killing the release after stage {STAGE}")
            print(f"{'case':<15} {'detected':>9} {'runs again':>11} {'finished':>9} {'duplicates':>11}  state")
            for case, failpoint in (("process death", STAGE), ("heartbeat", f"{STAGE}:worker")):
                result = measure(stack, failpoint)
                print(f"{case:<15} {result['crashed']:8.1f}s {result['running']:10.1f}s {result['finished']:8.1f}s "
                      f"{result['duplicates']:>11}  {result['state']} ({result['resubmissions']} resubmission)",
                      flush=True)
        print(f"everything stopped ({time.monotonic() - began:.0f}s in all)")


if __name__ == "__main__":
    main()
