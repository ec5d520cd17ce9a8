"""Concurrency benchmark: N releases of N different applications at once, on two configurations side by side.

(a) PostgreSQL with 3 workers (``up(database="postgresql", workers=3)``) and (b) SQLite with 1 worker
(the embedded default). Each configuration gets a stack of its own (``delivery up`` in a fresh
temporary state folder, stopped at the end even on failure). In each, ``--releases`` N (default 20)
applications are seeded on the stack's git host: the sample app renamed (``bench-app-00`` ...; the
fault-injection harness's :func:`fault_support.seed_app`: repository files, build settings, package,
image and pipeline under the new name). The GitOps repository's delivery.yaml needs nothing per
application (environments are shared; manifests land in ``environments/<env>/<app>/``). N releases,
one per application, up to staging (``target_environment``), are started at once through the API
(:meth:`cli.client.DeliveryClient.start_release`, signed by the planner); whatever waits for a
decision is approved through the API as the demo does (:meth:`~cli.client.DeliveryClient.approve`,
signed by ``user:alice``, never the planner). The bench polls the release runs' states with a health
check and one ``/flow_runs/filter`` call every ``POLL_SECONDS``.

Printed per configuration:

- wall time: the first submit to the last release run's end; releases per minute (N / wall);
- per release: submit to end, the first pick-up (submitted to Running) and each resumed run's pick-up
  (the approval accepted, Suspended, to Running again), from the runs' state histories;
- per stage p50 / p95: from Prefect's task runs (start to end of each Completed task run; those read
  back from a stored result, state Cached, left out), named as the flow names them (stage number,
  stage, environment);
- per environment p50 / p95 from the ledger's transitions (their ``at``): approval wait
  (PendingApproval -> Approved), the wait for the environment's lock (Approved -> Promoting: the
  ``delivery-env-<env>`` limit admits one promotion per environment at a time, across applications),
  and the deployment under the lock (Promoting -> Deployed);
- peak RSS: /proc/<pid>/status VmRSS summed over each process tree, sampled every
  ``SAMPLE_SECONDS``, the peak of the sum kept: the Prefect server's tree; the workers' trees, with
  the flow-run processes they spawn and what those run (the pipeline's pytest, git); the other stack
  processes (simulator, registry, a database server when there is one). A sum of RSS counts shared
  pages (libraries, copy-on-write) once per process: an upper bound of the memory used;
- lost work, which must be 0: releases whose plans are not Deployed in every environment of their
  path (the ledger), GitOps commits missing or present more than once per (app, environment, phase)
  (``git log`` of the bare GitOps repository, by the commits' Release-Id / Environment /
  Delivery-Phase trailers: :func:`fault_support.footprint`; a GitOps commit counts missing only for a
  plan Deployed), and 5xx answers, or no answer, surfaced to a caller (this bench's client calls that
  raised after the client's retries). Shown beside it, not counted: the runs the product's recovery
  marked Crashed and resubmitted (the ledger's actions), the 5xx the client retried (by a counting
  transport), the 503s (retryable database errors), other 5xx and "database is locked" lines of the
  server's log, the retried 5xx that the flow runs' Prefect client logged (the workers' logs), other
  writes done twice (branch commits, merges, pipeline runs, publishes, transitions), and the peak
  number of connections open to the API (/proc/net/tcp, sampled with the RSS).

The bench stops waiting when the server gives no health answer for ``STALL_SECONDS`` (what it could not
follow to the end counts as lost; the stack's logs are then kept in a temporary folder it names).
Exits 1 when the lost work of a configuration that ran is above 0.
Run:
``.venv/bin/python bench/concurrency.py [--releases N] [--only sqlite|postgresql]``.

Figures (2026-12-04, 2 cores, 20 releases to staging):

- PostgreSQL + 3 workers: wall 267 s, 4.5 releases/min, release p50/p95 229/263 s, first pick-up 49/53 s,
  resumed-run pick-up 21/27 s, run_pipeline 18.9/21.7 s, every other stage p95 <= 1.8 s; dev lock wait
  28/87 s; lost work 0, no 5xx; RSS server 308 MiB, workers and flow runs 5509 MiB (44 processes);
  193 API connections at the peak; 289 s with the stack's start and stop.
- SQLite + 1 worker: wall 250 s, 4.8 releases/min, release p50/p95 220/246 s, first pick-up 47/57 s,
  resumed-run pick-up 31/36 s; dev lock wait 27/83 s; lost work 0, no 5xx to a caller, no run
  resubmitted; RSS server 350 MiB, worker and flow runs 5016 MiB (43 processes); 154 connections;
  268 s in all. Two earlier findings of this bench are fixed in the product: the SQLite server's request
  limit of 100 held by websockets (it stopped answering at about 20 releases: cli/prefect_server.py),
  and live runs judged gone after one missed heartbeat under load (12 resubmitted beside their own
  process, 2 releases lost: flows/release_runs.GONE_AFTER_SECONDS).
- On two cores both configurations are CPU-bound (20 flow-run processes importing Prefect; the
  pipelines' tests): PostgreSQL's gain here is no lock contention and faster resumes, not throughput.
  Where a release's time goes: first pick-up (processes starting), run_pipeline (CPU shared), the dev
  lock (one promotion per environment across all apps; Prefect answers waiters with up to 30 s of
  Retry-After, so the lock sits idle while they sleep), the staging approval wait (its resumed run's
  pick-up is a new process). The approvals' verdict poll makes most of the bench's calls (404 each).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from _machine import print_machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault-injection harness: seed_app, release_request, footprint

from fault_support import footprint, release_request, seed_app  # noqa: E402

from cli.client import DeliveryClient  # noqa: E402
from cli.client_models import StartedRelease  # noqa: E402
from cli.demo_full import PLANNER, demo_approvals  # noqa: E402
from cli.stack import down, up  # noqa: E402
from cli.stack_info import StackInfo, StackProcess  # noqa: E402
from delivery.errors import DeliveryError, NotFound, TransientError  # noqa: E402
from delivery.ids import waiting_environment  # noqa: E402
from delivery.ledger import Ledger  # noqa: E402
from delivery.plan import PlanState  # noqa: E402
from delivery.signing import key_file_name  # noqa: E402

CONFIGURATIONS = (("postgresql", 3), ("sqlite", 1))
TARGET = "staging"
APP_PREFIX = "bench-app"
POLL_SECONDS = 2.0
SAMPLE_SECONDS = 0.5
VERDICT_SECONDS = 300.0
HEALTH_SECONDS = 10.0
STALL_SECONDS = 120.0
NOTES = 5  # lines of detail printed per kind of lost work
SETTLED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_CLIENT_RETRIED = re.compile(r"retryable status code 5\d\d", re.I)


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def p50_p95(values: Iterable[float]) -> str:
    values = list(values)
    if not values:
        return "-"
    return f"{percentile(values, 50):6.1f} / {percentile(values, 95):6.1f}  (n={len(values)})"


# --------------------------------------------------------------------------- what the callers see


class CountingTransport(httpx.HTTPTransport):
    """The client's transport, counting the status codes of every answer (retried ones included)."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: Counter[int] = Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        with self._lock:
            self.codes[response.status_code] += 1
        return response


