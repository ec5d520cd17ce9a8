"""``delivery release start|approve|reject|retry|cancel|status|trace``: releases through the Prefect API.

Every command prints for people (rich) or, with ``--json``, one JSON document for agents. Errors
exit non-zero with the message (``{"error": ..., "type": ...}`` in JSON mode): 2 for bad input,
1 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DEFAULT_DEPLOYMENT, DeliveryClient
from cli.errors_out import fail
from cli.release_status import release_status
from cli.stack_info import find_stack
from delivery.errors import DeliveryError, InvalidInput, NotFound
from delivery.ledger import Ledger
from delivery.models import Artifact, Decision
from delivery.timeline import TraceEvent
from tasks.timeline import release_timeline

release_app = typer.Typer(help="Start, approve, reject and follow releases.", no_args_is_help=True)
console = Console()

JsonOption = typer.Option(False, "--json", help="Print one JSON document (for agents).")
ApiOption = typer.Option(None, "--api-url", envvar="PREFECT_API_URL", help="The Prefect API (…/api).")
# the options a decision takes (approve and reject)
AsOption = typer.Option(None, "--as", envvar="DELIVERY_IDENTITY", help="Your identity.")
OnlyEnvironmentOption = typer.Option(None, "--environment", "-e", help="Only this environment.")
CommentOption = typer.Option("", "--comment", "-m")
WaitOption = typer.Option(0.0, "--wait", help="Seconds to wait for a promotion to pause.")


def _trace_events(api_url: str | None) -> Callable[[str], list[TraceEvent]] | None:
    """A reader of a trace's events through the API, or None without one."""
    if api_url is None:
        return None

    def read(trace_id: str) -> list[TraceEvent]:
        with DeliveryClient(api_url) as client:
            return client.trace_events(trace_id)

    return read


def _run(as_json: bool, action: Callable[[], Any], show: Callable[[Any], None]) -> None:
    try:
        result = action()
    except (DeliveryError, ValueError) as exc:
        raise fail(exc, as_json=as_json, console=console) from None
        return
    if as_json:
        typer.echo(json.dumps(_jsonable(result)))
    else:
        show(result)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {key: _jsonable(v) for key, v in value.items()}
    return value


def _artifact(spec: str, index: int, validator: str) -> Artifact:
    """``LOCAL[:REPO_PATH]`` -> a validated text artifact (id ``artifact-<n>``)."""
    local, _, repo_path = spec.partition(":")
    path = Path(local)
    if not path.is_file():
        raise InvalidInput(f"--artifact {spec!r}: no such file {local!r}")
    return Artifact.from_text(f"artifact-{index}", repo_path or path.name, path.read_text(), validator=validator)


