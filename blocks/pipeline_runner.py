"""The pipeline runner blocks: run a generated Azure Pipelines YAML and report what it did.

:class:`LocalPipelineRunner` is the embedded default. It reads the pipeline file from a clean
checkout of the commit, runs each job's ``script`` steps with bash in the job's own clean checkout
(as separate agents would), runs jobs in parallel where ``dependsOn`` allows, keeps one log file
per step, enforces each job's ``timeoutInMinutes``, and lets exit codes decide. The
``PublishTestResults@2`` task reads the JUnit XML the steps wrote; lines starting with
``##delivery[published]`` in step logs report published packages and images.
:class:`~blocks.azure_pipelines.AzurePipelinesRunner` maps an Azure run to the same result.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.pipeline_files import TEST_RESULTS_TASK, PipelineJob, parse_pipeline, read_junit, read_published
from delivery.errors import InvalidInput, NotFound, TransientError
from delivery.models import Model, PublishedImage, PublishedPackage, TestCounts
from delivery.provider_timing import timed_provider
from delivery.settings import state_dir


class RunOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


class StepResult(Model):
    """One step of a job."""

    name: str
    outcome: RunOutcome
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log: str | None = Field(default=None, description="Where the step's full log is (path or URL)")


class JobResult(Model):
    """One job of the pipeline."""

    name: str
    stage: str
    outcome: RunOutcome
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepResult] = Field(default_factory=list)
    reason: str = ""


class PipelineRunResult(Model):
    """What a pipeline run did, whatever ran it."""

    run_id: str
    runner: str
    commit: str
    succeeded: bool
    jobs: list[JobResult] = Field(default_factory=list)
    tests: TestCounts = Field(default_factory=TestCounts)
    packages: list[PublishedPackage] = Field(default_factory=list)
    images: list[PublishedImage] = Field(default_factory=list)
    logs_url: str | None = None
    reason: str = ""
    started_at: datetime
    finished_at: datetime

    def job(self, name: str) -> JobResult:
        """The job called ``name``."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


RunStarted = Callable[[str], None]


class PipelineRunner(Block):
    """Base of pipeline runners."""

    _block_type_name = "Pipeline Runner"

    def run(
        self,
        *,
        repository: str,
        clone_url: str,
        commit: str,
        pipeline_path: str,
        variables: Mapping[str, str] | None = None,
        run_name: str = "",
        on_started: RunStarted | None = None,
        clone_env: Mapping[str, str] | None = None,
        secret_variables: Mapping[str, SecretStr] | None = None,
    ) -> PipelineRunResult:  # pragma: no cover - interface
        """Run the pipeline at ``commit`` to completion.

        Args:
            repository: the application repository.
            clone_url: where a runner that clones finds it.
            clone_env: what its git needs in the environment to clone it (``GitHost.clone_env``: credentials).
            secret_variables: the feed's and registry's credentials (``pipeline_secrets``): in the jobs'
                environment, never in the run's record, and masked in its logs.
            commit: the commit to build.
            pipeline_path: the pipeline file in the repository.
            variables: queue-time variables (feed and registry locations).
            run_name: a label for the run, e.g. the release id.
            on_started: called with the run id once the run is queued.

        Returns:
            The run's result; a failed run is a result, not an exception.
        """
        raise NotImplementedError


