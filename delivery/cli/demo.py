"""``delivery demo``: a release taken from commit to merge on local repositories.

It sets up a state folder (``DELIVERY_HOME`` or ``.delivery/``), a bare application repository
seeded with a tiny app, saves the ``LocalGitHost`` block, runs a release through commit, pull
request, checks and merge, and prints what it did. Without ``PREFECT_API_URL`` Prefect runs in its
ephemeral mode (a temporary server for this process).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer

from delivery.settings import state_dir

DEMO_APP = "hello"
TINY_APP: dict[str, bytes] = {
    "README.md": b"# hello\n\nA tiny service released by the gitops-delivery demo.\n",
    "hello/__init__.py": b"",
    "hello/app.py": b'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n',
    "tests/__init__.py": b"",
    "tests/test_app.py": (
        b"import unittest\n\nfrom hello.app import greet\n\n\n"
        b"class GreetTest(unittest.TestCase):\n"
        b"    def test_greet(self):\n"
        b'        self.assertTrue(greet("demo").startswith("Hello"))\n'
    ),
}


def unit_test_command() -> str:
    """The check command the demo configures: the app's unit tests with this interpreter."""
    return f"{sys.executable} -m unittest discover -s tests -t . -q"


def demo_request(release_id: str | None = None, *, greeting: str = "Hello", app: str = DEMO_APP) -> Any:
    """A release request changing the tiny app's greeting, with its digest computed."""
    from delivery.models import Artifact, ArtifactValidation, ReleaseRequest

    text = f'def greet(name: str) -> str:\n    return f"{greeting}, {{name}}!"\n'
    artifact = Artifact(
        artifact_id="hello-app-py",
        path="hello/app.py",
        content=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        validation=ArtifactValidation(passed=True, validator="demo-linter"),
    )
    fields: dict[str, Any] = {"app": app, "artifacts": [artifact], "requested_by": "agent:demo"}
    if release_id:
        fields["release_id"] = release_id
    return ReleaseRequest(**fields)


def run_demo(*, release_id: str | None = None) -> dict[str, Any]:
    """Set up the local state and run one release from commit to merge; return what it did."""
    from blocks.git_host import CheckCommand, LocalGitHost
    from flows.release import release

    home = state_dir()
    repos = home / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    host = LocalGitHost(root=str(repos), check_commands=[CheckCommand(name="unit-tests", run=unit_test_command())])
    host.ensure_repository(DEMO_APP, initial_files=TINY_APP)
    host.save("default", overwrite=True)
    release_id = release_id or f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    summary = release(demo_request(release_id, greeting="Hello from release " + release_id))
    return {
        "state_dir": str(home),
        "repository": host.clone_url(DEMO_APP),
        "release_id": summary.release_id,
        "trace_id": summary.trace_id,
        "branch": summary.branch,
        "commit": summary.commit.sha,
        "commit_created": summary.commit.created,
        "trailers": summary.commit.trailers,
        "pull_request": summary.pull_request.number,
        "pull_request_record": summary.pull_request.url,
        "checks": {c.name: c.status.value for c in summary.pull_request.checks},
        "merge_commit": summary.merge.merge_sha,
        "merge_created": summary.merge.created,
    }


@contextmanager
def _ephemeral_prefect() -> Iterator[None]:
    """Without a configured API, give Prefect's temporary server time for its first migrations."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield
        return
    updates = {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300, PREFECT_SERVER_ANALYTICS_ENABLED: False}
    with temporary_settings(updates=updates):
        yield


def demo(
    release_id: str = typer.Option(None, "--release-id", help="Default: demo-<timestamp>"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Release a change of a tiny app from commit to merge on local repositories."""
    from rich.console import Console

    from delivery.errors import DeliveryError

    console = Console()
    try:
        with _ephemeral_prefect():
            result = run_demo(release_id=release_id)
    except DeliveryError as exc:
        console.print(f"[red]release refused or failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print(f"[bold]release {result['release_id']}[/bold]  trace {result['trace_id']}")
    console.print(f"  state folder   {result['state_dir']}")
    console.print(f"  repository     {result['repository']}")
    console.print(f"  branch         {result['branch']}")
    console.print(f"  commit         {result['commit']} (created={result['commit_created']})")
    for key, values in result["trailers"].items():
        for value in values:
            console.print(f"    {key}: {value}")
    console.print(f"  pull request   #{result['pull_request']}  {result['pull_request_record']}")
    for name, status in result["checks"].items():
        console.print(f"    check {name}: {status}")
    console.print(f"  merge commit   {result['merge_commit']} (created={result['merge_created']})")
