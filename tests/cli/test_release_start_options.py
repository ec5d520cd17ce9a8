"""``delivery release start`` turns its options into a request: files as artifacts, or ``--ref`` for what exists.

Refusals come from the request's own validation, before anything is sent (the API address here
answers nothing): one line naming the field, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.release import build_request

runner = CliRunner()
NOWHERE = "http://127.0.0.1:9/api"  # nothing listens: a refusal must not need the server


def test_ref_becomes_the_requests_source() -> None:
    body = build_request(file=None, app="sample-app", artifacts=[], requested_by="agent:release-manager",
                         target="dev", strategy=None, release_id=None, revision=None, ref="release/1.4")
    assert body == {"app": "sample-app", "requested_by": "agent:release-manager", "target_environment": "dev",
                    "source": {"ref": "release/1.4"}}


@pytest.mark.parametrize(("options", "field"), [
    (["--ref", "main", "--artifact", "{file}"], "artifacts, source.ref: give exactly one"),
    (["--ref", "../etc"], "source.ref"),
    ([], "artifacts, source.ref: give exactly one"),
])
def test_a_bad_source_is_refused_naming_the_field(tmp_path: Path, options: list[str], field: str) -> None:
    file = tmp_path / "note.txt"
    file.write_text("a note\n")
    args = ["release", "start", "--app", "sample-app", "--as", "agent:release-manager", "--api-url", NOWHERE,
            "--json", *[option.format(file=file) for option in options]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    error = json.loads(result.output)
    assert error["type"] == "InvalidInput" and field in error["error"], error
