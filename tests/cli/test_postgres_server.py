"""The local PostgreSQL of `delivery up --database postgresql`: where its cluster lives, and bad options refused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.postgres_server import FALLBACK_ROOT, cluster_folder
from cli.stack import MAX_WORKERS, up
from delivery.errors import InvalidInput

runner = CliRunner()


def test_the_cluster_lives_in_the_state_folder_when_the_server_user_reaches_it() -> None:
    home = Path(tempfile.mkdtemp(prefix="delivery-reachable-"))
    try:
        os.chmod(home, 0o711)
        assert cluster_folder(home / "state") == home / "state" / "postgres"
    finally:
        os.rmdir(home)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_state_folder_the_server_user_cannot_reach_puts_the_cluster_in_var_tmp(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # pytest's folders are 0700 too: the postgres user cannot walk through

    folder = cluster_folder(private / "state")

    assert folder.parent == FALLBACK_ROOT and folder == cluster_folder(private / "state")  # stable per state folder
    assert folder != cluster_folder(tmp_path / "other")
    assert FALLBACK_ROOT.stat().st_mode & 0o777 == 0o711


@pytest.mark.parametrize(("options", "message"), [
    (["--database", "mysql"], "--database must be one of sqlite, postgresql, not 'mysql'"),
    (["--workers", "0"], f"--workers must be between 1 and {MAX_WORKERS}, not 0"),
    (["--workers", str(MAX_WORKERS + 1)], f"--workers must be between 1 and {MAX_WORKERS}"),
])
def test_up_refuses_bad_options_before_starting_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         options: list[str], message: str) -> None:
    monkeypatch.setenv("DELIVERY_HOME", str(tmp_path / "state"))

    result = runner.invoke(app, ["up", *options])

    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "state").exists()


def test_up_refuses_to_restart_a_running_stack_another_way(tmp_path: Path) -> None:
    from cli.processes import spawn
    from cli.stack_info import StackInfo, stack_file

    home = tmp_path / "state"
    sleeper = spawn("sleeper", ["sleep", "600"], env={"PATH": "/usr/bin:/bin"}, logs=tmp_path, marker="sleep",
                    cwd=tmp_path)
    home.mkdir()
    stack_file(home).write_text(StackInfo(
        home=str(home), api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", simulator_url="",
        kubeconfig="", registry_url="", git_root="", gitops_repo="", ledger_url="sqlite://",
        processes=[sleeper]).model_dump_json())
    try:
        with pytest.raises(InvalidInput, match="already up with --database sqlite --workers 1: `delivery down` first"):
            up(home=home, database="postgresql", say=lambda _line: None)
        assert up(home=home, say=lambda _line: None).database == "sqlite"  # no option: the running stack as it is
    finally:
        os.kill(sleeper.pid, 9)
