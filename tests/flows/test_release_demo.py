"""``delivery demo``: a release from commit to merge on local repositories, printed for the user."""

from __future__ import annotations

import json

from git import Repo
from typer.testing import CliRunner


def test_demo_command_releases_the_tiny_app_and_prints_what_it_did(tmp_path, monkeypatch, prefect_server):
    from delivery.cli.main import app

    monkeypatch.setenv("DELIVERY_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("DELIVERY_GIT_HOST_BLOCK", raising=False)
    result = CliRunner().invoke(app, ["demo", "--json", "--release-id", "demo-test-1"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output[result.output.index("{"):])

    assert shown["branch"] == "release/demo-test-1"
    assert shown["trailers"]["Release-Id"] == ["demo-test-1"]
    assert shown["trailers"]["Trace-Id"] == [shown["trace_id"]]
    assert shown["checks"] == {"branch-policy": "passed", "policy-gate": "passed", "mergeable": "passed",
                               "unit-tests": "passed"}
    with Repo(shown["repository"]) as repo:
        merge = repo.commit("refs/heads/main")
        assert merge.hexsha == shown["merge_commit"]
        assert merge.parents[1].hexsha == shown["commit"]
        assert b"Hello from release demo-test-1" in (merge.tree / "hello/app.py").data_stream.read()
    assert str(tmp_path / "state") in shown["repository"]
