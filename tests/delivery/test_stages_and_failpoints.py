"""The stage registry (one home for stage names) and the failpoints that kill a run at a stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from delivery import failpoints
from delivery.errors import TransientError
from delivery.stages import STAGES, markdown_table, stage_named

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_numbers_every_stage_of_the_release_once_in_order():
    assert [stage.number for stage in STAGES] == sorted(stage.number for stage in STAGES)
    assert {stage.number for stage in STAGES} == set(range(1, 15))
    assert len({stage.name for stage in STAGES}) == len(STAGES)
    assert [s.name for s in STAGES if not s.per_environment] == [
        "create_commit", "open_pull_request", "check_pull_request", "merge_pull_request", "generate_pipeline",
        "run_pipeline", "ingest_build_result"]
    assert stage_named("promote").label == "12-promote"
    with pytest.raises(KeyError, match="no stage 'deploy'; the stages are create_commit"):
        stage_named("deploy")


def test_the_readme_stage_table_is_the_registry():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_every_stage_task_is_registered_and_named_after_its_number():
    from prefect.tasks import Task

    import tasks.build
    import tasks.commit
    import tasks.health
    import tasks.infrastructure
    import tasks.manifest
    import tasks.pipeline
    import tasks.plan
    import tasks.promote
    import tasks.pull_request
    import tasks.rollback
    import tasks.sync  # noqa: F401 - imported for their stage tasks

    modules = (tasks.build, tasks.commit, tasks.health, tasks.infrastructure, tasks.manifest, tasks.pipeline,
               tasks.plan, tasks.promote, tasks.pull_request, tasks.rollback, tasks.sync)
    declared = {obj.name: obj for module in modules
                for obj in vars(module).values() if isinstance(obj, Task)}
    staged = {name: task for name, task in declared.items() if task.cache_key_fn is not None}
    assert set(staged) == {stage.name for stage in STAGES} - {"request_approval"}
    for name, task in staged.items():
        registered = stage_named(name)
        assert task.task_run_name(parameters={"environment": "staging"}) == (
            f"{registered.label}-staging" if registered.per_environment else registered.label)


ARMED_PROCESS = """
import sys
from delivery import failpoints
failpoints.hit("merge_pull_request")
print("survived", flush=True)
failpoints.hit("create_commit")
print("not reached", flush=True)
"""


def test_an_armed_failpoint_kills_its_process_once_and_is_disarmed_first(tmp_path):
    armed = tmp_path / "failpoints"
    failpoints.arm(armed, "create_commit", "promote")
    env = {**os.environ, failpoints.SETTING: str(armed)}
    done = subprocess.run([sys.executable, "-c", ARMED_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert done.stdout.split() == ["survived"]
    assert failpoints.armed(armed) == ["promote"]  # the one that fired is gone; a resumed run passes
    again = subprocess.run([sys.executable, "-c", ARMED_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "not reached" in again.stdout


def test_failpoints_are_inert_unless_armed_and_refuse_unknown_stages(tmp_path, monkeypatch):
    monkeypatch.delenv(failpoints.SETTING, raising=False)
    failpoints.hit("create_commit")  # nothing armed, nothing happens
    with pytest.raises(KeyError, match="no stage 'commit'"):
        failpoints.arm(tmp_path / "failpoints", "commit")


def test_a_transient_failpoint_raises_a_retryable_error_once_per_entry(tmp_path, monkeypatch):
    armed = tmp_path / "failpoints"
    failpoints.arm(armed, "promote:transient", "promote:transient")
    monkeypatch.setenv(failpoints.SETTING, str(armed))
    for _ in range(2):
        with pytest.raises(TransientError, match="failpoint promote:transient"):
            failpoints.hit("promote")
    failpoints.hit("promote")
    assert failpoints.armed(armed) == []


def test_a_worker_failpoint_refuses_to_kill_a_parent_that_is_not_a_worker(tmp_path):
    armed = tmp_path / "failpoints"
    failpoints.arm(armed, "promote:worker")
    env = {**os.environ, failpoints.SETTING: str(armed)}
    script = "from delivery import failpoints\nfailpoints.hit('promote')\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 1  # the test process, its parent, is alive to read this
    assert "is not a Prefect worker; refusing to kill it" in done.stderr
