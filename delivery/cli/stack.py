"""``delivery up`` / ``delivery down``: the local stack of the embedded default (DESIGN §12).

``up`` starts, under the state folder (``DELIVERY_HOME``, default ``.delivery/``): a Prefect server
on 127.0.0.1 with SQLite, the Kubernetes API simulator, the local OCI registry; seeds bare repos
for the sample application and the GitOps repository from ``examples/``; saves the blocks the
flows load and registers every block type of the product (the UI's catalog); creates the
``delivery`` process work pool, deploys ``prefect.yaml`` and starts one worker polling every second.
Every process it starts is recorded in ``stack.json`` so that ``down`` stops exactly those (by
process group, after checking the pid is still ours).

The API refuses anonymous callers: ``up`` generates a credential once per state folder
(``<home>/api-auth``, mode 0600, kept across ``down``/``up``; see :mod:`delivery.api_auth`), gives it
to the server as ``PREFECT_SERVER_API_AUTH_STRING`` and to every client it runs (worker, deploy,
block saves; flow runs inherit the worker's) as ``PREFECT_API_AUTH_STRING``. ``stack.json`` holds
only the file's path, never the secret.

Reading commands find the stack with :func:`find_stack` (from any directory; see
:func:`delivery.settings.find_state_dir` for the order), which creates nothing and, when there is no
stack to read, raises :class:`~delivery.errors.StackNotFound` saying so. ``up`` records its state folder
per user (:func:`delivery.settings.record_current_stack`) so that they find it from anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from delivery.api_auth import (
    AUTH_ENV,
    SERVER_AUTH_ENV,
    auth_file,
    basic_auth_header,
    ensure_auth_file,
    read_auth_file,
)
from delivery.cli.prefect_cache import seed_database, ui_static_directory
from delivery.errors import InvalidInput, StackNotFound, TransientError
from delivery.identity import ALLOWED_SIGNERS
from delivery.settings import (
    HOME_ENV,
    LEDGER_ENV,
    LEDGER_FILE,
    FoundStateDir,
    find_state_dir,
    record_current_stack,
    state_dir,
)
from delivery.signing import ensure_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
WORK_POOL = "delivery"
SAMPLE_APP = "sample-app"
# The embedded default's people and agents: each gets a key under <home>/keys, registered in the GitOps
# repository's identities/allowed_signers when ``up`` first creates it (the demo and the CLI sign with them).
PERSONAS = ("agent:release-manager", "user:alice", "user:bob", "user:carol", "agent:qa-bot")
ALLOWED_SIGNERS_HEADER = """\
# Who may sign plans and decisions: OpenSSH allowed_signers format (ssh-keygen -Y verify, git's signed commits).
# principal[,principal...] [namespaces="delivery"] ssh-ed25519 <key> [comment]. Revoke a key by adding its
# public key line to identities/revoked_keys. Changed by reviewed pull requests, like delivery.yaml.
"""
SKIP_PARTS = {"__pycache__", "test-results", "build", "dist", ".pytest_cache"}

console = Console(stderr=True, soft_wrap=True)


class StackProcess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    pid: int
    marker: str = Field(description="A word of its command line, checked before stopping it")
    log: str


class StackInfo(BaseModel):
    """What ``up`` started and where everything is (``<home>/stack.json``)."""

    model_config = ConfigDict(extra="forbid")

    home: str
    api_url: str
    ui_url: str
    simulator_url: str
    kubeconfig: str
    registry_url: str
    git_root: str
    gitops_repo: str
    ledger_url: str
    auth_file: str = Field(default="", description="The API credential's file (0600); the secret is never here")
    processes: list[StackProcess] = Field(default_factory=list)

    def auth_string(self) -> str | None:
        """The API credential (read from :attr:`auth_file`), or None for a stack without one."""
        return read_auth_file(self.auth_file) if self.auth_file else None

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header for raw HTTP calls to :attr:`api_url` (empty without a credential)."""
        secret = self.auth_string()
        return basic_auth_header(secret) if secret else {}

    def env(self) -> dict[str, str]:
        """The environment the worker, the CLI and flows share (with the API credential)."""
        env = {
            "PREFECT_API_URL": self.api_url,
            "DELIVERY_HOME": self.home,
            "DELIVERY_LEDGER_URL": self.ledger_url,
            "PREFECT_HOME": str(Path(self.home) / "prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(Path(self.home) / "results"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        secret = self.auth_string()
        if secret:
            env[AUTH_ENV] = secret
        return env

    def prefect_settings(self) -> Any:
        """A context manager: Prefect's client in this process talks to this stack, with its credential."""
        from delivery.api_auth import prefect_client_settings

        return prefect_client_settings(self.api_url, auth_string=self.auth_string())


def stack_file(home: Path | None = None) -> Path:
    return (home or state_dir()) / "stack.json"


def read_stack(home: Path | None = None) -> StackInfo | None:
    """The running stack's description, or None."""
    path = stack_file(home)
    if not path.is_file():
        return None
    return StackInfo.model_validate_json(path.read_text())


API_ENV = "PREFECT_API_URL"


def no_stack_message(cwd: Path, *, ledger: bool = False) -> str:
    """What a reading command says when it finds no stack from ``cwd``."""
    also = f" / {LEDGER_ENV}" if ledger else ""
    return (f"no delivery stack found from {cwd}: run `delivery up`, or set {HOME_ENV} / {API_ENV}{also}")


@dataclass(frozen=True)
class StackTarget:
    """Where a reading command sends its calls: what :func:`find_stack` found, nothing created.

    Attributes:
        cwd: where the search started.
        found: the state folder, or None.
        info: its ``stack.json`` (a running stack), or None.
        api_url: the Prefect API: ``--api-url``/``PREFECT_API_URL``, else ``stack.json``'s, else the active
            Prefect profile's, else None.
        ledger_url: ``DELIVERY_LEDGER_URL``, else ``stack.json``'s, else ``<folder>/ledger.db``, else None.
    """

    cwd: Path
    found: FoundStateDir | None
    info: StackInfo | None
    api_url: str | None
    ledger_url: str | None

    def require_api(self) -> str:
        """The API URL, or :class:`StackNotFound` saying why there is none."""
        if self.api_url:
            return self.api_url
        if self.found is not None:
            raise StackNotFound(f"the delivery stack in {self.found.path} (found by {self.found.found_by}) is not "
                                f"running (no stack.json): run `delivery up`, or set {API_ENV}")
        raise StackNotFound(no_stack_message(self.cwd))

    def require_ledger(self) -> str:
        """The ledger URL, or :class:`StackNotFound`."""
        if self.ledger_url:
            return self.ledger_url
        raise StackNotFound(no_stack_message(self.cwd, ledger=True))

    def auth_string(self, api_url: str | None = None) -> str | None:
        """The API credential to send to ``api_url`` (default :attr:`api_url`).

        ``PREFECT_API_AUTH_STRING``, else the state folder's ``api-auth`` when the folder was named by
        ``DELIVERY_HOME`` or the call goes to the found stack's own API; a credential found by walking up or
        by the per-user record is never sent to another server.
        """
        if os.environ.get(AUTH_ENV):
            return os.environ[AUTH_ENV]
        if self.found is None:
            return None
        url = (api_url or self.api_url or "").rstrip("/")
        ours = self.info is not None and url == self.info.api_url.rstrip("/")
        if self.found.found_by != HOME_ENV and not ours:
            return None
        if self.info is not None and self.info.auth_file:
            return self.info.auth_string()
        return read_auth_file(auth_file(self.found.path))


def _profile_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def find_stack(api_url: str | None = None, *, cwd: Path | None = None) -> StackTarget:
    """Find the stack a reading command talks to, from any directory, creating nothing.

    Args:
        api_url: an API URL the caller gave (``--api-url``; typer fills it from ``PREFECT_API_URL``).
        cwd: where to start looking (default the working directory).

    Returns:
        What was found; :meth:`StackTarget.require_api` / :meth:`StackTarget.require_ledger` raise
        :class:`StackNotFound` with a clear message when a part is missing.
    """
    cwd = (cwd or Path.cwd()).resolve()
    found = find_state_dir(cwd)
    info = read_stack(found.path) if found is not None else None
    api = api_url or os.environ.get(API_ENV) or (info.api_url if info else None) or _profile_api_url()
    ledger = os.environ.get(LEDGER_ENV) or (info.ledger_url if info else None)
    if not ledger and found is not None:
        ledger = f"sqlite:///{found.path / LEDGER_FILE}"
    return StackTarget(cwd=cwd, found=found, info=info, api_url=api, ledger_url=ledger)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(process: StackProcess) -> bool:
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return process.marker in cmdline


def _spawn(name: str, command: list[str], *, env: dict[str, str], logs: Path, marker: str) -> StackProcess:
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return StackProcess(name=name, pid=process.pid, marker=marker, log=str(log_path))


def _wait(what: str, check: Callable[[], Any], *, timeout: float, process: StackProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not _alive(process):
            tail = Path(process.log).read_text(errors="replace")[-800:] if Path(process.log).exists() else ""
            raise TransientError(f"{what}: the process exited; last log lines:\n{tail}")
        try:
            value = check()
        except (OSError, httpx.HTTPError):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise TransientError(f"{what}: not ready after {timeout:.0f} s")


def stop_process(process: StackProcess, *, timeout: float = 20.0) -> bool:
    """Stop one recorded process and its process group; False when it was already gone (or not ours)."""
    if not _alive(process):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(process.pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0 if _alive(process) else process.pid
            if finished or not _alive(process):
                return True
            time.sleep(0.2)
    return True


# --------------------------------------------------------------------------- the pieces


def _app_files(source: Path) -> dict[str, bytes]:
    return {
        path.relative_to(source).as_posix(): path.read_bytes()
        for path in sorted(source.rglob("*"))
        if path.is_file() and not SKIP_PARTS & set(path.relative_to(source).parts) and ".egg-info" not in str(path)
    }


def _save_blocks(info: StackInfo) -> None:
    from pydantic import SecretStr

    from blocks.git_host import LocalGitHost
    from blocks.gitops_repo import GitOpsRepo
    from blocks.image_registry import OciImageRegistry
    from blocks.kubernetes_runtime import KubernetesRuntime
    from blocks.package_feed import DirectoryPackageFeed
    from blocks.pipeline_runner import LocalPipelineRunner

    home = Path(info.home)
    host = LocalGitHost(root=info.git_root)
    host.ensure_repository(SAMPLE_APP, initial_files=_app_files(EXAMPLES / SAMPLE_APP))
    host.save("default", overwrite=True)
    repo = GitOpsRepo(url=info.gitops_repo)
    registry = (ALLOWED_SIGNERS_HEADER + ensure_keys(home / "keys", list(PERSONAS))).encode()
    repo.ensure_exists(initial_files={"delivery.yaml": (EXAMPLES / "gitops" / "delivery.yaml").read_bytes(),
                                      ALLOWED_SIGNERS: registry})
    if not repo.read_identities()[0].strip():  # a state folder made before identities existed
        repo.write_files({ALLOWED_SIGNERS: registry}, message="Register the embedded default's personas", trailers=())
    repo.save("default", overwrite=True)
    KubernetesRuntime(kubeconfig=SecretStr(Path(info.kubeconfig).read_text())).save("local", overwrite=True)
    LocalPipelineRunner(work_dir=str(home / "runs")).save("default", overwrite=True)
    DirectoryPackageFeed(path=str(home / "feed")).save("default", overwrite=True)
    OciImageRegistry(url=info.registry_url).save("default", overwrite=True)
    from blocks.loading import register_block_types_on_server

    # the UI's catalog offers every type, also those saved as no block here, with the logo this stack's server serves
    register_block_types_on_server(info.ui_url)


def _ensure_work_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass


def up(*, home: Path | None = None, ready_delay: float = 1.0, say: Callable[[str], None] = console.print) -> StackInfo:
    """Start the local stack (or return the one already running).

    Args:
        home: the state folder (default ``DELIVERY_HOME`` or ``.delivery``).
        ready_delay: the simulator's rollout time in seconds.
        say: where progress lines go.

    Returns:
        The stack's description, also written to ``<home>/stack.json``.

    Raises:
        TransientError: a piece did not come up (what was started is stopped again).
        InvalidInput: a prerequisite is missing (e.g. the registry binary).
    """
    home = (home or state_dir()).resolve()
    started = time.monotonic()
    plain_say = say

    def say(message: str) -> None:  # noqa: F811 - the same sink, with the elapsed time
        plain_say(f"[{time.monotonic() - started:5.1f}s] {message}")

    running = read_stack(home)
    if running is not None and running.processes and all(_alive(p) for p in running.processes):
        say(f"the stack is already up (Prefect at {running.ui_url})")
        _remember(home, say)
        return running
    if running is not None:
        down(home=home, say=say)
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    api_port = _free_port()
    info = StackInfo(
        home=str(home), api_url=f"http://127.0.0.1:{api_port}/api", ui_url=f"http://127.0.0.1:{api_port}",
        simulator_url="", kubeconfig=str(home / "simulator" / "kubeconfig"), registry_url="",
        git_root=str(home / "repos"), gitops_repo=str(home / "gitops.git"),
        ledger_url=f"sqlite:///{home / 'ledger.db'}", auth_file=str(ensure_auth_file(home)),
    )
    env = {**os.environ, **info.env(), "PREFECT_API_DATABASE_CONNECTION_URL":
           f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}"}
    env.pop(SERVER_AUTH_ENV, None)  # only the server gets it
    env.setdefault("PREFECT_UI_STATIC_DIRECTORY", str(ui_static_directory()))
    python = sys.executable

    def record(process: StackProcess) -> None:
        info.processes.append(process)
        stack_file(home).write_text(info.model_dump_json(indent=2))

    try:
        if seed_database(home / "prefect" / "prefect.db", env=env):
            say("Prefect's database copied from the migrated one in the cache")
        say("starting the Prefect server (SQLite) ...")
        # Prefect's server, its SQLite transactions begun IMMEDIATE (delivery/prefect_server.py: no 503 under load)
        server = _spawn("prefect-server", [python, "-m", "delivery.prefect_server", "server", "start",
                                           "--host", "127.0.0.1", "--port", str(api_port)],
                        env={**env, SERVER_AUTH_ENV: info.auth_string() or "",
                             # a 503 (SQLite locked) is logged, not only answered: its log shows if the fix regresses
                             "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}, logs=logs, marker="prefect")
        record(server)
        say("starting the Kubernetes API simulator ...")
        Path(info.kubeconfig).unlink(missing_ok=True)
        simulator = _spawn("simulator", [python, "-m", "delivery.cli.main", "simulator", "--port", "0",
                                         "--kubeconfig", info.kubeconfig, "--ready-delay", str(ready_delay)],
                           env=env, logs=logs, marker="simulator")
        record(simulator)
        say("starting the OCI registry ...")
        from delivery.local_registry import start_registry

        registry = start_registry(home / "registry")
        info.registry_url = registry.url
        record(StackProcess(name="registry", pid=registry.pid, marker="registry",
                            log=str(registry.root / "registry.log")))
        kubeconfig_text = _wait("simulator", lambda: Path(info.kubeconfig).read_text(), timeout=60, process=simulator)
        import yaml

        info.simulator_url = yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]["server"]
        _wait("Prefect server", lambda: httpx.get(f"{info.api_url}/health", timeout=2).status_code == 200,
              timeout=180, process=server)
        say(f"Prefect is up at {info.ui_url}")

        with info.prefect_settings():
            _ensure_work_pool()
        # the worker boots and the deployments are made while the blocks are saved
        say("starting one worker on the 'delivery' pool, deploying prefect.yaml, seeding repositories ...")
        worker = start_worker(info, env)
        record(worker)
        deploying = subprocess.Popen([python, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with info.prefect_settings():
                _save_blocks(info)
                from delivery.cli.drift import setup_drift_alerts_from_env

                if setup_drift_alerts_from_env() is not None:
                    say("drift alerts go to DELIVERY_ALERT_WEBHOOK_URL")
            deploy_output, _ = deploying.communicate(timeout=300)
        finally:
            if deploying.poll() is None:
                deploying.kill()
                deploying.wait()
        if deploying.returncode != 0:
            raise TransientError(f"prefect deploy failed:\n{deploy_output[-1500:]}")
        say("deployed; repositories and blocks saved")
        from delivery.cli.automations import setup_recovery

        with info.prefect_settings():
            setup_recovery()
        say("crash detection and recovery automations are set up")
        _wait("worker", lambda: _worker_online(info), timeout=90, process=worker)
        say("the worker is online")
    except BaseException:
        down(home=home, say=say)
        raise
    stack_file(home).write_text(info.model_dump_json(indent=2))
    _remember(home, say)
    return info


def _remember(home: Path, say: Callable[[str], None]) -> None:
    """Record ``home`` as the last stack started, so reading commands find it from any directory."""
    try:
        record_current_stack(home)
    except OSError as exc:  # a read-only home directory: the CLI still finds the stack from its checkout
        say(f"could not record the stack for other directories ({exc}); set {HOME_ENV}={home} there")


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """A worker's environment: a quick poll, and heartbeats from the flow runs it starts."""
    from delivery.settings import HEARTBEAT_SECONDS

    return {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


def start_worker(info: StackInfo, env: dict[str, str], *, name: str = "worker") -> StackProcess:
    """Start a process worker on the ``delivery`` pool (``name`` tells its log apart)."""
    return _spawn(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type",
                         "process"], env=worker_env(env), logs=Path(info.home) / "logs", marker="worker")


def _worker_online(info: StackInfo) -> bool:
    response = httpx.post(f"{info.api_url}/work_pools/{WORK_POOL}/workers/filter", json={},
                          headers=info.auth_headers(), timeout=5)
    return response.status_code == 200 and any(w.get("status") == "ONLINE" for w in response.json())


def down(*, home: Path | None = None, say: Callable[[str], None] = console.print) -> list[str]:
    """Stop what ``up`` started (recorded in ``stack.json``), newest first; return their names."""
    home = (home or state_dir()).resolve()
    info = read_stack(home)
    if info is None:
        say("nothing to stop (no stack.json)")
        return []
    stopped = []
    # the workers first, so no flow run starts against a server going away; then the servers together
    workers = [p for p in reversed(info.processes) if p.marker == "worker"]
    servers = [p for p in reversed(info.processes) if p.marker != "worker"]
    for group in (workers, servers):
        with ThreadPoolExecutor(max_workers=max(len(group), 1)) as pool:
            for process, was_ours in zip(group, pool.map(stop_process, group), strict=True):
                if was_ours:
                    stopped.append(process.name)
                    say(f"stopped {process.name} (pid {process.pid})")
    stack_file(home).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- commands


def up_command(
    ready_delay: float = typer.Option(1.0, "--ready-delay", help="Simulated rollout time in seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the stack description as JSON."),
) -> None:
    """Start the local stack: Prefect server, simulator, registry, repos, blocks, deployments, a worker."""
    try:
        info = up(ready_delay=ready_delay, say=(lambda _m: None) if as_json else console.print)
    except (TransientError, InvalidInput) as exc:
        console.print(f"[red]delivery up failed[/red]: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(info.model_dump_json())
        return
    console.print(f"Prefect UI      {info.ui_url}")
    console.print(f"GitOps repo     {info.gitops_repo}")
    console.print(f"app repos       {info.git_root}")
    console.print(f"simulator       {info.simulator_url} (kubeconfig {info.kubeconfig})")
    console.print(f"registry        {info.registry_url}")
    console.print(f"use it:         export PREFECT_API_URL={info.api_url}")
    console.print(f"credential      {info.auth_file} (0600; the API refuses calls without it)")
    console.print(f"agents:         export PREFECT_API_AUTH_STRING=$(cat {info.auth_file})")
    console.print(f"UI login:       open {info.ui_url} and paste the file's whole line (delivery:...) "
                  "into the login form's password field")
    console.print("stop it:        delivery down")


def down_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop exactly what `delivery up` started."""
    stopped = down(say=(lambda _m: None) if as_json else console.print)
    if as_json:
        typer.echo(json.dumps({"stopped": stopped}))


__all__ = ["StackInfo", "StackTarget", "down", "down_command", "find_stack", "no_stack_message", "read_stack", "up",
           "up_command"]