def build_request(
    *,
    file: Path | None,
    app: str | None,
    artifacts: list[str],
    requested_by: str | None,
    target: str | None,
    strategy: str | None,
    release_id: str | None,
    revision: int | None,
    ref: str | None = None,
) -> dict[str, Any]:
    """Assemble the request from a JSON file and/or options (options win)."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--file {file}: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput(f"--file {file}: expected a JSON object (a ReleaseRequest)")
    if artifacts:
        body["artifacts"] = [
            _artifact(spec, n, "delivery-cli").model_dump(mode="json") for n, spec in enumerate(artifacts, 1)
        ]
    for key, value in {
        "app": app, "requested_by": requested_by, "target_environment": target, "release_id": release_id,
        "revision": revision,
    }.items():
        if value is not None:
            body[key] = value
    if strategy is not None:
        body["strategy"] = {"name": strategy}
    if ref is not None:
        body["source"] = {"ref": ref}
    return body


KeyOption = typer.Option(None, "--key", envvar="DELIVERY_SIGNING_KEY",
                         help="Your private key (OpenSSH Ed25519), where requests and decisions must be signed "
                              "(default: the keys folder).")


@release_app.command("start")
def start(
    file: Path | None = typer.Option(None, "--file", "-f", help="A ReleaseRequest as JSON."),
    app: str | None = typer.Option(None, "--app", help="Application (repository) name."),
    artifact: list[str] = typer.Option([], "--artifact", help="LOCAL_FILE[:REPO_PATH], repeatable."),
    ref: str | None = typer.Option(None, "--ref", help="Release this branch, tag or commit of the application "
                                   "repository instead of --artifact files."),
    requested_by: str | None = typer.Option(
        None, "--as", envvar="DELIVERY_IDENTITY", help="The planner, e.g. agent:release-manager."
    ),
    target: str | None = typer.Option(None, "--target", help="Stop the path at this environment."),
    strategy: str | None = typer.Option(None, "--strategy", help="rolling | blue_green | canary."),
    release_id: str | None = typer.Option(None, "--release-id", help="Default: generated."),
    revision: int | None = typer.Option(None, "--revision", help="Raise it to re-plan after a rejection."),
    deployment: str = typer.Option(DEFAULT_DEPLOYMENT, "--deployment"),
    key: Path | None = KeyOption,
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """Start a release (idempotent on release id and revision), signed by the planner; print its ids."""

    def action() -> Any:
        body = build_request(file=file, app=app, artifacts=artifact, requested_by=requested_by, target=target,
                             strategy=strategy, release_id=release_id, revision=revision, ref=ref)
        with DeliveryClient(api_url) as client:
            return client.start_release(body, deployment=deployment, key=key)

    def show(started: Any) -> None:
        verb = "started" if started.created else "already started"
        console.print(f"release [bold]{started.release_id}[/bold] (revision {started.revision}) {verb}")
        console.print(f"  trace id:    {started.trace_id}")
        console.print(f"  flow run id: {started.flow_run_id} ({started.flow_run_name})")
        if started.run_url:
            console.print(f"  run:         {started.run_url}", highlight=False, soft_wrap=True)
        if started.events_url:
            console.print(f"  events:      {started.events_url}", highlight=False, soft_wrap=True)

    _run(as_json, action, show)


def _decide(decision: Decision, release_id: str, approver: str | None, environment: str | None, comment: str,
            wait: float, key: Path | None, api_url: str | None, as_json: bool) -> None:
    def action() -> Any:
        if not approver:
            raise InvalidInput("--as: give your identity (e.g. user:alice), or set DELIVERY_IDENTITY")
        with DeliveryClient(api_url) as client:
            return client.decide(release_id, decision=decision, approver=approver, environment=environment,
                                 comment=comment, wait=wait, key=key)

    def show(results: Any) -> None:
        for result in results:
            verdict = {True: "counted", False: f"refused: {result.reason}", None: "sent (no verdict yet)"}
            console.print(f"{decision.value} by {approver} in {result.environment or result.flow_run_id}: "
                          f"{verdict[result.counted]}")

    _run(as_json, action, show)


def _decision_command(decision: Decision, verb: str) -> None:
    def command(
        release_id: str = typer.Argument(..., help="The release id."),
        approver: str | None = AsOption,
        environment: str | None = OnlyEnvironmentOption,
        comment: str = CommentOption,
        wait: float = WaitOption,
        key: Path | None = KeyOption,
        api_url: str | None = ApiOption,
        as_json: bool = JsonOption,
    ) -> None:
        _decide(decision, release_id, approver, environment, comment, wait, key, api_url, as_json)

    command.__doc__ = (f"{verb} the release's promotion waiting for a decision; exits non-zero with the reason "
                       "when refused.")
    release_app.command(decision.value)(command)


_decision_command(Decision.APPROVE, "Approve")
_decision_command(Decision.REJECT, "Reject")


def _operate(deployment: str, parameters: dict[str, Any], actor: str | None, api_url: str | None, as_json: bool,
             done: str) -> None:
    def action() -> Any:
        if not actor:
            raise InvalidInput("--as: give your identity (e.g. user:alice), or set DELIVERY_IDENTITY")
        with DeliveryClient(api_url) as client:
            return client.run_operation(deployment, {**parameters, "requested_by": actor})

    _run(as_json, action, lambda operation: console.print(f"{done} (run {operation.flow_run_name}: "
                                                           f"{operation.state})"))


@release_app.command("retry")
def retry(
    release_id: str = typer.Argument(..., help="The release id."),
    actor: str | None = AsOption,
    environment: str | None = typer.Option(None, "--env", "--environment", "-e", help="Only this environment."),
    reason: str = typer.Option("", "--reason", "-m", help="What was fixed."),
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """Promote a Failed environment again after a fix (Failed -> Promoting; the release run resumes)."""
    _operate("retry-release/retry-release", {"release_id": release_id, "environment": environment, "reason": reason},
             actor, api_url, as_json, f"release {release_id}: retrying")


@release_app.command("cancel")
def cancel(
    release_id: str = typer.Argument(..., help="The release id."),
    actor: str | None = AsOption,
    reason: str = typer.Option("", "--reason", "-m"),
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """End a waiting or stuck release: its run is cancelled and its open plans closed."""
    _operate("cancel-release/cancel-release", {"release_id": release_id, "reason": reason}, actor, api_url, as_json,
             f"release {release_id}: cancelled")


@release_app.command("status")
def status(
    release_id: str = typer.Argument(..., help="The release id."),
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """Show each environment's plan (ledger) and the release's flow runs (Prefect)."""

    target = find_stack(api_url)

    def action() -> Any:
        with DeliveryClient(api_url) as client:
            return release_status(client, release_id, ledger_url=target.ledger_url)

    def show(report: Any) -> None:
        console.print(f"release [bold]{report.release_id}[/bold]  trace {report.trace_id or '-'}")
        plans = Table("environment", "revision", "state", "approvers", "updated")
        for plan in report.plans:
            plans.add_row(plan.environment, str(plan.revision), plan.state.value, ", ".join(plan.approvers) or "-",
                          plan.updated_at.strftime("%Y-%m-%d %H:%M:%S"))
        if target.ledger_url is None:
            console.print("plans: no ledger found (set DELIVERY_LEDGER_URL or DELIVERY_HOME)")
        else:
            console.print(plans if report.plans else "no plan yet: the release has not reached promotion")
        runs = Table("flow run", "state", "environment")
        for run in report.runs:
            runs.add_row(run.name, run.state, run.environment or "-")
        console.print(runs)
        for plan in report.plans:
            for refused in plan.refused:
                console.print(f"{plan.environment}: {refused.decision} by {refused.approver} refused: {refused.reason}")
        if report.waiting_for_approval:
            console.print(f"waiting for approval: {', '.join(report.waiting_for_approval)}")
        if report.events_url:
            console.print(f"events: {report.events_url}", highlight=False, soft_wrap=True)

    _run(as_json, action, show)


@release_app.command("trace")
def trace(
    release_id: str = typer.Argument(..., help="The release id."),
    api_url: str | None = ApiOption,
    as_json: bool = JsonOption,
) -> None:
    """The release's whole story, oldest first: ledger decisions, Git commits and Prefect events on one timeline.

    The ledger and Git suffice: without the API, or once Prefect's events have expired, the
    timeline still holds every decision and commit (the events are then left out, and a note says so).
    """

    def action() -> Any:
        target = find_stack(api_url)
        entries, missing = release_timeline(release_id, ledger=Ledger(target.require_ledger(), create=False),
                                            repositories=_repositories(target),
                                            trace_events=_trace_events(target.api_url))
        if not entries:
            raise NotFound(f"release {release_id}: nothing in the ledger, Git or Prefect's events")
        return {"release_id": release_id, "entries": entries, "missing": missing}

    def show(result: Any) -> None:
        table = Table("at (UTC)", "source", "kind", "environment", "actor", "what")
        for entry in result["entries"]:
            table.add_row(entry.at.strftime("%Y-%m-%d %H:%M:%S"), entry.source, entry.kind, entry.environment or "-",
                          entry.actor or "-", entry.summary)
        console.print(table)
        for note in result["missing"]:
            console.print(f"[yellow]note[/yellow]: {note}", highlight=False)

    _run(as_json, action, show)


def _repositories(target: Any) -> dict[str, Path]:
    """The local repositories a release may have written: every application repository and the GitOps one."""
    info = target.info
    if info is None:
        return {}
    found = {path.name.removesuffix(".git"): path for path in sorted(Path(info.git_root).glob("*.git"))}
    found["gitops"] = Path(info.gitops_repo)
    return found


__all__ = ["build_request", "release_app"]
