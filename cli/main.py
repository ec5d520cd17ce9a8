"""The ``delivery`` console command. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from cli.db import db_app
from cli.demo_full import demo_full_command
from cli.drift import drift_app
from cli.identity import identity_app
from cli.incidents import incidents_app
from cli.release import release_app
from cli.rollback import rollback_command
from cli.simulator import simulator
from cli.stack import down_command, up_command
from cli.status import status_command

app = typer.Typer(name="delivery", help="GitOps delivery orchestrator on Prefect.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """GitOps delivery: validated artifacts to running systems, with an audit trail."""


app.command("demo")(demo_full_command)
app.command("simulator")(simulator)
app.add_typer(db_app, name="db")
app.add_typer(drift_app, name="drift")
app.add_typer(identity_app, name="identity")
app.add_typer(incidents_app, name="incidents")
app.add_typer(release_app, name="release")
app.command("up")(up_command)
app.command("down")(down_command)
app.command("rollback")(rollback_command)
app.command("status")(status_command)


if __name__ == "__main__":  # pragma: no cover
    app()
