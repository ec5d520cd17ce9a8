"""The full demo: the local stack, one release of the sample app through the API, approvals by others.

:func:`run_full_demo` starts the stack (``delivery up``, which creates a key for each persona and
registers it in the GitOps repository), starts a release of the sample app through the Prefect REST
API as the agent ``agent:release-manager``, signed with its key, and approves each environment that
asks for it as other identities through the same API, each decision signed with the approver's key
(staging: ``user:alice``; prod: ``user:alice`` and ``user:bob``). At the first wait the planner
first tries to approve its own release, and the demo shows why that is refused. It shows progress
while it waits, and prints the outcome per environment, the trace id, where to look and how to stop
the stack. It talks to flows only through the API.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DeliveryClient
from cli.client_models import ReleaseStatus
from cli.release_status import release_status
from cli.stack import down, up
from cli.stack_info import StackInfo
from delivery.config import DeliveryConfig, load_config
from delivery.errors import ApprovalRefused, DeliveryError, NotFound
from delivery.events import run_link
from delivery.models import Artifact, ReleaseRequest
from delivery.signing import key_file_name

PLANNER = "agent:release-manager"
# Who signs where; prod needs two distinct people, and none of them is the planner.
APPROVERS: dict[str, list[str]] = {"staging": ["user:alice"], "prod": ["user:alice", "user:bob"]}
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

console = Console(soft_wrap=True)


def demo_request() -> ReleaseRequest:
    """A release of the sample app bumping its version (unique per run, so its package is new)."""
    version = f"0.2.{int(time.time())}"
    text = (
        '"""A small web service the delivery demo releases: /healthz and /version on port 8080."""\n\n'
        f'__version__ = "{version}"\n'
    )
    artifact = Artifact.from_text("sample-app-version", "src/sample_app/__init__.py", text, validator="demo-lint")
    return ReleaseRequest(app="sample-app", artifacts=[artifact], requested_by=PLANNER)


def _approvers_for(environment: str, required: bool) -> list[str]:
    return APPROVERS.get(environment, ["user:alice"]) if required else []


def demo_approvals(info: StackInfo) -> tuple[DeliveryConfig, dict[str, list[str]]]:
    """The stack's delivery.yaml, and who approves each environment of its path (none where not required)."""
    from blocks.gitops_repo import GitOpsRepo

    config = load_config(GitOpsRepo(url=info.gitops_repo).read_config())
    return config, {env: _approvers_for(env, config.environments[env].approval.required) for env in config.path}


def follow_release(
    client: DeliveryClient,
    started: Any,
    *,
    approvals: dict[str, list[str]],
    keys: Path,
    timeout: float = 1800.0,
    on_change: Callable[[str], None] = console.print,
    ledger_url: str | None = None,
) -> dict[str, Any]:
    """Approve what waits for a decision and wait until the release run ends; return the final run.

    Each decision is signed with the approver's key from ``keys``. At the first wait, the planner
    first tries to approve its own release: the refusal and its reason are shown.
    """
    given: dict[str, list[str]] = {env: [] for env in approvals}
    planner_tried = False
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.flow_run(started.flow_run_id)
        state = (run.get("state") or {}).get("type", "")
        report = release_status(client, started.release_id, ledger_url=ledger_url)
        line = _progress_line(run, report)
        if line != last:
            on_change(line)
            last = line
        if state in FINAL_STATES:
            return run
        for paused in client.paused_runs(started.release_id):
            env = paused.environment or ""
            pending = [who for who in approvals.get(env, []) if who not in given.get(env, [])]
            if not pending:
                continue
            tries = [pending[0]] if planner_tried else [PLANNER, pending[0]]
            planner_tried = True
            for approver in tries:
                if _approve(client, started.release_id, env, approver, keys=keys, on_change=on_change):
                    given.setdefault(env, []).append(approver)
        time.sleep(1.0)
    raise DeliveryError(f"release {started.release_id} still running after {timeout:.0f} s")


