"""``delivery up`` / ``delivery down``: the local stack of the embedded default (DESIGN §12).

``up`` starts, under the state folder (``DELIVERY_HOME``, default ``.delivery/``): a Prefect server
on 127.0.0.1 with SQLite (or, with ``--database postgresql``, a local PostgreSQL first, holding
Prefect's database and the ledger: :mod:`cli.postgres_server`), the Kubernetes API simulator, the local
OCI registry; seeds bare repos for the sample application and the GitOps repository from
``examples/``; saves the blocks the flows load (and the result storage block every worker persists
to) and registers every block type of the product (the UI's catalog); creates the ``delivery``
process work pool, deploys ``prefect.yaml`` and starts one worker (``--workers N``: N) polling every
second.
Every process it starts is recorded in ``stack.json`` so that ``down`` stops exactly those (by
process group, after checking the pid is still ours).

The API refuses anonymous callers: ``up`` generates a credential once per state folder
(``<home>/api-auth``, mode 0600, kept across ``down``/``up``; see :mod:`delivery.api_auth`), gives it
to the server as ``PREFECT_SERVER_API_AUTH_STRING`` and to every client it runs (worker, deploy,
block saves; flow runs inherit the worker's) as ``PREFECT_API_AUTH_STRING``. ``stack.json`` holds
only the file's path, never the secret.

Reading commands find the stack with :func:`cli.stack_info.find_stack` (from any directory), which
creates nothing and, when there is no stack to read, raises :class:`~delivery.errors.StackNotFound`
saying so. ``up`` records its state folder per user (:func:`delivery.settings.record_current_stack`) so that
they find it from anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import typer
from rich.console import Console

from cli.postgres_server import MARKER as POSTGRES_MARKER
from cli.postgres_server import start_postgres, stop_postgres
from cli.prefect_cache import seed_database, ui_static_directory
from cli.processes import alive, free_port, spawn, stop_process, wait_until
from cli.stack_info import StackInfo, StackProcess, read_stack, stack_file
from delivery.api_auth import SERVER_AUTH_ENV, ensure_auth_file
from delivery.errors import InvalidInput, TransientError
from delivery.identity import ALLOWED_SIGNERS
from delivery.schema import upgrade_ledger
from delivery.settings import HOME_ENV, record_current_stack, state_dir
from delivery.signing import ensure_keys

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
WORK_POOL = "delivery"
SAMPLE_APP = "sample-app"
# The embedded default's people and agents: each gets a key under <home>/keys, registered in the GitOps
# repository's identities/allowed_signers when ``up`` first creates it (the demo and the CLI sign with them).
PERSONAS = ("agent:release-manager", "user:alice", "user:bob", "user:carol", "agent:qa-bot")
ALLOWED_SIGNERS_HEADER = """\
# Who may sign plans and decisions: OpenSSH allowed_signers format (ssh-keygen -Y verify, git's signed commits).
# principal[,principal...] [namespaces="delivery"] ssh-ed25519 <key> [comment]. Revoke a key with
# `delivery identity revoke` (audited). Changed by reviewed pull requests, like delivery.yaml.
"""
SKIP_PARTS = {"__pycache__", "test-results", "build", "dist", ".pytest_cache"}
DATABASES = ("sqlite", "postgresql")
MAX_WORKERS = 16
# The block every worker's flow runs persist task results to (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK): a crashed
# release resumed on another worker finds the stages it completed.
RESULT_STORAGE = "local-file-system/delivery-results"

console = Console(stderr=True, soft_wrap=True)


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


def up(*, home: Path | None = None, ready_delay: float = 1.0, say: Callable[[str], None] = console.print,
       database: str | None = None, workers: int | None = None) -> StackInfo:
    """Start the local stack (or return the one already running).

    Args:
        home: the state folder (default ``DELIVERY_HOME`` or ``.delivery``).
        ready_delay: the simulator's rollout time in seconds.
        say: where progress lines go.
        database: ``sqlite`` (the embedded default: files in the state folder) or ``postgresql`` (a local
            PostgreSQL server under the state folder holds Prefect's database and the ledger:
            :mod:`cli.postgres_server`). None: as the stack already up, else as the state folder was last
            started (``postgresql`` once it has a cluster), else ``sqlite``.
        workers: how many process workers poll the ``delivery`` pool. None: as the stack already up, else 1.

    Returns:
        The stack's description, also written to ``<home>/stack.json``.

    Raises:
        TransientError: a piece did not come up (what was started is stopped again).
        InvalidInput: a prerequisite is missing (e.g. the registry binary).
    """
    if database is not None and database not in DATABASES:
        raise InvalidInput(f"--database must be one of {', '.join(DATABASES)}, not {database!r}")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise InvalidInput(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    home = (home or state_dir()).resolve()
    started = time.monotonic()
    plain_say = say

    def say(message: str) -> None:  # noqa: F811 - the same sink, with the elapsed time
        plain_say(f"[{time.monotonic() - started:5.1f}s] {message}")

    running = read_stack(home)
    if running is not None and running.processes and all(alive(p) for p in running.processes):
        if (database or running.database, workers or running.workers) != (running.database, running.workers):
            raise InvalidInput(f"the stack in {home} is already up with --database {running.database} --workers "
                               f"{running.workers}: `delivery down` first to start it another way")
        say(f"the stack is already up (Prefect at {running.ui_url})")
        _remember(home, say)
        return running
    if running is not None:
        down(home=home, say=say)
    # a state folder once started on PostgreSQL keeps its history there: a plain `delivery up` starts it again
    database = database or ("postgresql" if (home / "postgres" / "pgpass").is_file() else "sqlite")
    workers = workers or 1
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    api_port = free_port()
    info = StackInfo(
        home=str(home), api_url=f"http://127.0.0.1:{api_port}/api", ui_url=f"http://127.0.0.1:{api_port}",
        simulator_url="", kubeconfig=str(home / "simulator" / "kubeconfig"), registry_url="",
        git_root=str(home / "repos"), gitops_repo=str(home / "gitops.git"),
        ledger_url=f"sqlite:///{home / 'ledger.db'}", auth_file=str(ensure_auth_file(home)),
        database=database, workers=workers,
    )
    prefect_database = f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}"
    python = sys.executable

    def record(process: StackProcess) -> None:
        info.processes.append(process)
        stack_file(home).write_text(info.model_dump_json(indent=2))

    try:
        if database == "postgresql":
            say("starting PostgreSQL ...")
            postgres = start_postgres(home)
            record(postgres.process())
            info.ledger_url, info.pgpassfile = postgres.url("ledger"), str(postgres.passfile)
            prefect_database = postgres.url("prefect", driver="asyncpg")
            before, after = upgrade_ledger(info.ledger_url)
            say(f"PostgreSQL is up on 127.0.0.1:{postgres.port}; the ledger's schema at {after} (was {before})")
        env = {**os.environ, **info.env(), "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database}
        env.pop(SERVER_AUTH_ENV, None)  # only the server gets it
        env.setdefault("PREFECT_UI_STATIC_DIRECTORY", str(ui_static_directory()))
        if database == "sqlite" and seed_database(home / "prefect" / "prefect.db", env=env):
            say("Prefect's database copied from the migrated one in the cache")
        say(f"starting the Prefect server ({'PostgreSQL' if database == 'postgresql' else 'SQLite'}) ...")
        # Prefect's server, its SQLite transactions begun IMMEDIATE (cli/prefect_server.py: no 503 under load)
        server = spawn("prefect-server", [python, "-m", "cli.prefect_server", "server", "start",
                                          "--host", "127.0.0.1", "--port", str(api_port)],
                       env={**env, SERVER_AUTH_ENV: info.auth_string() or "",
                            # a 503 (SQLite locked) is logged, not only answered: its log shows if the fix regresses
                            "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}, logs=logs, marker="prefect", cwd=REPO_ROOT)
        record(server)
        say("starting the Kubernetes API simulator ...")
        Path(info.kubeconfig).unlink(missing_ok=True)
        simulator = spawn("simulator", [python, "-m", "cli.main", "simulator", "--port", "0",
                                        "--kubeconfig", info.kubeconfig, "--ready-delay", str(ready_delay)],
                          env=env, logs=logs, marker="simulator", cwd=REPO_ROOT)
        record(simulator)
        say("starting the OCI registry ...")
        from cli.local_registry import start_registry

        registry = start_registry(home / "registry")
        info.registry_url = registry.url
        record(StackProcess(name="registry", pid=registry.pid, marker="registry",
                            log=str(registry.root / "registry.log")))
        kubeconfig_text = wait_until("simulator", lambda: Path(info.kubeconfig).read_text(), timeout=60,
                                     process=simulator)
        import yaml

        info.simulator_url = yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]["server"]
        wait_until("Prefect server", lambda: httpx.get(f"{info.api_url}/health", timeout=2).status_code == 200,
              timeout=180, process=server)
        say(f"Prefect is up at {info.ui_url}")

        with info.prefect_settings():
            _ensure_work_pool()
            save_result_storage(home / "results")
        # the workers boot and the deployments are made while the blocks are saved
        say(f"starting {workers} worker(s) on the 'delivery' pool, deploying prefect.yaml, seeding repositories ...")
        pool = [start_worker(info, env, name="worker" if n == 1 else f"worker-{n}") for n in range(1, workers + 1)]
        for worker in pool:
            record(worker)
        deploying = subprocess.Popen([python, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with info.prefect_settings():
                _save_blocks(info)
                from cli.drift import setup_drift_alerts_from_env

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
        from cli.automations import setup_recovery

        with info.prefect_settings():
            setup_recovery()
        say("crash detection and recovery automations are set up")
        wait_until("workers", lambda: _workers_online(info) >= workers, timeout=90, process=pool[0])
        say(f"{workers} worker(s) online")
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


def save_result_storage(folder: Path) -> None:
    """Save the result storage block every worker's flow runs persist to (:data:`RESULT_STORAGE`).

    The embedded default keeps a local folder; workers on several machines need storage they all reach:
    save a block of the same name on another filesystem (docs/running-at-scale.md).
    """
    from prefect.filesystems import LocalFileSystem

    LocalFileSystem(basepath=str(folder)).save(RESULT_STORAGE.split("/", 1)[1], overwrite=True)


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """A worker's environment: a quick poll, heartbeats from the flow runs it starts, the shared result storage."""
    from delivery.settings import HEARTBEAT_SECONDS

    return {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": RESULT_STORAGE}


def start_worker(info: StackInfo, env: dict[str, str], *, name: str = "worker") -> StackProcess:
    """Start a process worker on the ``delivery`` pool (``name`` tells its log apart)."""
    return spawn(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type",
                         "process"], env=worker_env(env), logs=Path(info.home) / "logs", marker="worker",
                 cwd=REPO_ROOT)


