"""``delivery status``: the environments overview from the ledger, as a table and as JSON."""

from __future__ import annotations

import json

from support.overview import PATH, deploy, drift_check, fail
from typer.testing import CliRunner

from cli.main import app
from cli.status import read_overview

runner = CliRunner()


def history(ledger) -> None:
    deploy(ledger, "rel-1", "dev", approvers=("user:alice",))
    deploy(ledger, "rel-1", "staging", approvers=("user:alice", "user:bob"))
    fail(ledger, "rel-2", "staging", approvers=("user:carol",))
    drift_check(ledger, "dev", found=0)
    drift_check(ledger, "staging", found=3)


def test_status_json_lists_each_environment_and_app_with_what_runs(ledger):
    history(ledger)

    result = runner.invoke(app, ["status", "--path", ",".join(PATH), "--json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["environment"], r["app"], r["release_id"], r["health"], r["sync_state"]) for r in rows] == [
        ("dev", "shop", "rel-1", "Healthy", "Synced"),
        ("staging", "shop", "rel-1", "Healthy", "OutOfSync"),
        ("prod", None, None, "Missing", None),
    ]
    staging = rows[1]
    assert staging["approved_by"] == ["user:alice", "user:bob"] and staging["since"] and staging["last_check"]
    assert (staging["last_attempt"]["release_id"], staging["last_attempt"]["state"]) == ("rel-2", "Failed")
    assert rows[2]["deployed"] is False


def test_status_table_shows_the_same_rows_for_people(ledger):
    history(ledger)

    result = runner.invoke(app, ["status", "--path", "dev,staging,prod"], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert "rel-1" in lines["dev"] and "Synced" in lines["dev"] and "user:alice" in lines["dev"]
    assert "Drifted" in lines["staging"] and "rel-2 r1 Failed (rolled back)" in lines["staging"]
    assert "not deployed" in lines["prod"] and "never checked" in lines["prod"]


def test_status_without_a_path_shows_what_the_ledger_knows_and_read_overview_gives_the_same(ledger):
    history(ledger)

    result = runner.invoke(app, ["status", "--json"])

    assert [r["environment"] for r in json.loads(result.output)] == ["dev", "staging"]
    rows = read_overview(path=PATH, ledger_url=ledger.url)
    assert [r.model_dump(mode="json") for r in rows] == json.loads(
        runner.invoke(app, ["status", "--json", "--path", ",".join(PATH)]).output)


def test_status_on_an_empty_ledger_and_a_bad_path(ledger):
    empty = runner.invoke(app, ["status"])
    assert empty.exit_code == 0 and "no environment yet" in empty.output

    bad = runner.invoke(app, ["status", "--path", " , ", "--json"])
    assert bad.exit_code == 2 and json.loads(bad.output)["type"] == "InvalidInput"
