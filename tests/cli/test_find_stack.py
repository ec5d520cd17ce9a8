"""Reading commands find their stack from any directory, or say that none is running; reading creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.stack_info import StackInfo, find_stack
from delivery.errors import StackNotFound
from delivery.ledger import Ledger
from delivery.models import BuildResult, BuildStatus, RollingStrategy
from delivery.plan import ReleasePlan
from delivery.settings import find_state_dir, record_current_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
STACK_ENV = ("DELIVERY_HOME", "DELIVERY_LEDGER_URL", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _write_stack(home: Path, api_url: str, *, auth_file: str = "") -> StackInfo:
    home.mkdir(parents=True, exist_ok=True)
    info = StackInfo(home=str(home), api_url=api_url, ui_url=api_url.removesuffix("/api"), simulator_url="",
                     kubeconfig="", registry_url="", git_root="", gitops_repo="",
                     ledger_url=f"sqlite:///{home / 'ledger.db'}", auth_file=auth_file)
    (home / "stack.json").write_text(info.model_dump_json())
    return info


@pytest.fixture
def no_stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No stack named by the environment, and an empty per-user record folder; returns that folder."""
    for name in STACK_ENV:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    monkeypatch.setenv("DELIVERY_CONFIG_DIR", str(config))
    return config


# --------------------------------------------------------------------------- the discovery order


@pytest.mark.parametrize(
    ("env_home", "walk", "record", "expected"),
    [
        # DELIVERY_HOME wins over everything, even a folder with nothing in it yet
        ("named", "stack", "stack", ("named", "DELIVERY_HOME")),
        # then the nearest .delivery with stack.json walking up from the working directory
        (None, "stack", "stack", ("walk", "working directory")),
        # ... or with only a ledger (a stopped stack whose ledger still reads)
        (None, "ledger", "stack", ("walk", "working directory")),
        # a .delivery folder with neither is not a state folder: the per-user record is next
        (None, "empty", "stack", ("record", "last delivery up")),
        (None, None, "stack", ("record", "last delivery up")),
        # a record pointing at a folder that is gone (or empty) finds nothing
        (None, None, "gone", None),
        (None, None, None, None),
    ],
)
def test_discovery_order(tmp_path: Path, no_stack_env: Path, env_home: str | None, walk: str | None,
                         record: str | None, expected: tuple[str, str] | None) -> None:
    project = tmp_path / "project"
    cwd = project / "src" / "deep"
    cwd.mkdir(parents=True)
    folders = {"named": tmp_path / "named-home", "walk": project / ".delivery", "record": tmp_path / "recorded"}
    if env_home:
        os.environ["DELIVERY_HOME"] = str(folders["named"])
    if walk:
        folders["walk"].mkdir()
        if walk != "empty":
            (folders["walk"] / ("stack.json" if walk == "stack" else "ledger.db")).write_text("{}")
    if record:
        if record == "stack":
            folders["record"].mkdir()
            (folders["record"] / "stack.json").write_text("{}")
        record_current_stack(folders["record"])
    before = _files(tmp_path)

    found = find_state_dir(cwd)

    if expected is None:
        assert found is None
    else:
        assert found is not None and (found.path, found.found_by) == (folders[expected[0]].resolve(), expected[1])
    assert _files(tmp_path) == before, "looking created something"