@dataclass
class Calls:
    """The errors this bench's client calls raised, after the client's own retries."""

    surfaced_5xx: list[str] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DeliveryError as exc:
            with self._lock:
                server = re.search(r"HTTP 5\d\d", str(exc)) or "unreachable" in str(exc)
                if isinstance(exc, TransientError) and server:
                    self.surfaced_5xx.append(f"{what}: {exc}")
                else:
                    self.other[f"{what}: {type(exc).__name__}"] += 1
            raise


# --------------------------------------------------------------------------- memory


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children[ppid].append(int(entry.name))
    return children


def _tree(roots: Iterable[int], children: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _vmrss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone meanwhile, or a kernel thread


def api_connections(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the server's side of its clients' connections)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "01":
                count += 1
    return count


class RssSampler(threading.Thread):
    """Every ``SAMPLE_SECONDS``: VmRSS summed over each group's process trees; keeps each group's peak sum."""

    def __init__(self, groups: dict[str, list[int]], api_port: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.groups = groups
        self.api_port = api_port
        self.peak_connections = 0
        self.peak_kib: dict[str, int] = dict.fromkeys(groups, 0)
        self.peak_processes: dict[str, int] = dict.fromkeys(groups, 0)
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            children = _children()
            for group, roots in self.groups.items():
                pids = _tree(roots, children)
                self.peak_kib[group] = max(self.peak_kib[group], sum(_vmrss_kib(pid) for pid in pids))
                self.peak_processes[group] = max(self.peak_processes[group], len(pids))
            self.peak_connections = max(self.peak_connections, api_connections(self.api_port))
            self.samples += 1
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def process_groups(processes: list[StackProcess]) -> dict[str, list[int]]:
    """The stack's processes as the groups the report names."""
    groups: dict[str, list[int]] = {"Prefect server": [], "workers (+ flow runs)": [], "other stack processes": []}
    for process in processes:
        if process.name.startswith("prefect-server"):
            groups["Prefect server"].append(process.pid)
        elif process.marker == "worker":
            groups["workers (+ flow runs)"].append(process.pid)
        else:
            groups["other stack processes"].append(process.pid)
    return groups


# --------------------------------------------------------------------------- one configuration


@dataclass
class Tracked:
    """One release of the bench: what was started, and where its run is."""

    app: str
    started: StartedRelease
    submitted: float
    state: str = ""
    given: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    deciding: Future[Any] | None = None


@dataclass
class Result:
    """A configuration's figures, as rows (label, value), and its lost work."""

    name: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    lost: int = 0
    verified: bool = False
    ran: bool = True
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.rows.append((label, value))


def start_stack(home: Path, database: str, workers: int, ready_delay: float) -> StackInfo:
    say = lambda line: print(f"    [{database}] {line}", flush=True)  # noqa: E731
    return up(home=home, ready_delay=ready_delay, say=say, database=database, workers=workers)


@dataclass
class Drive:
    """What driving the releases gave: the releases, the first submit and last end (epoch s), a stall."""

    tracked: list[Tracked]
    first_submit: float
    last_end: float
    stalled: str = ""


def answering(info: StackInfo) -> bool:
    """Whether the Prefect server answers its health check within ``HEALTH_SECONDS``."""
    try:
        return httpx.get(f"{info.api_url}/health", timeout=HEALTH_SECONDS).status_code == 200
    except httpx.HTTPError:
        return False


def drive(info: StackInfo, client: DeliveryClient, poller: DeliveryClient, calls: Calls, apps: list[str], *,
          timeout: float) -> Drive:
    """Start one release per app at once, approve what waits, until every run settled, the timeout passed or
    the server stopped answering (no health answer for ``STALL_SECONDS``)."""
    _, approvals = demo_approvals(info)
    keys = Path(info.home) / "keys"
    requests = [release_request(app, target=TARGET).model_copy(
        update={"release_id": f"rel-bench-{uuid.uuid4().hex[:10]}"}) for app in apps]

    def start(request: Any) -> Tracked:
        submitted = time.time()
        started = calls.run("start_release", lambda: client.start_release(request, key=keys / key_file_name(PLANNER)))
        return Tracked(app=request.app, started=started, submitted=submitted)

    began = time.time()
    # not a `with`: after a stall, the approvals still blocked on the server must not hold the bench
    pool = ThreadPoolExecutor(max_workers=len(apps))
    try:
        tracked = list(pool.map(start, requests))
        print(f"    {len(tracked)} releases submitted in {time.time() - began:.1f}s", flush=True)
        by_run = {t.started.flow_run_id: t for t in tracked}
        deadline = time.monotonic() + timeout
        last_line, last_answer, stalled = "", time.monotonic(), ""
        while True:
            if time.monotonic() > deadline:
                stalled = f"not settled within {timeout:.0f} s"
                break
            if not answering(info):
                if time.monotonic() - last_answer > STALL_SECONDS:
                    stalled = (f"the Prefect server stopped answering (no /api/health answer for "
                               f"{STALL_SECONDS:.0f} s, {time.time() - began:.0f} s after the first submit)")
                    break
                time.sleep(POLL_SECONDS)
                continue
            last_answer = time.monotonic()
            body = {"flow_runs": {"id": {"any_": list(by_run)}}, "limit": len(by_run)}
            try:
                runs = calls.run("flow_runs/filter",
                                 lambda b=body: poller.request("POST", "/flow_runs/filter", json=b).json())
            except TransientError:
                continue
            for run in runs:
                one = by_run[str(run["id"])]
                state = run.get("state") or {}
                one.state = state.get("type", "")
                if one.state != "PAUSED" or (one.deciding is not None and not one.deciding.done()):
                    continue
                environment = waiting_environment((state.get("state_details") or {}).get("pause_key")) or ""
                pending = [who for who in approvals.get(environment, []) if who not in one.given[environment]]
                if pending:
                    one.deciding = pool.submit(approve, client, calls, one, environment, pending[0], keys)
            states = Counter(t.state for t in tracked)
            line = ", ".join(f"{name or '?'} {count}" for name, count in sorted(states.items()))
            if line != last_line:
                print(f"    {time.time() - began:6.0f}s  {line}", flush=True)
                last_line = line
            if all(t.state in SETTLED for t in tracked):
                break
            time.sleep(POLL_SECONDS)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if stalled:
        print(f"    stopped waiting: {stalled}", flush=True)
        return Drive(tracked, began, time.time(), stalled)
    ends = []
    for t in tracked:
        run = calls.run("flow_run", lambda t=t: client.flow_run(t.started.flow_run_id))
        ends.append(_at(run["end_time"]) if run.get("end_time") else time.time())
    return Drive(tracked, began, max(ends))


def approve(client: DeliveryClient, calls: Calls, one: Tracked, environment: str, approver: str, keys: Path) -> None:
    """One signed approval through the API, as the demo gives it (the approver is never the planner)."""
    try:
        calls.run(f"approve {environment}", lambda: client.approve(
            one.started.release_id, approver=approver, environment=environment, comment="concurrency bench",
            key=keys / key_file_name(approver), verdict_timeout=VERDICT_SECONDS))
    except NotFound:  # it moved on meanwhile
        return
    except DeliveryError:
        return  # counted by calls; the next poll tries again if it still waits
    one.given[environment].append(approver)


def task_runs(client: DeliveryClient, calls: Calls, run_ids: list[str]) -> list[dict[str, Any]]:
    """Every task run of the runs, one run at a time (offset pages of one filter over all runs skip some)."""
    found: list[dict[str, Any]] = []
    for run_id in run_ids:
        offset = 0
        while True:  # pages in a stable order (by id)
            body = {"flow_runs": {"id": {"any_": [run_id]}}, "sort": "ID_DESC", "limit": 200, "offset": offset}
            page = calls.run("task_runs/filter",
                             lambda b=body: client.request("POST", "/task_runs/filter", json=b).json())
            found += page
            offset += len(page)
            if len(page) < 200:
                break
    return found


def _stage_key(name: str) -> tuple[int, str]:
    number = re.match(r"(\d+)-", name)
    environment = next((i for i, env in enumerate(("dev", "staging", "prod")) if f"-{env}" in name), -1)
    return (environment, f"{int(number[1]):03d}{name}" if number else name)


def pickups(states: list[dict[str, Any]]) -> tuple[float | None, list[float]]:
    """The first pick-up (created to Running) and each resumed run's (the first state after Suspended to Running)."""
    states = sorted(states, key=lambda s: s["timestamp"])
    first, resumed, since, waiting = None, [], None, False
    for state in states:
        at = _at(state["timestamp"])
        if state["type"] == "RUNNING":
            if first is None:
                first = at - _at(states[0]["timestamp"])
            elif since is not None:
                resumed.append(at - since)
            since, waiting = None, False
        elif state["type"] == "PAUSED":
            waiting = True
        elif waiting and since is None:
            since = at  # the first state after the wait: the resume accepted
    return first, resumed


def lock_use(uses: list[tuple[float, float, float]], step: float = 0.05) -> str:
    """An environment lock's use: the span from the first release wanting it (Approved) to the last release
    leaving it (Deployed); the time some release held it (Promoting -> Deployed, the lock is taken just before
    and freed just after); the time nobody held it while some release waited (Approved -> Promoting)."""
    begin, end = min(u[0] for u in uses), max(u[2] for u in uses)
    held = idle = 0.0
    for i in range(int((end - begin) / step)):
        at = begin + i * step
        if any(promoting <= at < deployed for _, promoting, deployed in uses):
            held += step
        elif any(approved <= at < promoting for approved, promoting, _ in uses):
            idle += step
    return f"{end - begin:6.1f} / {held:6.1f} / {idle:6.1f}"


def log_counts(home: Path) -> tuple[int, int, int, int]:
    """The server log's answered 503s (retryable database errors, logged as the stack asks) and other 5xx
    (unexpected exceptions), its 'database is locked' lines; the retried 5xx the flow runs logged (workers' logs)."""
    retryable = failed = locked = retried = 0
    for log in (home / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        if log.name.startswith("prefect-server"):
            retryable += text.count("Encountered retryable exception in request")
            failed += text.count("Encountered exception in request")
            locked += text.count("database is locked")
        elif log.name.startswith("worker"):
            retried += len(_CLIENT_RETRIED.findall(text))
    return retryable, failed, locked, retried


def measure(database: str, workers: int, releases: int, *, ready_delay: float, timeout: float) -> Result:
    """Start a stack in a fresh folder, run the releases, collect the figures; stop the stack whatever happens."""
    result = Result(name=f"{database}, {workers} worker{'s' if workers > 1 else ''}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-concurrency-{database}-") as tmp:
        os.chmod(tmp, 0o711)  # PostgreSQL's unprivileged user walks to its cluster, kept inside and removed with it
        home = Path(tmp) / "state"
        sampler: RssSampler | None = None
        try:
            info = start_stack(home, database, workers, ready_delay)
            result.add("stack up (s)", f"{time.monotonic() - began:.0f}")
            result.add("releases (apps) to staging", f"{releases}")
            apps = [f"{APP_PREFIX}-{i:02d}" for i in range(releases)]
            for app in apps:
                seed_app(info, app)
            sampler = RssSampler(process_groups(info.processes), urlsplit(info.api_url).port or 80)
            sampler.start()
            transport = CountingTransport()
            calls = Calls()
            polling = CountingTransport()
            # the poll gives up sooner than the calls that act (a hung server is noticed within minutes)
            with DeliveryClient(info.api_url, auth_string=info.auth_string(), transport=transport,
                                timeout=30) as client, \
                    DeliveryClient(info.api_url, auth_string=info.auth_string(), transport=polling, timeout=15,
                                   retries=2) as poller:
                driven = drive(info, client, poller, calls, apps, timeout=timeout)
                sampler.stop()
                if driven.stalled:
                    result.notes.append(f"{result.name}: {driven.stalled}")
                    stopped = f"not finished: stopped after {time.time() - driven.first_submit:.0f}"
                    result.add("wall, first submit to last run end (s)", stopped)
                else:
                    timings(result, client, calls, driven, releases)
            check_lost(result, info, calls, driven)
            codes = transport.codes + polling.codes
            result.add("client answers (all calls)", ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())))
            result.add("  5xx retried by the client", str(sum(n for code, n in codes.items() if code >= 500)))
            for group, kib in sampler.peak_kib.items():
                result.add(f"peak RSS {group} (MiB)",
                           f"{kib / 1024:.0f}  (up to {sampler.peak_processes[group]} processes)")
            result.add("peak connections open to the Prefect API", str(sampler.peak_connections))
            retryable, failed, locked, retried = log_counts(home)
            result.add("server log: 503 / other 5xx / 'database is locked'", f"{retryable} / {failed} / {locked}")
            result.add("flow runs: 5xx retried (workers' logs)", str(retried))
        except Exception as exc:  # noqa: BLE001 - the other configuration still runs; the failure is reported
            traceback.print_exc()
            result.notes.append(f"{result.name}: failed: {type(exc).__name__}: {exc}")
            if not result.verified:  # what could not be checked counts as lost
                result.lost = releases
        finally:
            if result.lost and (home / "logs").is_dir():
                kept = Path(tempfile.mkdtemp(prefix=f"bench-concurrency-logs-{database}-"))
                shutil.copytree(home / "logs", kept, dirs_exist_ok=True)
                result.notes.append(f"{result.name}: the stack's logs are kept in {kept}")
            down(home=home, say=lambda _line: None)
            if sampler is not None:
                sampler.stop()
    result.add("configuration in all, stack start and stop included (s)", f"{time.monotonic() - began:.0f}")
    return result


def timings(result: Result, client: DeliveryClient, calls: Calls, driven: Drive, releases: int) -> None:
    """Wall time, releases per minute, per-release, per-stage p50 / p95 (from the API)."""
    tracked = driven.tracked
    wall = driven.last_end - driven.first_submit
    result.add("wall, first submit to last run end (s)", f"{wall:.0f}")
    result.add("releases per minute", f"{releases / wall * 60:.2f}")
    ends, firsts, resumed = [], [], []
    for one in tracked:
        run = calls.run("flow_run", lambda one=one: client.flow_run(one.started.flow_run_id))
        if run.get("end_time"):
            ends.append(_at(run["end_time"]) - one.submitted)
        states = calls.run("flow_run_states", lambda one=one: client.request(
            "GET", f"/flow_run_states/?flow_run_id={one.started.flow_run_id}").json())
        first, again = pickups(states)
        firsts += [first] if first is not None else []
        resumed += again
    result.add("p50 / p95 (s): release, submit to end", p50_p95(ends))
    result.add("  first pick-up (submitted to Running)", p50_p95(firsts))
    result.add("  resumed-run pick-up (resume to Running)", p50_p95(resumed))

    by_stage: dict[str, list[float]] = defaultdict(list)
    for run in task_runs(client, calls, [t.started.flow_run_id for t in tracked]):
        state = run.get("state") or {}
        if state.get("type") == "COMPLETED" and state.get("name") != "Cached" and run.get("start_time") \
                and run.get("end_time"):
            by_stage[run["name"]].append(_at(run["end_time"]) - _at(run["start_time"]))
    for name in sorted(by_stage, key=_stage_key):
        result.add(f"  stage {name}", p50_p95(by_stage[name]))


def check_lost(result: Result, info: StackInfo, calls: Calls, driven: Drive) -> None:
    """The ledger's per-environment spans and the lost work (the ledger, the GitOps repository, the calls)."""
    tracked = driven.tracked
    ledger = Ledger(info.ledger_url, create=False)
    path = ["dev", "staging"]
    spans: dict[tuple[str, str], list[float]] = defaultdict(list)
    locks: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    not_deployed, missing, duplicated, other_twice = [], [], [], Counter()
    for one in tracked:
        plans = {p.environment: p for p in ledger.plans(release_id=one.started.release_id)}
        for environment in path:
            plan = plans.get(environment)
            if plan is None or plan.state is not PlanState.DEPLOYED:
                not_deployed.append(f"{one.app}/{environment}: {plan.state.value if plan else 'not planned'}")
                continue
            entered = {t.to_state: t.at.timestamp() for t in ledger.transitions(plan.plan_id)}
            if {PlanState.APPROVED, PlanState.PROMOTING, PlanState.DEPLOYED} <= entered.keys():
                locks[environment].append((entered[PlanState.APPROVED], entered[PlanState.PROMOTING],
                                           entered[PlanState.DEPLOYED]))
            for label, a, b in (("approval wait (PendingApproval->Approved)", PlanState.PENDING_APPROVAL,
                                 PlanState.APPROVED),
                                ("lock wait (Approved->Promoting)", PlanState.APPROVED, PlanState.PROMOTING),
                                ("deploy (Promoting->Deployed)", PlanState.PROMOTING, PlanState.DEPLOYED)):
                if a in entered and b in entered:
                    spans[(environment, label)].append(entered[b] - entered[a])
        written = footprint(info, one.started.release_id, app=one.app)
        for environment in path:  # a plan Deployed without its commit (the others are counted above)
            deployed = plans.get(environment) is not None and plans[environment].state is PlanState.DEPLOYED
            if deployed and not any(key.startswith(f"{environment}/") for key in written.gitops_commits):
                missing.append(f"{one.app}/{environment}")
        duplicated += [f"{one.app}: {key} x{n}" for key, n in written.gitops_commits.items() if n > 1]
        other_twice.update(what for what in written.duplicates() if not what.startswith("GitOps commit"))
    order = ("approval", "lock", "deploy")
    for (environment, label), values in sorted(spans.items(), key=lambda item: (
            path.index(item[0][0]), order.index(item[0][1].split()[0]))):
        result.add(f"  ledger {environment}: {label}", p50_p95(values))
    for environment in path:
        if locks[environment]:
            result.add(f"  {environment} lock: span / held / idle while waited (s)", lock_use(locks[environment]))
    runs_not_completed = sum(1 for t in tracked if t.state != "COMPLETED")
    lost = len(not_deployed) + len(missing) + len(duplicated) + len(calls.surfaced_5xx)
    result.lost = lost
    result.verified = True
    result.add("LOST WORK (must be 0)", str(lost))
    result.add("  plans not Deployed (ledger)", str(len(not_deployed)))
    result.add("  GitOps commits missing / duplicated", f"{len(missing)} / {len(duplicated)}")
    result.add("  5xx or no answer surfaced to the bench's calls", str(len(calls.surfaced_5xx)))
    states = ", ".join(f"{state} {n}" for state, n in sorted(Counter(t.state or "?" for t in tracked).items()))
    result.add("runs not Completed", f"{runs_not_completed}  ({states})")
    resubmitted = sum(len(ledger.actions(release_id=t.started.release_id, action="resubmitted")) for t in tracked)
    result.add("runs resubmitted by recovery (marked Crashed)", str(resubmitted))
    result.add("other writes done twice (not counted)", str(sum(other_twice.values())))
    result.add("other errors of the bench's calls", str(sum(calls.other.values())))
    for kind, lines in (("not Deployed", not_deployed), ("GitOps commit missing", missing),
                        ("GitOps commit duplicated", duplicated), ("surfaced", calls.surfaced_5xx)):
        result.notes += [f"{result.name}: {kind}: {line}" for line in lines[:NOTES]]
        if len(lines) > NOTES:
            result.notes.append(f"{result.name}: {kind}: ... {len(lines) - NOTES} more")
    result.notes += [f"{result.name}: {what}: {n}" for what, n in calls.other.items()]
    result.notes += [f"{result.name}: done twice: {what} ({n} releases)" for what, n in other_twice.items()]


# --------------------------------------------------------------------------- the report


def print_side_by_side(results: list[Result]) -> None:
    labels: list[str] = []
    for result in results:
        labels += [label for label, _ in result.rows if label not in labels]
    width = max([len(label) for label in labels] + [10]) + 2
    column = 34
    print("\n" + " " * width + "".join(f"{r.name:<{column}}" for r in results))
    for label in labels:
        cells = []
        for result in results:
            values = dict(result.rows)
            cells.append(values.get(label, "-") if result.ran else "unavailable")
        print(f"{label:<{width}}" + "".join(f"{cell:<{column}}" for cell in cells))
    for result in results:
        for note in result.notes:
            print(note)


def prepare() -> None:
    """This process's environment for the stacks it starts (their workers and flow runs inherit it)."""
    # The pipeline's steps run `python`: this interpreter's, as `make test` and `make demo` arrange.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for key in [k for k in os.environ if k.startswith(("PREFECT_API", "DELIVERY_"))]:
        del os.environ[key]
    # This checkout's code in the stack's processes too (the package may be installed from another).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=20, help="concurrent releases, one per application")
    parser.add_argument("--only", choices=[database for database, _ in CONFIGURATIONS],
                        help="run one configuration only")
    parser.add_argument("--ready-delay", type=float, default=1.0, help="the simulator's rollout time (s)")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds to wait for the releases, per configuration")
    args = parser.parse_args()
    print_machine()
    prepare()
    began = time.monotonic()
    results = []
    for database, workers in CONFIGURATIONS:
        if args.only and database != args.only:
            continue
        print(f"{database}, {workers} worker(s): {args.releases} releases ...", flush=True)
        results.append(measure(database, workers, args.releases, ready_delay=args.ready_delay, timeout=args.timeout))
    print_side_by_side(results)
    print(f"bench: {time.monotonic() - began:.0f}s in all (stacks started and stopped included)")
    if any(r.ran and r.lost for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
