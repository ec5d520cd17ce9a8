"""How every CLI command reports an error: one JSON document with --json, else one red line; exit 2 for bad input."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from delivery.errors import InvalidInput


def fail(exc: Exception, *, as_json: bool, console: Console) -> typer.Exit:
    """Print ``exc`` as the CLI does and return the exit to raise (2 for bad input, else 1)."""
    if as_json:
        typer.echo(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    else:
        console.print(f"[red]{type(exc).__name__}[/red]: {exc}", highlight=False)
    return typer.Exit(2 if isinstance(exc, InvalidInput) else 1)