def test_the_credential_goes_only_to_the_found_stack_s_own_api(tmp_path: Path, no_stack_env: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "project" / ".delivery"
    (home.parent / "sub").mkdir(parents=True)
    home.mkdir()
    (home / "api-auth").write_text("delivery:secret\n")
    _write_stack(home, "http://127.0.0.1:4200/api", auth_file=str(home / "api-auth"))
    target = find_stack(cwd=home.parent / "sub")
    assert target.api_url == "http://127.0.0.1:4200/api"
    assert target.ledger_url == f"sqlite:///{home / 'ledger.db'}"
    assert target.auth_string() == "delivery:secret"
    assert target.auth_string("http://elsewhere.test/api") is None  # found by walking up: not sent elsewhere
    assert find_stack("http://elsewhere.test/api", cwd=home.parent).auth_string() is None
    monkeypatch.setenv("DELIVERY_HOME", str(home))  # named explicitly: its credential is the caller's choice
    assert find_stack("http://elsewhere.test/api").auth_string() == "delivery:secret"


# --------------------------------------------------------------------------- no stack: a clear error, nothing created


def test_a_reading_ledger_creates_no_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    assert Ledger(url, create=False).latest_plans("rel-1") == []
    assert _files(tmp_path) == []


def test_release_status_without_a_stack_fails_clearly_and_creates_nothing(tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV and not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(REPO_ROOT), DELIVERY_CONFIG_DIR=str(tmp_path / "config"),
               PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    for args in (["release", "status", "rel-1"], ["release", "status", "rel-1", "--json"]):
        done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=where, env=env,
                              capture_output=True, text=True, timeout=120)
        output = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
        assert done.returncode != 0, output
        assert f"no delivery stack found from {where}: run `delivery up`, or set DELIVERY_HOME / PREFECT_API_URL" \
            in output, output
        assert "StackNotFound" in output
        assert _files(where) == [], "reading created files"
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("command", [["incidents", "list"], ["incidents", "show", "1"], ["drift", "status"],
                                     ["status"], ["release", "trace", "x"]])
def test_ledger_readers_without_a_stack_fail_clearly_and_create_nothing(tmp_path: Path, no_stack_env: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        command: list[str]) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    monkeypatch.chdir(where)
    result = runner.invoke(app, [*command, "--json"])
    assert result.exit_code != 0
    output = " ".join(result.output.split())  # rich wraps long lines
    assert f"no delivery stack found from {where.resolve()}" in output and "DELIVERY_LEDGER_URL" in output, output
    assert _files(where) == []
    assert not (where / ".delivery").exists() and not Path(os.environ["DELIVERY_CONFIG_DIR"]).exists()


def test_require_api_names_a_stopped_stack(tmp_path: Path, no_stack_env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cli.stack_info.profile_api_url", lambda: None)  # no Prefect profile names an API
    home = tmp_path / ".delivery"
    home.mkdir()
    (home / "ledger.db").write_text("")  # `delivery down` left the ledger, removed stack.json
    target = find_stack(cwd=tmp_path)
    assert target.ledger_url == f"sqlite:///{home / 'ledger.db'}"
    with pytest.raises(StackNotFound, match=r"is not running \(no stack.json\): run `delivery up`"):
        target.require_api()


# --------------------------------------------------------------------------- found from a subdirectory


def _planned(ledger_url: str, release_id: str) -> None:
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit="a" * 40, run_id="run-1")
    plan = ReleasePlan(release_id=release_id, trace_id="f" * 32, app="shop", revision=1, environment="dev",
                       strategy=RollingStrategy(), planned_by="agent:rm", build=build)
    Ledger(ledger_url).save_plan(plan)  # a writer (a flow) made the ledger


def test_status_from_a_subdirectory_reads_the_stack_s_ledger_and_creates_nothing(
        tmp_path: Path, no_stack_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "checkout" / ".delivery"
    info = _write_stack(home, "http://127.0.0.1:9/api")  # the overview reads the ledger only: no API call
    _planned(info.ledger_url, "rel-overview")  # no drift check ran
    sub = tmp_path / "checkout" / "docs" / "notes"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    before = _files(tmp_path)

    result = runner.invoke(app, ["status", "--json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["environment"], r["release_id"], r["sync_state"]) for r in rows] == [("dev", None, None)]
    assert _files(tmp_path) == before


def test_release_status_from_a_subdirectory_finds_the_stack(prefect_server: str, tmp_path: Path, no_stack_env: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "checkout" / ".delivery"
    info = _write_stack(home, prefect_server)
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit="a" * 40, run_id="run-1")
    plan = ReleasePlan(release_id="rel-found", trace_id="f" * 32, app="shop", revision=1, environment="dev",
                       strategy=RollingStrategy(), planned_by="agent:rm", build=build)
    Ledger(info.ledger_url).save_plan(plan)  # a writer (a flow) made the ledger
    sub = tmp_path / "checkout" / "docs" / "notes"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)

    result = runner.invoke(app, ["release", "status", "rel-found", "--json"])

    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["trace_id"] == "f" * 32
    assert [(p["environment"], p["state"]) for p in status["plans"]] == [("dev", "Planned")]
    assert _files(sub) == []