def _workers_online(info: StackInfo) -> int:
    response = httpx.post(f"{info.api_url}/work_pools/{WORK_POOL}/workers/filter", json={},
                          headers=info.auth_headers(), timeout=5)
    return sum(w.get("status") == "ONLINE" for w in response.json()) if response.status_code == 200 else 0


def down(*, home: Path | None = None, say: Callable[[str], None] = console.print) -> list[str]:
    """Stop what ``up`` started (recorded in ``stack.json``), newest first; return their names."""
    home = (home or state_dir()).resolve()
    info = read_stack(home)
    if info is None:
        say("nothing to stop (no stack.json)")
        return []
    stopped = []
    # the workers first, so no flow run starts against a server going away; then the servers together; the
    # database last, once nothing uses it
    workers = [p for p in reversed(info.processes) if p.marker == "worker"]
    servers = [p for p in reversed(info.processes) if p.marker not in ("worker", POSTGRES_MARKER)]
    databases = [p for p in info.processes if p.marker == POSTGRES_MARKER]
    for group, stop in ((workers, stop_process), (servers, stop_process), (databases, stop_postgres)):
        with ThreadPoolExecutor(max_workers=max(len(group), 1)) as pool:
            for process, was_ours in zip(group, pool.map(stop, group), strict=True):
                if was_ours:
                    stopped.append(process.name)
                    say(f"stopped {process.name} (pid {process.pid})")
    stack_file(home).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- commands


def up_command(
    ready_delay: float = typer.Option(1.0, "--ready-delay", help="Simulated rollout time in seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the stack description as JSON."),
    database: str = typer.Option(None, "--database", show_default=False,
                                 help="sqlite (the default: files in the state folder) or postgresql (a local "
                                      "PostgreSQL server for Prefect and the ledger)."),
    workers: int = typer.Option(None, "--workers", show_default=False,
                                help=f"Process workers on the pool (1-{MAX_WORKERS}, default 1)."),
) -> None:
    """Start the local stack: Prefect server, simulator, registry, repos, blocks, deployments, workers."""
    try:
        info = up(ready_delay=ready_delay, say=(lambda _m: None) if as_json else console.print, database=database,
                  workers=workers)
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
    console.print(f"ledger          {info.ledger_url}")
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


__all__ = ["down", "down_command", "start_worker", "up", "up_command", "worker_env"]