def _env_name(variable: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", variable).upper()


def _now() -> datetime:
    return datetime.now(UTC)



def _mask(log: Path, values: Iterable[str]) -> None:
    """Replace the secret variables' values in a step's log by ``***``, as Azure Pipelines does."""
    values = [value for value in values if value]
    if not values or not log.is_file():
        return
    text = log.read_bytes()
    masked = text
    for value in values:
        masked = masked.replace(value.encode(), b"***")
    if masked != text:
        log.write_bytes(masked)

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "step"


# ------------------------------------------------------------------------------------ local runner


@timed_provider
class LocalPipelineRunner(PipelineRunner):
    """Runs the pipeline's script steps on this machine.

    Attributes:
        work_dir: where runs keep checkouts and logs; default ``<state dir>/pipeline-runs``.
        max_parallel_jobs: jobs running at once.
        job_timeout_seconds: overrides every job's ``timeoutInMinutes`` (tests, slow machines).
        keep_checkouts: keep each job's checkout after the run (logs are always kept).
    """

    _block_type_name = "Local Pipeline Runner"
    _block_type_slug = "local-pipeline-runner"
    _description = "Runs generated Azure Pipelines YAML locally: script steps, parallel jobs, per-step logs."

    work_dir: str | None = Field(default=None, description="Where runs keep checkouts and logs; default "
                                                          "<state folder>/pipeline-runs")
    max_parallel_jobs: int = Field(default=2, ge=1, description="Jobs running at once")
    job_timeout_seconds: float | None = Field(default=None, gt=0,
                                              description="Overrides every job's timeoutInMinutes")
    keep_checkouts: bool = Field(default=False, description="Keep each job's checkout after the run (logs are "
                                                           "always kept)")

    def run(
        self,
        *,
        repository: str,
        clone_url: str,
        commit: str,
        pipeline_path: str,
        variables: Mapping[str, str] | None = None,
        run_name: str = "",
        on_started: RunStarted | None = None,
        clone_env: Mapping[str, str] | None = None,
        secret_variables: Mapping[str, SecretStr] | None = None,
    ) -> PipelineRunResult:
        """Run the pipeline at ``commit``; see :meth:`PipelineRunner.run`.

        A succeeded run of the same ``run_name`` at the same commit is returned instead of running
        (and publishing) again: a stage retried, resumed or replayed after the run finished finds it.
        """
        runs = Path(self.work_dir or state_dir() / "pipeline-runs")
        if run_name and (finished := self._succeeded_run(runs, run_name, commit)) is not None:
            return finished
        started = _now()
        run_id = f"local-{started:%Y%m%dT%H%M%S}-{_slug(run_name) + '-' if run_name else ''}{secrets.token_hex(3)}"
        run_dir = runs / run_id
        run_dir.mkdir(parents=True)
        try:
            source = self._checkout(clone_url, commit, run_dir / "source", clone_env)
            pipeline_file = source / pipeline_path
            if not pipeline_file.is_file():
                raise InvalidInput(f"pipeline file {pipeline_path!r} is not in {repository} at {commit[:12]}")
            jobs, yaml_variables = parse_pipeline(pipeline_file.read_bytes())
        finally:
            shutil.rmtree(run_dir / "source", ignore_errors=True)
        if on_started is not None:
            on_started(run_id)
        env_vars = {**yaml_variables, **(variables or {})}
        secret_env = {_env_name(k): v.get_secret_value() for k, v in (secret_variables or {}).items()}
        results = self._schedule(jobs, lambda job: self._run_job(job, clone_url, commit, run_dir, env_vars, run_id,
                                                                        clone_env, secret_env))
        ordered = [results[job.name] for job in jobs]
        return self._summarise(run_id, commit, ordered, run_dir, started)

    @staticmethod
    def _succeeded_run(runs: Path, run_name: str, commit: str) -> PipelineRunResult | None:
        for result_file in sorted(runs.glob(f"local-*-{_slug(run_name)}-*/result.json")):
            result = PipelineRunResult.model_validate_json(result_file.read_text())
            if result.succeeded and result.commit == commit:
                return result
        return None

    # -------------------------------------------------------------- scheduling

    def _schedule(self, jobs: list[PipelineJob], run_job: Callable[[PipelineJob], JobResult]) -> dict[str, JobResult]:
        results: dict[str, JobResult] = {}
        pending = {job.name: job for job in jobs}
        running: dict[Future[JobResult], str] = {}
        with ThreadPoolExecutor(max_workers=self.max_parallel_jobs, thread_name_prefix="pipeline-job") as pool:
            while pending or running:
                progressed = False
                for name, job in list(pending.items()):
                    if not all(dep in results for dep in job.depends_on):
                        continue
                    del pending[name]
                    progressed = True
                    failed = [dep for dep in job.depends_on if results[dep].outcome is not RunOutcome.SUCCEEDED]
                    if failed:
                        results[name] = JobResult(name=name, stage=job.stage, outcome=RunOutcome.SKIPPED,
                                                  reason=f"skipped: {', '.join(failed)} did not succeed")
                    else:
                        running[pool.submit(run_job, job)] = name
                if not running:
                    if pending and not progressed:  # only a dependency cycle leaves jobs that can never start
                        for name, job in pending.items():
                            results[name] = JobResult(name=name, stage=job.stage, outcome=RunOutcome.FAILED,
                                                      reason=f"dependency cycle through {', '.join(job.depends_on)}")
                        pending.clear()
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
        return results

    # -------------------------------------------------------------- one job

    def _checkout(self, clone_url: str, commit: str, target: Path, clone_env: Mapping[str, str] | None) -> Path:
        # the credentials only for the clone: the job's own commands never see them
        env = {**os.environ, **clone_env} if clone_env else None
        try:
            subprocess.run(["git", "clone", "--quiet", "--no-checkout", clone_url, str(target)],
                           check=True, capture_output=True, text=True, timeout=300, env=env)
            subprocess.run(["git", "-C", str(target), "checkout", "--quiet", "--detach", commit],
                           check=True, capture_output=True, text=True, timeout=300)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or "").strip()[-500:]
            if "did not match" in detail or "reference is not a tree" in detail or "unable to read tree" in detail:
                raise NotFound(f"commit {commit[:12]} is not in {clone_url}") from exc
            raise TransientError(f"checkout of {commit[:12]} failed: {detail}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"checkout of {commit[:12]} timed out") from exc
        return target

    def _job_env(self, job: PipelineJob, checkout: Path, staging: Path, commit: str, run_id: str,
                 variables: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update({_env_name(k): v for k, v in variables.items()})
        env.update({
            "BUILD_SOURCEVERSION": commit,
            "BUILD_SOURCESDIRECTORY": str(checkout),
            "SYSTEM_DEFAULTWORKINGDIRECTORY": str(checkout),
            "BUILD_ARTIFACTSTAGINGDIRECTORY": str(staging),
            "AGENT_TEMPDIRECTORY": str(staging.parent / "tmp"),
            "AGENT_JOBNAME": job.name,
            "SYSTEM_STAGENAME": job.stage,
            "BUILD_BUILDID": run_id,
        })
        return env

    def _run_job(self, job: PipelineJob, clone_url: str, commit: str, run_dir: Path,
                 variables: Mapping[str, str], run_id: str, clone_env: Mapping[str, str] | None,
                 secret_env: Mapping[str, str]) -> JobResult:
        started = _now()
        job_dir = run_dir / "jobs" / job.name
        staging = job_dir / "staging"
        (job_dir / "tmp").mkdir(parents=True)
        staging.mkdir()
        logs = run_dir / "logs" / job.name
        logs.mkdir(parents=True)
        try:
            checkout = self._checkout(clone_url, commit, job_dir / "s", clone_env)
        except (TransientError, NotFound) as exc:
            return JobResult(name=job.name, stage=job.stage, outcome=RunOutcome.FAILED, started_at=started,
                             finished_at=_now(), reason=str(exc))
        env = {**self._job_env(job, checkout, staging, commit, run_id, variables), **secret_env}
        budget = self.job_timeout_seconds or job.timeout_minutes * 60
        deadline = time.monotonic() + budget
        steps: list[StepResult] = []
        outcome, reason = RunOutcome.SUCCEEDED, ""
        for index, step in enumerate(job.steps, start=1):
            name = str(step.get("displayName") or step.get("task") or step.get("script", "")[:40])
            condition = str(step.get("condition", "succeeded()")).replace(" ", "")
            runs = condition in ("always()", "succeededOrFailed()") or outcome is RunOutcome.SUCCEEDED
            if "checkout" in step or not runs:
                steps.append(StepResult(name=name, outcome=RunOutcome.SKIPPED))
                continue
            log = logs / f"{index:02d}-{_slug(name)}.log"
            if "script" in step or "bash" in step:
                result = self._run_script(step, name, checkout, env, log, deadline)
            elif step.get("task") == TEST_RESULTS_TASK:
                result = self._publish_test_results(step, name, checkout, log)
            else:
                log.write_text(f"step {name!r}: tasks other than {TEST_RESULTS_TASK} run only on Azure Pipelines\n")
                result = StepResult(name=name, outcome=RunOutcome.SKIPPED, log=str(log))
            _mask(log, secret_env.values())
            steps.append(result)
            if result.outcome is RunOutcome.TIMED_OUT:
                outcome, reason = RunOutcome.TIMED_OUT, f"job {job.name} timed out after {budget:g}s in step {name!r}"
            elif result.outcome is RunOutcome.FAILED and outcome is RunOutcome.SUCCEEDED:
                outcome = RunOutcome.FAILED
                reason = f"step {name!r} of job {job.name} failed (exit code {result.exit_code}); log: {log}"
        if not self.keep_checkouts:
            shutil.rmtree(checkout, ignore_errors=True)
        return JobResult(name=job.name, stage=job.stage, outcome=outcome, started_at=started, finished_at=_now(),
                         steps=steps, reason=reason)

    def _run_script(self, step: dict[str, Any], name: str, checkout: Path, env: dict[str, str], log: Path,
                    deadline: float) -> StepResult:
        directory = checkout / str(step.get("workingDirectory") or ".")
        if not directory.resolve().is_relative_to(checkout.resolve()):
            log.write_text(f"workingDirectory {step.get('workingDirectory')!r} leaves the checkout\n")
            return StepResult(name=name, outcome=RunOutcome.FAILED, log=str(log))
        script = str(step.get("script") or step.get("bash"))
        step_env = {**env, **{k: str(v) for k, v in (step.get("env") or {}).items()}}
        started = _now()
        with open(log, "wb") as out:
            process = subprocess.Popen(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
                                       cwd=directory, env=step_env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                _kill_group(process)
                out.write(b"\n##[error] the job's time limit was reached; the step was stopped\n")
                return StepResult(name=name, outcome=RunOutcome.TIMED_OUT, started_at=started, finished_at=_now(),
                                  log=str(log))
        outcome = RunOutcome.SUCCEEDED if code == 0 else RunOutcome.FAILED
        return StepResult(name=name, outcome=outcome, exit_code=code, started_at=started, finished_at=_now(),
                          log=str(log))

    def _publish_test_results(self, step: dict[str, Any], name: str, checkout: Path, log: Path) -> StepResult:
        started = _now()
        inputs = step.get("inputs") or {}
        pattern = str(inputs.get("testResultsFiles") or "**/TEST-*.xml")
        files = sorted(Path(p) for p in glob.glob(str(checkout / pattern), recursive=True)
                       if Path(p).resolve().is_relative_to(checkout.resolve()))
        if not files:
            log.write_text(f"no test results match {pattern!r}\n")
            return StepResult(name=name, outcome=RunOutcome.SUCCEEDED, started_at=started, finished_at=_now(),
                              log=str(log))
        counts = read_junit(files)
        lines = [f"{f.relative_to(checkout)}" for f in files]
        log.write_text("\n".join(lines) + f"\n##delivery[tests]{counts.model_dump_json()}\n")
        fail = bool(inputs.get("failTaskOnFailedTests")) and counts.failed > 0
        return StepResult(name=name, outcome=RunOutcome.FAILED if fail else RunOutcome.SUCCEEDED,
                          exit_code=1 if fail else 0, started_at=started, finished_at=_now(), log=str(log))

    # -------------------------------------------------------------- the summary

    def _summarise(self, run_id: str, commit: str, jobs: list[JobResult], run_dir: Path,
                   started: datetime) -> PipelineRunResult:
        tests = TestCounts()
        packages: list[PublishedPackage] = []
        images: list[PublishedImage] = []
        for job in jobs:
            for step in job.steps:
                if not step.log or not Path(step.log).exists():
                    continue
                text = Path(step.log).read_text(errors="replace")
                found_packages, found_images = read_published(text)
                packages += found_packages
                images += found_images
                for line in text.splitlines():
                    if line.startswith("##delivery[tests]"):
                        counts = TestCounts.model_validate_json(line.removeprefix("##delivery[tests]"))
                        tests = TestCounts(**{k: getattr(tests, k) + getattr(counts, k)
                                              for k in TestCounts.model_fields})
        failed = [job for job in jobs if job.outcome is not RunOutcome.SUCCEEDED]
        reason = "; ".join(job.reason for job in failed if job.reason)
        result = PipelineRunResult(run_id=run_id, runner="local", commit=commit, succeeded=not failed, jobs=jobs,
                                   tests=tests, packages=packages, images=images, logs_url=(run_dir / "logs").as_uri(),
                                   reason=reason, started_at=started, finished_at=_now())
        (run_dir / "result.json").write_text(result.model_dump_json(indent=2))
        return result


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a step and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue

