"""The fault-injection harness: one local stack, lanes of releases on it, and what a release left behind.

:class:`FaultStack` is ``delivery up`` in a folder of its own, with ``DELIVERY_FAILPOINTS_FILE``
set before its worker starts. It can start workers, kill them (SIGKILL of the worker's pid only,
as a host crash would) and restart the Prefect server on the same port and database; each new
process gets the command line and environment of the one ``up`` started (read from ``/proc``),
and only processes this harness started are ever stopped.

A :class:`Lane` lets several releases run at once without touching each other: its own
application repository (the sample app under another name), its own work queue served by its own
worker (so killing that worker kills nothing of another lane), and its own failpoints file, given
to its release run through the run's job variables. :class:`Release` starts a release the way
``DeliveryClient.start_release`` does (same body, signed by the planner, plus the lane's queue and
failpoints), approves what waits through ``DeliveryClient.approve`` as people other than the planner
(signing with the personas' keys ``delivery up`` made), and reads the
run's state history. :func:`footprint` counts, for one release, every write to the outside world
a crash could duplicate; :func:`outcome` reads where the release ended.

Self-contained (product imports only), so that ``bench/recovery.py`` uses it too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from pydantic import SecretStr

from blocks.git_host import LocalGitHost
from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from cli.client import DeliveryClient
from cli.processes import spawn, stop_process
from cli.stack import REPO_ROOT, WORK_POOL, down, up
from cli.stack_info import StackInfo, StackProcess, read_stack
from delivery import failpoints
from delivery.api_auth import AUTH_ENV
from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings
from delivery.config import load_config
from delivery.errors import NotFound
from delivery.labels import managed_selector
from delivery.ledger import Ledger
from delivery.models import Artifact, ReleaseRequest
from delivery.signing import KEYS_DIR_ENV, sign_request

T = TypeVar("T")

APP = "sample-app"
PLANNER = "agent:release-manager"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = ROOT / "examples" / APP
# Who signs where in every release of the suite: none of them is the planner.
APPROVERS: dict[str, tuple[str, ...]] = {"staging": ("user:alice",), "prod": ("user:alice", "user:bob")}
# Where a release run stays. Crashed is not among them: the product resubmits a crashed run.
SETTLED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# A rollout that fails at once in the simulator (tests/support/runtime.py FAIL, a 1 s progress deadline).
FAILING_VALUES = {"podAnnotations": {"simulator.delivery.gitops/fail": "true"}, "progressDeadlineSeconds": 1}
_MANIFEST_PUT = re.compile(r'"PUT /v2/(?P<repository>\S+)/manifests/(?P<tag>[^\s?]+) HTTP/[\d.]+" 2\d\d ')
_SKIP = {"__pycache__", "test-results", "build", "dist", ".pytest_cache"}
# A lane's worker polls its queue this often: with several lanes, every-second polls crowd SQLite.
LANE_POLL_SECONDS = 3
# How often the harness reads a run's state.
POLL_SECONDS = 2.0
# How long an approval waits for the flow's verdict; a worker killed meanwhile gives it after recovery.
VERDICT_SECONDS = 20.0


def wait_until(check: Callable[[], T], *, timeout: float, what: str | Callable[[], str],
               interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy and return it.

    Raises:
        AssertionError: naming ``what`` (called then, when a callable), after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what}: not within {timeout:.0f} s")
        time.sleep(interval)


def api(info: StackInfo, method: str, path: str, *, attempts: int = 14, **options: Any) -> httpx.Response:
    """One Prefect API call with the stack's credential, retried on 429/5xx and connection errors for about a minute.

    SQLite answers 503 under concurrent writes, and the server is away while a test restarts it.

    Raises:
        httpx.HTTPStatusError: any other error status, or the last retried one.
    """
    delay = 0.25
    headers = {**info.auth_headers(), **options.pop("headers", {})}
    for attempt in range(attempts):
        try:
            response = httpx.request(method, f"{info.api_url}{path}", timeout=30, headers=headers, **options)
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
        else:
            if response.status_code not in (429, 502, 503, 504) or attempt == attempts - 1:
                return response
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its reaper (a zombie's command line is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


@dataclass(frozen=True)
class Recipe:
    """How a stack process was started: its command line and environment, as ``/proc`` shows them."""

    command: list[str]
    env: dict[str, str]

    @classmethod
    def of(cls, process: StackProcess) -> Recipe:
        proc = Path(f"/proc/{process.pid}")
        command = [part.decode() for part in proc.joinpath("cmdline").read_bytes().split(b"\0") if part]
        pairs = [entry.decode(errors="replace").partition("=")
                 for entry in proc.joinpath("environ").read_bytes().split(b"\0") if entry]
        return cls(command=command, env={key: value for key, _, value in pairs})


# --------------------------------------------------------------------------- the stack


@dataclass
class FaultStack:
    """The local stack of ``delivery up`` for fault injection, and the processes added to it."""

    home: Path
    info: StackInfo
    failpoints: Path
    recipes: dict[str, Recipe]
    started: list[StackProcess] = field(default_factory=list)
    say: Callable[[str], None] = lambda _line: None

    @classmethod
    @contextmanager
    def running(cls, home: Path, *, env: Mapping[str, str] | None = None,
                say: Callable[[str], None] = lambda _line: None) -> Iterator[FaultStack]:
        """Start the stack in ``home``; stop all of it, and every process added, on exit.

        ``DELIVERY_FAILPOINTS_FILE`` (``home/failpoints``) and ``env`` are set in this process's
        environment before ``up``, so the worker and every flow run inherit them; restored after.
        The stack's API credential is set too (``PREFECT_API_AUTH_STRING``, once ``up`` made it), so
        the product's clients in this process (``DeliveryClient``, the CLI run in-process) send it;
        Prefect's own client here needs ``info.prefect_settings()``.
        """
        home = home.resolve()
        settings = {failpoints.SETTING: str(home / "failpoints"), **(env or {})}
        previous = {key: os.environ.get(key) for key in [*settings, AUTH_ENV, KEYS_DIR_ENV]}
        os.environ.update(settings)
        stack: FaultStack | None = None
        try:
            info = up(home=home, say=say)
            os.environ[AUTH_ENV] = info.auth_string() or ""
            os.environ[KEYS_DIR_ENV] = str(home / "keys")  # the personas' keys: sign as the planner and approvers
            recipes = {p.name: Recipe.of(p) for p in info.processes if p.name in ("prefect-server", "worker")}
            stack = cls(home=home, info=info, failpoints=home / "failpoints", recipes=recipes, say=say)
            yield stack
        finally:
            # the processes a test added first, all signalled at once (each may take seconds to stop)
            added = [p for p in reversed(stack.started if stack else []) if _alive(p.pid)]
            for process in added:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in added:
                stop_process(process)
            down(home=home, say=say)
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # ------------------------------------------------------------------ failpoints of the whole stack

    def arm(self, *names: str) -> None:
        """Arm failpoints for every run the stack's own worker starts (each fires once)."""
        failpoints.arm(self.failpoints, *names)

    def armed(self) -> list[str]:
        return failpoints.armed(self.failpoints)

    # ------------------------------------------------------------------ processes

    def workers(self) -> list[StackProcess]:
        """The workers alive now: the one ``up`` started and those started here."""
        recorded = read_stack(self.home)
        candidates = [p for p in (recorded.processes if recorded else []) if p.name == "worker"]
        candidates += [p for p in self.started if p.name.startswith("worker")]
        return [p for p in candidates if _alive(p.pid)]

    def start_worker(self, *, queue: str | None = None, label: str = "", wait: bool = True,
                     poll_seconds: float | None = None) -> StackProcess:
        """Start a process worker as ``up`` started its own (on one work queue when given).

        Args:
            queue: the only work queue it polls (default: every queue of the pool).
            label: a word for its name and log file.
            wait: return once it polls the server (otherwise see :meth:`wait_online`).
            poll_seconds: how often it polls (default: as ``up``'s, every second); each poll
                writes to the server's database, which SQLite serialises.
        """
        recipe = self.recipes["worker"]
        name = f"worker-{label or 'extra'}-{len(self.started) + 1}"
        command = [*recipe.command, "--name", f"{self.home.name}-{name}", *(["--work-queue", queue] if queue else [])]
        env = {**recipe.env, **({"PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds)} if poll_seconds else {})}
        process = spawn(name, command, env=env, logs=self.home / "logs", marker="worker", cwd=REPO_ROOT)
        self.started.append(process)
        self.say(f"started {name} (pid {process.pid}) on queue {queue or 'all'}")
        if wait:
            self.wait_online(process)
        return process

    def wait_online(self, *workers: StackProcess) -> None:
        """Wait until every worker of ``workers`` polls the server."""
        for worker in workers:
            wait_until(lambda w=worker: self._online(f"{self.home.name}-{w.name}"), timeout=120,
                       what=f"{worker.name} online")

    def _online(self, worker: str) -> bool:
        try:
            response = api(self.info, "POST", f"/work_pools/{WORK_POOL}/workers/filter", json={}, attempts=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and any(w.get("name") == worker and w.get("status") == "ONLINE"
                                                   for w in response.json())

    def kill(self, process: StackProcess) -> None:
        """SIGKILL one process (its pid only, not its group: what it started lives on, as after a host crash)."""
        if _alive(process.pid):
            os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: not _alive(process.pid), timeout=20, what=f"{process.name} gone")
        self.say(f"killed {process.name} (pid {process.pid})")

    def serve_default_queue_only(self) -> StackProcess:
        """Replace ``up``'s worker (it polls every queue) with one on the ``default`` queue only; idempotent.

        Lanes then own their queues: a worker a test kills serves nothing of another lane. The
        default queue keeps what ``up`` deployed (recover-release, drift-check).
        """
        serving = [p for p in self.started if p.name.startswith("worker-default-") and _alive(p.pid)]
        worker = serving[0] if serving else self.start_worker(queue="default", label="default")
        recorded = read_stack(self.home)
        for process in recorded.processes if recorded else []:
            if process.name == "worker" and _alive(process.pid):
                stop_process(process)
        return worker

    def restart_server(self) -> StackProcess:
        """Stop the Prefect server and start it again on the same port and database; wait until healthy."""
        recorded = read_stack(self.home) or self.info
        for process in [*recorded.processes, *self.started]:
            if process.name.startswith("prefect-server") and _alive(process.pid):
                stop_process(process)
        recipe = self.recipes["prefect-server"]
        process = spawn(f"prefect-server-{len(self.started) + 1}", recipe.command, env=recipe.env,
                        logs=self.home / "logs", marker="prefect", cwd=REPO_ROOT)
        self.started.append(process)
        wait_until(self._healthy, timeout=180, what="the Prefect server back")
        self.say(f"restarted the Prefect server (pid {process.pid})")
        return process

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.info.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # ------------------------------------------------------------------ lanes, API, ledger, config

    def lanes(self, apps: Mapping[str, str | None]) -> dict[str, Lane]:
        """Open lanes (name -> app, None: ``sample-app-<name>``): app seeded, work queue, failpoints, worker.

        ``up``'s worker is replaced first (:meth:`serve_default_queue_only`); the lanes' workers
        start together and are waited for together.
        """
        self.serve_default_queue_only()
        opened = {}
        for name, app in apps.items():
            app = app or f"{APP}-{name}"
            if app != APP:
                seed_app(self.info, app)
            response = api(self.info, "POST", f"/work_pools/{WORK_POOL}/queues", json={"name": name})
            if response.status_code not in (201, 409):
                response.raise_for_status()
            lane = Lane(stack=self, name=name, app=app, failpoints=self.home / f"failpoints-{name}")
            lane.failpoints.touch()
            lane.start_worker(wait=False)
            opened[name] = lane
        self.wait_online(*(worker for lane in opened.values() for worker in lane.workers))
        return opened

    def client(self) -> DeliveryClient:
        """A client that rides out a server restart (retries for about two minutes)."""
        return DeliveryClient(self.info.api_url, retries=9, auth_string=self.info.auth_string())

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.info.ledger_url)

    def namespaces(self) -> dict[str, str]:
        """Environment -> namespace, from the GitOps repository's delivery.yaml, in path order."""
        config = load_config(GitOpsRepo(url=self.info.gitops_repo).read_config())
        return {name: config.environments[name].namespace for name in config.path}

    def start(self, request: ReleaseRequest, *, queue: str | None = None, armed: Path | None = None,
              approvals: Mapping[str, Iterable[str]] | None = None) -> Release:
        """Start a release run as ``DeliveryClient.start_release`` does, on ``queue``, with its own failpoints file."""
        request = sign_request(request)
        body: dict[str, Any] = {
            "parameters": {"request": request.model_dump(mode="json")},
            "idempotency_key": f"{request.release_id}:{request.revision}",
            "name": request.release_id,
            "tags": [f"release:{request.release_id}", f"trace:{request.trace_id}"],
        }
        if queue:
            body["work_queue_name"] = queue
        if armed:
            body["job_variables"] = {"env": {failpoints.SETTING: str(armed)}}
        with self.client() as client:
            deployment = client.deployment_id()
        run = api(self.info, "POST", f"/deployments/{deployment}/create_flow_run", json=body)
        run.raise_for_status()
        wanted = APPROVERS if approvals is None else approvals
        self.say(f"started {request.release_id} of {request.app} (run {run.json()['id']})")
        return Release(stack=self, request=request, flow_run_id=str(run.json()["id"]),
                       approvals={env: tuple(who) for env, who in wanted.items()})


def app_files(app: str = APP) -> dict[str, bytes]:
    """examples/sample-app as repository files, renamed to ``app`` (package, image, pipeline) when asked."""
    files = {p.relative_to(SAMPLE_APP).as_posix(): p.read_bytes() for p in sorted(SAMPLE_APP.rglob("*"))
             if p.is_file() and not _SKIP & set(p.relative_to(SAMPLE_APP).parts) and ".egg-info" not in str(p)}
    if app == APP:
        return files
    from tasks.pipeline import render_pipeline

    settings = yaml.safe_load(files[BUILD_SETTINGS_FILE])
    settings["app"] = settings["package"]["name"] = settings["image"]["repository"] = app
    files[BUILD_SETTINGS_FILE] = yaml.safe_dump(settings, sort_keys=False).encode()
    files[settings["pipeline"]["path"]] = render_pipeline(parse_build_settings(files[BUILD_SETTINGS_FILE])).encode()
    files["pyproject.toml"] = files["pyproject.toml"].replace(f'name = "{APP}"'.encode(), f'name = "{app}"'.encode())
    return files


def seed_app(info: StackInfo, app: str) -> None:
    """Create the application repository ``app`` on the stack's git host (the sample app renamed)."""
    LocalGitHost(root=info.git_root).ensure_repository(app, initial_files=app_files(app))


def release_request(app: str = APP, *, failing: bool = False, target: str | None = None) -> ReleaseRequest:
    """A release of ``app`` (up to ``target``): a new version, and its deploy values (failing when asked).

    Every release carries ``deploy/values.yaml``, so a failing release leaves no failure on main for the next.
    """
    version = f"0.4.{time.time_ns() // 1_000_000 % 10**10}"
    values = yaml.safe_load((SAMPLE_APP / "deploy" / "values.yaml").read_text())
    if failing:
        values.update(FAILING_VALUES)
    artifacts = [
        Artifact.from_text("app-version", "src/sample_app/__init__.py",
                           f'"""The sample service."""\n\n__version__ = "{version}"\n', validator="ci-lint"),
        Artifact.from_text("deploy-values", "deploy/values.yaml", yaml.safe_dump(values, sort_keys=False),
                           validator="ci-lint"),
    ]
    return ReleaseRequest(release_id=f"rel-fault-{uuid.uuid4().hex[:10]}", app=app, requested_by=PLANNER,
                          artifacts=artifacts, target_environment=target)


# --------------------------------------------------------------------------- a lane


@dataclass
class Lane:
    """A release of its own app, on its own work queue and worker, with its own failpoints."""

    stack: FaultStack
    name: str
    app: str
    failpoints: Path
    workers: list[StackProcess] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    releases: list[Release] = field(default_factory=list)

    def note(self, text: str) -> float:
        """Record what the lane did, when (epoch seconds); return the time."""
        now = time.time()
        self.notes.append((now, text))
        self.stack.say(f"[{self.name}] {text}")
        return now

    def arm(self, *names: str) -> None:
        """Arm failpoints for this lane's release run only (each fires once)."""
        failpoints.arm(self.failpoints, *names)
        self.note(f"armed {', '.join(names)}")

    def armed(self) -> list[str]:
        return failpoints.armed(self.failpoints)

    def wait_fired(self, name: str, *, timeout: float = 300.0) -> float:
        """Wait until the failpoint ``name`` fired; return when (its file is rewritten just before the kill)."""
        wait_until(lambda: name not in self.armed(), timeout=timeout, what=f"[{self.name}] failpoint {name} fired")
        fired = self.failpoints.stat().st_mtime
        if name.endswith(failpoints.WITH_WORKER):
            wait_until(lambda: not self.live_workers(), timeout=30, what=f"[{self.name}] the worker gone")
        return fired

    def start_worker(self, *, wait: bool = True) -> StackProcess:
        """Start a worker on the lane's queue (the lane's only one, once the previous died)."""
        worker = self.stack.start_worker(queue=self.name, label=self.name, wait=wait, poll_seconds=LANE_POLL_SECONDS)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[StackProcess]:
        return [w for w in self.workers if _alive(w.pid)]

    def kill_workers(self) -> None:
        for worker in self.live_workers():
            self.stack.kill(worker)

    def start(self, *, failing: bool = False, target: str | None = None) -> Release:
        """Start a release of the lane's app on its queue, with its failpoints."""
        request = release_request(self.app, failing=failing, target=target)
        release = self.stack.start(request, queue=self.name, armed=self.failpoints)
        self.releases.append(release)
        return release

    def report(self) -> str:
        """What the lane did and what its releases went through: for a failure message."""
        lines = [f"lane {self.name} ({self.app}); failpoints still armed: {self.armed()}"]
        lines += [f"  {time.strftime('%H:%M:%S', time.localtime(at))} {text}" for at, text in self.notes]
        for release in self.releases:
            lines.append(f"  release {release.release_id} (run {release.flow_run_id}):")
            try:
                states = release.states()
                lines += [f"    {time.strftime('%H:%M:%S', time.localtime(s.at))} {s.name} {s.message[:120]}"
                          for s in states]
                lines += [f"    resubmitted {a['at']:%H:%M:%S}: {a['reason'][:120]}" for a in release.resubmissions()]
            except Exception as exc:  # noqa: BLE001 - a report must not hide the failure it explains
                lines.append(f"    (could not read its states: {exc})")
        return "\n".join(lines)

    def mark(self, what: str, at: float | None = None) -> float:
        """Remember when something happened (default: now), for the test to check timings."""
        self.marks[what] = at if at is not None else time.time()
        self.note(what)
        return self.marks[what]


# --------------------------------------------------------------------------- one release


@dataclass(frozen=True)
class RunState:
    type: str
    name: str
    at: float
    message: str


@dataclass
class Release:
    """A release started through the API, its approvals and its flow run."""

    stack: FaultStack
    request: ReleaseRequest
    flow_run_id: str
    approvals: dict[str, tuple[str, ...]]
    given: set[tuple[str, str]] = field(default_factory=set)

    @property
    def release_id(self) -> str:
        return self.request.release_id

    def state(self) -> tuple[str, str]:
        """(type, name) of the release run's state, e.g. ("PAUSED", "Suspended")."""
        with self.stack.client() as client:
            state = client.flow_run(self.flow_run_id).get("state") or {}
        return state.get("type", ""), state.get("name", "")

    def states(self) -> list[RunState]:
        """The run's state history, oldest first."""
        response = api(self.stack.info, "GET", "/flow_run_states/", params={"flow_run_id": self.flow_run_id})
        response.raise_for_status()
        return [RunState(s["type"], s["name"], datetime.fromisoformat(s["timestamp"]).timestamp(),
                         s.get("message") or "") for s in sorted(response.json(), key=lambda s: s["timestamp"])]

    def running_again_after(self, moment: float) -> bool:
        """Whether the run crashed after ``moment`` (epoch seconds) and has been running again since."""
        after = [s.type for s in self.states() if s.at >= moment - 1]
        return "CRASHED" in after and "RUNNING" in after[after.index("CRASHED"):]

    def waiting_in(self) -> list[str]:
        """The environments the release waits for a decision in."""
        with self.stack.client() as client:
            return [p.environment or "" for p in client.paused_runs(self.release_id)]

    def approve_waiting(self) -> list[str]:
        """Give each environment waiting one approval of someone who has not approved there yet; return who."""
        done = []
        with self.stack.client() as client:
            for environment in {p.environment or "" for p in client.paused_runs(self.release_id)}:
                pending = [who for who in self.approvals.get(environment, ()) if (environment, who) not in self.given]
                if not pending:
                    continue
                try:
                    client.approve(self.release_id, approver=pending[0], environment=environment,
                                   comment="fault-injection suite", verdict_timeout=VERDICT_SECONDS)
                except NotFound:  # it moved on meanwhile
                    continue
                self.given.add((environment, pending[0]))
                done.append(f"{pending[0]}@{environment}")
        return done

    def follow(self, *, until: Callable[[tuple[str, str]], bool] | None = None, timeout: float = 900.0,
               approve: bool = True) -> tuple[str, str]:
        """Approve what waits until the run settles, or ``until(state)`` holds (checked first); return the state.

        Raises:
            AssertionError: neither within ``timeout`` seconds.
        """
        def done() -> tuple[str, str] | None:
            state = self.state()
            if until(state) if until else state[0] in SETTLED:
                return state
            if approve and state[0] == "PAUSED":
                self.approve_waiting()
            return None

        return wait_until(done, timeout=timeout, interval=POLL_SECONDS, what=lambda: f"release {self.release_id} of "
                          f"{self.request.app} ({self.state()[1]}; states {[s.name for s in self.states()][-12:]})")

    def wait_waiting(self, environment: str, *, timeout: float = 900.0) -> None:
        """Approve what waits elsewhere until the run is suspended waiting in ``environment``."""
        self.follow(until=lambda state: state[0] == "PAUSED" and environment in self.waiting_in(), timeout=timeout)

    def resubmissions(self) -> list[dict[str, Any]]:
        """The resubmissions the product recorded for this release (actor ``system:recovery``)."""
        return self.stack.ledger.actions(release_id=self.release_id, action="resubmitted")

    def footprint(self) -> Footprint:
        return footprint(self.stack.info, self.release_id, app=self.request.app)

    def outcome(self) -> Outcome:
        return outcome(self.stack, self)


def holds(read: Callable[[], T], expected: T, *, seconds: float, what: str, interval: float = 1.0) -> None:
    """Assert that ``read()`` stays ``expected`` for ``seconds`` (polled): the window is the assertion, not a wait.

    Raises:
        AssertionError: naming ``what`` and what was read instead, as soon as it changes.
    """
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        value = read()
        assert value == expected, f"{what}: {value!r} after {time.monotonic() - started:.0f} s, not {expected!r}"
        time.sleep(interval)


def uninterrupted_transitions(release_id: str, environments: Iterable[str]) -> dict[str, int]:
    """The transitions an uninterrupted release writes, once each, per environment it reaches."""
    steps = [("Planned", "PendingApproval"), ("PendingApproval", "Approved"), ("Approved", "Promoting"),
             ("Promoting", "Deployed")]
    return {f"{release_id}/r1/{env}: {a} -> {b}": 1 for env in environments for a, b in steps}


# --------------------------------------------------------------------------- the outside world


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    trailers: dict[str, tuple[str, ...]]

    def trailer(self, key: str) -> str | None:
        values = self.trailers.get(key.lower())
        return values[0] if values else None


def commits(git_dir: str | Path, ref: str, *, first_parent: bool = False) -> list[Commit]:
    """The commits reachable from ``ref`` (none when it does not exist), newest first, with their trailers."""
    base = ["git", "--git-dir", str(git_dir)]
    if subprocess.run([*base, "rev-parse", "--verify", "-q", ref], capture_output=True).returncode != 0:
        return []
    args = [*base, "log", "--format=%H %P%x1f%(trailers:only,unfold)%x1e", *(["--first-parent"] * first_parent), ref]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    found = []
    for record in filter(str.strip, out.split("\x1e")):
        head, _, trailer_text = record.strip("\n").partition("\x1f")
        sha, *parents = head.split()
        trailers: dict[str, list[str]] = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers.setdefault(key.strip().lower(), []).append(value.strip())
        found.append(Commit(sha, tuple(parents), {k: tuple(v) for k, v in trailers.items()}))
    return found


@dataclass(frozen=True)
class Footprint:
    """What one release wrote outside Prefect, counted; an uninterrupted release writes each thing once."""

    branch_commits: int
    pull_requests: int
    merges: int
    pipeline_commits: int
    pipeline_runs: int
    package_publishes: int
    image_publishes: int
    gitops_commits: dict[str, int]
    transitions: dict[str, int]
    approvals: dict[str, int]

    def duplicates(self) -> dict[str, int]:
        """Everything written more than once, with how many times: empty when nothing was duplicated."""
        once = {"release branch commits": self.branch_commits, "pull requests": self.pull_requests,
                "merges into main": self.merges, "pipeline refresh commits": self.pipeline_commits,
                "pipeline runs": self.pipeline_runs, "package publishes": self.package_publishes,
                "image publishes": self.image_publishes}
        repeated = {what: n for what, n in once.items() if n > 1}
        for kind, counts in (("GitOps commit", self.gitops_commits), ("transition", self.transitions),
                             ("approval", self.approvals)):
            repeated.update({f"{kind} {key}": n for key, n in counts.items() if n > 1})
        return repeated

    @property
    def duplicate_count(self) -> int:
        """How many writes were extra (a thing written three times counts two)."""
        return sum(n - 1 for n in self.duplicates().values())

    def built_once(self) -> bool:
        """One branch commit, pull request, merge, pipeline run, package and image publish."""
        return (self.branch_commits, self.pull_requests, self.merges, self.pipeline_runs, self.package_publishes,
                self.image_publishes) == (1, 1, 1, 1, 1, 1)


def footprint(info: StackInfo, release_id: str, *, app: str = APP) -> Footprint:
    """Count, for one release, every write a crash could repeat.

    - the app's bare repo: commits on ``release/<id>`` carrying ``Release-Id: <id>``; on main's
      first-parent history, merges carrying it and other commits carrying it (the pipeline file
      refresh, at most one);
    - pull-request records (``<repo>.prs/*.json``) whose source is ``release/<id>``;
    - pipeline runs: run folders of the LocalPipelineRunner named after the release, and the
      package ``##delivery[published]`` lines of their logs (package publishes);
    - image publishes: manifest PUTs in the registry's access log tagged with a commit of the release;
    - GitOps commits carrying ``Release-Id: <id>``, per ``Environment``/``Delivery-Phase``;
    - the ledger: each (plan, from, to) transition and each (plan, approver, decision) approval.
    """
    repos = Path(info.git_root)
    app_repo = repos / f"{app}.git"
    ours = [c for c in commits(app_repo, f"refs/heads/release/{release_id}") if c.trailer("Release-Id") == release_id]
    on_main = [c for c in commits(app_repo, "refs/heads/main", first_parent=True)
               if c.trailer("Release-Id") == release_id]
    merges = [c for c in on_main if len(c.parents) > 1]
    pull_requests = sum(1 for record in (repos / f"{app}.prs").glob("*.json")
                        if yaml.safe_load(record.read_text()).get("source_branch") == f"release/{release_id}")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", release_id).strip("-").lower()[:40]
    runs_root = Path(info.home) / "runs"
    runs = [run for run in runs_root.glob("*") if f"-{slug}-" in f"{run.name}-"] if runs_root.is_dir() else []
    packages = sum(log.read_text(errors="replace").count('##delivery[published]{"kind": "package"')
                   for run in runs for log in run.rglob("*.log"))
    tags = {c.sha for c in on_main}
    registry_log = next((Path(p.log) for p in info.processes if p.name == "registry"), None)
    images = 0
    if registry_log is not None and registry_log.exists():
        images = sum(1 for match in _MANIFEST_PUT.finditer(registry_log.read_text(errors="replace"))
                     if match["tag"] in tags)
    gitops = Counter(f"{c.trailer('Environment')}/{c.trailer('Delivery-Phase')}"
                     for c in commits(info.gitops_repo, "refs/heads/main") if c.trailer("Release-Id") == release_id)
    ledger = Ledger(info.ledger_url)
    transitions = Counter(f"{t.plan_id}: {t.from_state.value} -> {t.to_state.value}"
                          for t in ledger.transitions(release_id=release_id))
    approvals: Counter[str] = Counter()
    for plan in ledger.plans(release_id=release_id):
        approvals.update(f"{plan.plan_id}: {a.approver} {a.decision.value}" for a in ledger.approvals(plan.plan_id))
    return Footprint(
        branch_commits=len(ours), pull_requests=pull_requests, merges=len(merges),
        pipeline_commits=len(on_main) - len(merges), pipeline_runs=len(runs), package_publishes=packages,
        image_publishes=images, gitops_commits=dict(gitops), transitions=dict(transitions),
        approvals=dict(approvals),
    )


# --------------------------------------------------------------------------- where a release ended


@dataclass(frozen=True)
class Outcome:
    """Where a release ended: its run, its plans, what serves in each environment."""

    run_state: str
    plans: dict[str, str]
    serving: dict[str, set[str]]


def serving_images(runtime: KubernetesRuntime, namespace: str, *, app: str) -> set[str]:
    """The images of the Deployments the app's Services select in ``namespace`` (the live version)."""
    objects = runtime.list_managed(selector=managed_selector(app=app), namespace=namespace)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    images = set()
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = (service.get("spec") or {}).get("selector") or {}
        for deployment in deployments:
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                images |= {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    return images


def outcome(stack: FaultStack, release: Release) -> Outcome:
    """Read where ``release`` ended: the run's state name, each plan's state, the serving images."""
    plans = {p.environment: p.state.value for p in stack.ledger.plans(release_id=release.release_id)}
    runtime = KubernetesRuntime(kubeconfig=SecretStr(Path(stack.info.kubeconfig).read_text()))
    serving = {env: serving_images(runtime, ns, app=release.request.app) for env, ns in stack.namespaces().items()}
    return Outcome(run_state=release.state()[1], plans=plans, serving=serving)


def built_image(stack: FaultStack, release: Release) -> str:
    """The image the release built, by digest (from its plans)."""
    [image] = {i.reference for p in stack.ledger.plans(release_id=release.release_id) for i in p.build.images}
    return image


def reached(stack: FaultStack, release: Release) -> list[str]:
    """The environments of the path up to the release's target (all of them without one)."""
    path = list(stack.namespaces())
    target = release.request.target_environment
    return path[:path.index(target) + 1] if target else path


def delivered(stack: FaultStack, release: Release) -> Outcome:
    """What an uninterrupted release ends as: Completed, each environment up to its target Deployed and serving
    its image, the others untouched."""
    image = built_image(stack, release)
    environments = reached(stack, release)
    return Outcome(run_state="Completed", plans=dict.fromkeys(environments, "Deployed"),
                   serving={env: {image} if env in environments else set() for env in stack.namespaces()})


__all__ = ["APP", "APPROVERS", "FaultStack", "Footprint", "Lane", "Outcome", "Release", "app_files", "built_image",
           "delivered", "footprint", "holds", "outcome", "reached", "release_request", "seed_app",
           "uninterrupted_transitions", "wait_until"]
