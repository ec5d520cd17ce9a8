"""A release on PostgreSQL with three workers, each in a working directory and state folder of its own.

``delivery up --database postgresql`` starts the stack (PostgreSQL for Prefect and the ledger); its own
worker is stopped and three workers are started as if on three machines: they share only the Prefect server
(and through it the blocks), the ledger's URL and the result storage block, never a folder. The sample app is
released through dev, staging and prod with signed approvals through the API, as ``delivery demo`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from cli.client import DeliveryClient
from cli.demo_full import PLANNER, demo_approvals, demo_request, follow_release
from cli.postgres_server import FALLBACK_ROOT, cluster_folder
from cli.processes import spawn, stop_process, wait_until
from cli.stack import RESULT_STORAGE, WORK_POOL, down, worker_env
from cli.stack_info import StackInfo, StackProcess
from delivery.ledger import Ledger
from delivery.plan import PlanState
from delivery.signing import key_file_name

MACHINES = 3


def _clean_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "DELIVERY_", "PG"))}
    return {**env, "DELIVERY_HOME": str(home), "CI": "true"}


def _machine_worker(info: StackInfo, machine: Path, name: str) -> StackProcess:
    """A worker as on another machine: its own folders; the API, its credential, the ledger URL and the result
    storage block's name are all it is given."""
    machine.mkdir(parents=True)
    env = worker_env({**_clean_env(machine / "state"), "PREFECT_API_URL": info.api_url,
                      "PREFECT_API_AUTH_STRING": info.auth_string() or "", "DELIVERY_LEDGER_URL": info.ledger_url,
                      "PREFECT_HOME": str(machine / "prefect"),
                      "PREFECT_LOCAL_STORAGE_PATH": str(machine / "results")})
    return spawn(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
                        "--name", name], env=env, logs=machine / "logs", marker="worker", cwd=machine)


def _online(info: StackInfo) -> set[str]:
    import httpx

    response = httpx.post(f"{info.api_url}/work_pools/{WORK_POOL}/workers/filter", json={},
                          headers=info.auth_headers(), timeout=5)
    return {w["name"] for w in response.json() if w.get("status") == "ONLINE"} if response.status_code == 200 else set()


def test_a_release_on_postgresql_with_three_workers_that_share_no_folder(tmp_path: Path) -> None:
    home = tmp_path / "state"
    started = subprocess.run([sys.executable, "-m", "cli.main", "up", "--database", "postgresql", "--json"],
                             cwd=tmp_path, env=_clean_env(home), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=300)
    workers: list[StackProcess] = []
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        info = StackInfo.model_validate_json(started.stdout)
        assert info.database == "postgresql" and info.ledger_url.startswith("postgresql+psycopg://delivery@127.0.0.1")
        own_worker = next(p for p in info.processes if p.marker == "worker")
        stop_process(own_worker)
        workers = [_machine_worker(info, tmp_path / f"machine-{n}", f"machine-{n}") for n in range(1, MACHINES + 1)]
        wait_until("three workers", lambda: {w.name for w in workers} <= _online(info), timeout=120)

        config, approvals = demo_approvals(info)
        keys = home / "keys"
        with DeliveryClient(info.api_url, auth_string=info.auth_string()) as client:
            release = client.start_release(demo_request(), key=keys / key_file_name(PLANNER))
            run = follow_release(client, release, approvals=approvals, keys=keys, timeout=600,
                                 on_change=lambda _line: None, ledger_url=info.ledger_url)
        assert run["state"]["type"] == "COMPLETED", run["state"]

        ledger = Ledger(info.ledger_url, create=False)
        plans = {p.environment: p for p in ledger.plans(release_id=release.release_id)}
        assert {env: p.state for env, p in plans.items()} == dict.fromkeys(config.path, PlanState.DEPLOYED)
        with ledger.engine.connect() as conn:  # the ledger is PostgreSQL's, not a file somewhere
            assert conn.execute(text("SELECT current_database()")).scalar() == "ledger"
        # The stages' results went to the shared block's folder; no worker wrote results of its own.
        assert json.loads((home / "stack.json").read_text())["database"] == "postgresql"
        # PostgreSQL's password is in its 0600 file only: not in the stack's description, URLs or logs
        password = Path(info.pgpassfile).read_text().strip().rsplit(":", 1)[1]
        assert Path(info.pgpassfile).stat().st_mode & 0o777 == 0o600
        written = [home / "stack.json", *(home / "logs").iterdir(), *(w.log for w in workers)]
        assert [str(f) for f in written if password in Path(f).read_text(errors="replace")] == []
        assert info.processes and any((home / "results").iterdir()), f"no result in the {RESULT_STORAGE} block"
        for n in range(1, MACHINES + 1):
            assert not (tmp_path / f"machine-{n}" / "results").exists()
        # the run was started once and resumed after each approval, every time by one of the three
        logs = "".join(Path(w.log).read_text(errors="replace") for w in workers)
        submitted = logs.count(f"submitting flow run '{release.flow_run_id}'")
        assert submitted >= 1 + sum(1 for env in config.path if approvals[env]), submitted
        # and each resumed run, on whichever worker, found the first stage's result in the shared block
        assert logs.count("'01-create_commit' - Finished in state Cached") == submitted - 1, logs[-3000:]
    finally:
        for worker in workers:
            stop_process(worker)
        stopped = down(home=home, say=lambda _line: None)
        cluster = cluster_folder(home)
        if FALLBACK_ROOT in cluster.parents:
            shutil.rmtree(cluster, ignore_errors=True)
    assert "postgres" in stopped