def _approve(client: DeliveryClient, release_id: str, environment: str, approver: str, *, keys: Path,
             on_change: Callable[[str], None]) -> bool:
    """One signed approval through the API; say whether it counted, and why not."""
    try:
        client.approve(release_id, approver=approver, environment=environment, comment="demo approval",
                       key=keys / key_file_name(approver))
    except ApprovalRefused as exc:
        on_change(f"  {approver} approves {environment}: refused: {exc}")
        return False
    except NotFound:  # it moved on meanwhile
        return False
    on_change(f"  {approver} approves {environment} (signed): counted")
    return True


def _progress_line(run: dict[str, Any], report: ReleaseStatus) -> str:
    plans = ", ".join(f"{p.environment}={p.state.value}" for p in report.plans) or "building"
    waiting = ", ".join(report.waiting_for_approval)
    waiting = f"; waiting for approval in {waiting}" if waiting else ""
    return f"[{run.get('state_name', '?')}] {plans}{waiting}"


def run_full_demo(*, keep_running: bool = False, timeout: float = 1800.0) -> bool:
    """Run the demo end to end; return True when every environment ends Deployed.

    Args:
        keep_running: leave the stack up at the end (otherwise ``delivery down`` runs).
        timeout: seconds to wait for the release.
    """
    info = up()
    ok = False
    try:
        config, approvals = demo_approvals(info)
        request = demo_request()
        keys = Path(info.home) / "keys"
        with DeliveryClient(info.api_url, auth_string=info.auth_string()) as client:
            started = client.start_release(request, key=keys / key_file_name(PLANNER))
            console.print(f"release [bold]{started.release_id}[/bold] started by {PLANNER}, signed with its key "
                          f"(flow run {started.flow_run_name}, trace {started.trace_id})")
            with console.status("waiting for the release (build, then dev -> staging -> prod) ..."):
                run = follow_release(client, started, approvals=approvals, keys=keys, timeout=timeout,
                                     ledger_url=info.ledger_url)
            report = release_status(client, started.release_id, ledger_url=info.ledger_url)
        table = Table("environment", "revision", "state", "approved by")
        outcome = {p.environment: p for p in report.plans}
        for env in config.path:
            plan = outcome.get(env)
            table.add_row(env, str(plan.revision) if plan else "-", plan.state.value if plan else "not reached",
                          ", ".join(plan.approvers) if plan else "-")
        console.print(table)
        ok = all(env in outcome and outcome[env].state.value == "Deployed" for env in config.path)
        console.print(f"release run:   {run.get('state_name')}")
        console.print(f"trace id:      {started.trace_id}")
        stopped = "" if keep_running else "  (stopped with the stack; `delivery up` brings it back, same history)"
        console.print(f"Prefect UI:    {run_link(started.flow_run_id, info.ui_url)}{stopped}")
        console.print(f"GitOps repo:   {info.gitops_repo}  (git --git-dir {info.gitops_repo} log --oneline)")
        console.print(f"ledger:        {info.ledger_url}")
        console.print(f"status:        delivery release status {started.release_id}")
    except (DeliveryError, NotFound) as exc:
        console.print(f"[red]demo failed[/red]: {exc}")
    finally:
        if keep_running:
            console.print("the stack keeps running; stop it with: delivery down")
        else:
            down()
            console.print("stack stopped (run `delivery up` to start it again)")
    return ok


def keep_by_default() -> bool:
    """Keep the stack up for a person to look at; stop it in CI or without a terminal."""
    return os.environ.get("CI", "").lower() not in ("1", "true", "yes") and sys.stdin.isatty()


def demo_full_command(
    keep: bool | None = typer.Option(
        None, "--keep/--stop", help="Leave the stack running at the end (default: keep on a terminal, stop in CI)."
    ),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for the release."),
) -> None:
    """Start the stack, release the sample app through the API with approvals, print the outcome."""
    if not run_full_demo(keep_running=keep_by_default() if keep is None else keep, timeout=timeout):
        raise typer.Exit(1)


__all__ = ["demo_approvals", "demo_full_command", "demo_request", "follow_release", "keep_by_default", "run_full_demo"]
