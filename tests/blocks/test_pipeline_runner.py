"""LocalPipelineRunner against real git repositories and real processes."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from blocks.git_host import LocalGitHost
from blocks.pipeline_files import parse_pipeline, read_junit
from blocks.pipeline_runner import LocalPipelineRunner, RunOutcome
from delivery.errors import InvalidInput

JUNIT = (
    '<?xml version="1.0"?><testsuites><testsuite name="s" tests="4" failures="1" errors="0" skipped="1">'
    '<testcase name="a"/><testcase name="b"/><testcase name="c"><failure/></testcase>'
    '<testcase name="d"><skipped/></testcase></testsuite></testsuites>'
)


def make_repo(tmp_path: Path, pipeline: str, files: dict[str, str] | None = None) -> tuple[LocalGitHost, str]:
    host = LocalGitHost(root=str(tmp_path / "repos"))
    content = {"azure-pipelines.yml": textwrap.dedent(pipeline).encode()}
    content.update({path: text.encode() for path, text in (files or {}).items()})
    host.ensure_repository("app", initial_files=content)
    return host, host.resolve("app", "main")


def run(tmp_path: Path, host: LocalGitHost, commit: str, **runner_options):
    runner = LocalPipelineRunner(work_dir=str(tmp_path / "runs"), **runner_options)
    started: list[str] = []
    result = runner.run(repository="app", clone_url=host.clone_url("app"), commit=commit,
                        pipeline_path="azure-pipelines.yml", variables={"SHARED": str(tmp_path / "shared")},
                        run_name="rel-1", on_started=started.append)
    assert started == [result.run_id]
    return result


# Each publish job announces itself and then waits for the other's announcement: run one after
# the other, the first would wait in vain and fail, so success proves they ran at the same time.
RENDEZVOUS = (
    'touch "$SHARED/{me}"; for i in $(seq 200); do [ -e "$SHARED/{other}" ] && exit 0; sleep 0.05; done; exit 1'
)

PARALLEL = f"""
    variables:
      GREETING: hello
    stages:
    - stage: test
      jobs:
      - job: test
        steps:
        - script: mkdir -p out && printf '%s' '{JUNIT}' > out/junit.xml && echo "$GREETING from $BUILD_SOURCEVERSION"
          displayName: Run tests
        - task: PublishTestResults@2
          inputs: {{testResultsFiles: out/junit.xml}}
    - stage: publish
      jobs:
      - job: left
        steps:
        - script: '{RENDEZVOUS.format(me="left", other="right")}'
      - job: right
        steps:
        - script: '{RENDEZVOUS.format(me="right", other="left")}'
      - job: after
        dependsOn: [left, right]
        steps:
        - script: test -e "$SHARED/left" && test -e "$SHARED/right" && echo done
          displayName: After both
"""


def test_jobs_run_in_parallel_where_depends_on_allows(tmp_path):
    (tmp_path / "shared").mkdir()
    host, commit = make_repo(tmp_path, PARALLEL)
    result = run(tmp_path, host, commit)
    assert result.succeeded, result.reason
    assert result.commit == commit
    assert [job.name for job in result.jobs] == ["test", "left", "right", "after"]
    left, right, after, test = result.job("left"), result.job("right"), result.job("after"), result.job("test")
    assert max(left.started_at, right.started_at) < min(left.finished_at, right.finished_at)  # overlap
    assert test.finished_at <= min(left.started_at, right.started_at)  # the stage waits for the one before
    assert after.started_at >= max(left.finished_at, right.finished_at)  # job dependsOn
    log = Path(test.steps[0].log).read_text()
    assert f"hello from {commit}" in log  # YAML variables and predefined variables reach the step
    assert result.tests.model_dump() == {"total": 4, "passed": 2, "failed": 1, "skipped": 1}
    assert result.logs_url.startswith("file://") and Path(result.logs_url.removeprefix("file://")).is_dir()


def test_a_failing_step_fails_its_job_and_skips_what_depends_on_it(tmp_path):
    host, commit = make_repo(tmp_path, """
        jobs:
        - job: build
          steps:
          - script: echo before; exit 3
            displayName: Breaks
          - script: echo never
            displayName: Skipped
          - script: echo cleanup
            displayName: Cleanup
            condition: always()
        - job: deploy
          dependsOn: build
          steps:
          - script: echo deploying
    """)
    result = run(tmp_path, host, commit)
    assert not result.succeeded
    build = result.job("build")
    assert build.outcome is RunOutcome.FAILED
    assert [(s.name, s.outcome, s.exit_code) for s in build.steps] == [
        ("Breaks", RunOutcome.FAILED, 3), ("Skipped", RunOutcome.SKIPPED, None), ("Cleanup", RunOutcome.SUCCEEDED, 0)]
    assert "before" in Path(build.steps[0].log).read_text()
    assert result.job("deploy").outcome is RunOutcome.SKIPPED
    assert "'Breaks'" in result.reason and "exit code 3" in result.reason


def test_a_job_over_its_time_limit_is_stopped(tmp_path):
    host, commit = make_repo(tmp_path, """
        steps:
        - script: echo start; sleep 60
          displayName: Hangs
    """)
    began = time.monotonic()
    result = run(tmp_path, host, commit, job_timeout_seconds=1)
    assert time.monotonic() - began < 30
    assert not result.succeeded
    assert result.jobs[0].outcome is RunOutcome.TIMED_OUT
    assert "timed out after 1s" in result.reason
    assert "time limit" in Path(result.jobs[0].steps[0].log).read_text()


def test_a_step_cannot_work_outside_its_checkout(tmp_path):
    host, commit = make_repo(tmp_path, """
        steps:
        - script: touch escaped
          workingDirectory: ../..
    """)
    result = run(tmp_path, host, commit)
    assert not result.succeeded
    assert "leaves the checkout" in Path(result.jobs[0].steps[0].log).read_text()
    assert not list(tmp_path.rglob("escaped"))


def test_each_job_starts_from_a_clean_checkout_of_the_commit(tmp_path):
    host, commit = make_repo(tmp_path, """
        stages:
        - stage: one
          jobs:
          - job: dirty
            steps:
            - script: echo junk > junk.txt && echo changed >> tracked.txt
        - stage: two
          jobs:
          - job: clean
            steps:
            - script: test ! -e junk.txt && test "$(cat tracked.txt)" = original
    """, files={"tracked.txt": "original\n"})
    result = run(tmp_path, host, commit)
    assert result.succeeded, result.reason


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("stages:\n- stage: a\n  dependsOn: nope\n  jobs: []\n", "unknown stage 'nope'"),
        ("jobs:\n- job: a\n  dependsOn: ghost\n  steps: []\n", "unknown job 'ghost'"),
        ("jobs:\n- job: a\n  steps: []\n- job: a\n  steps: []\n", "unique"),
        ("trigger: none\n", "needs stages, jobs or steps"),
        ("jobs:\n- job: ../../escape\n  steps: []\n", "job name '../../escape' in stage __default is invalid"),
        ("jobs:\n- steps: []\n", "job name '' in stage __default is invalid"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_pipelines_the_runner_cannot_run_are_refused(pipeline, message):
    with pytest.raises(InvalidInput, match=message):
        parse_pipeline(pipeline)


def test_junit_counts_add_up_across_files(tmp_path):
    (tmp_path / "a.xml").write_text(JUNIT)
    (tmp_path / "b.xml").write_text('<testsuite tests="2" failures="0" errors="1" skipped="0"/>')
    counts = read_junit([tmp_path / "a.xml", tmp_path / "b.xml"])
    assert counts.model_dump() == {"total": 6, "passed": 3, "failed": 2, "skipped": 1}


def test_a_succeeded_run_of_the_same_release_and_commit_is_found_not_run_again(tmp_path):
    (tmp_path / "shared").mkdir()
    host, commit = make_repo(tmp_path, """
        jobs:
        - job: publish
          steps:
          - script: echo published >> "$SHARED/publishes"
    """)
    first = run(tmp_path, host, commit)
    runner = LocalPipelineRunner(work_dir=str(tmp_path / "runs"))
    started: list[str] = []
    again = runner.run(repository="app", clone_url=host.clone_url("app"), commit=commit,
                       pipeline_path="azure-pipelines.yml", variables={"SHARED": str(tmp_path / "shared")},
                       run_name="rel-1", on_started=started.append)
    assert first.succeeded and again == first and started == []  # a retried stage publishes nothing twice
    assert (tmp_path / "shared" / "publishes").read_text().splitlines() == ["published"]


def test_a_failed_run_is_run_again(tmp_path):
    host, commit = make_repo(tmp_path, """
        jobs:
        - job: build
          steps:
          - script: exit 1
    """)
    first, second = run(tmp_path, host, commit), run(tmp_path, host, commit)
    assert not first.succeeded and not second.succeeded and first.run_id != second.run_id
