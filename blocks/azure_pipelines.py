"""Azure Pipelines as a pipeline runner (REST api-version 7.1, over httpx).

Queue a run of the pipeline at the commit (``POST pipelines/{id}/runs``), poll it with growing
intervals until ``state`` is ``completed``, then read the build timeline (stages, jobs, tasks) and
the task logs, and map it all to :class:`~blocks.pipeline_runner.PipelineRunResult`. Requests that
fail with a 5xx, a 429 or a network error are retried with backoff; a 401/403 is not
(:class:`~delivery.errors.AuthenticationError`).
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import Field, SecretStr

from blocks.pipeline_files import read_published
from blocks.pipeline_runner import (
    JobResult,
    PipelineRunner,
    PipelineRunResult,
    RunOutcome,
    RunStarted,
    StepResult,
)
from delivery.errors import AuthenticationError, InvalidInput, NotFound, PermanentError, TransientError
from delivery.provider_timing import timed_provider

API_VERSION = "7.1"
_RESULTS = {
    "succeeded": RunOutcome.SUCCEEDED,
    "succeededWithIssues": RunOutcome.SUCCEEDED,
    "failed": RunOutcome.FAILED,
    "canceled": RunOutcome.CANCELED,
    "abandoned": RunOutcome.CANCELED,
    "skipped": RunOutcome.SKIPPED,
}


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@timed_provider
class AzurePipelinesRunner(PipelineRunner):
    """Runs the generated pipeline on Azure Pipelines.

    Attributes:
        organization: the Azure DevOps organization.
        project: the project holding the pipeline.
        pipeline_id: the pipeline defined on the repository's ``azure-pipelines.yml``.
        token: a personal access token (Build: read & execute).
        base_url: ``https://dev.azure.com`` (or an Azure DevOps Server collection URL).
        poll_seconds: first wait between polls; doubles up to ``max_poll_seconds``.
        run_timeout_seconds: how long to wait for the run to complete.
        request_retries: retries of one request on 5xx, 429 or network errors.
    """

    _block_type_name = "Azure Pipelines Runner"
    _block_type_slug = "azure-pipelines-runner"
    _description = "Queues the generated pipeline on Azure Pipelines and maps the run to a build result."

    organization: str = Field(min_length=1, description="The Azure DevOps organization")
    project: str = Field(min_length=1, description="The project holding the pipeline")
    pipeline_id: int = Field(ge=1, description="The pipeline defined on the repository's azure-pipelines.yml")
    token: SecretStr = Field(description="A personal access token (Build: read & execute)")
    base_url: str = Field(default="https://dev.azure.com",
                          description="https://dev.azure.com, or an Azure DevOps Server collection URL")
    poll_seconds: float = Field(default=5.0, gt=0, description="First wait between polls; doubles up to the maximum")
    max_poll_seconds: float = Field(default=30.0, gt=0, description="Longest wait between polls")
    run_timeout_seconds: float = Field(default=3600.0, gt=0, description="How long to wait for the run to complete")
    request_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request")
    request_retries: int = Field(default=4, ge=0, description="Retries of one request on 5xx, 429 or network errors")

    def _client(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        credentials = base64.b64encode(f":{self.token.get_secret_value()}".encode()).decode()
        return httpx.Client(
            base_url=f"{self.base_url.rstrip('/')}/{self.organization}/{self.project}/_apis/",
            headers={"Authorization": f"Basic {credentials}", "Accept": "application/json"},
            params={"api-version": API_VERSION},
            timeout=self.request_timeout_seconds,
            transport=transport,
        )

    def _request(self, client: httpx.Client, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
        """One call with retries on what may pass; errors translated into the product's hierarchy."""
        for attempt in range(self.request_retries + 1):
            last = attempt == self.request_retries
            try:
                response = client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
                    raise TransientError(f"{what}: Azure DevOps {kind} after {attempt + 1} attempts") from exc
                self._back_off(attempt)
                continue
            status = response.status_code
            if status in (401, 403):
                raise AuthenticationError(f"{what}: Azure DevOps refused the token ({status})")
            if status == 404:
                raise NotFound(f"{what}: not found (check organization, project and pipeline id)")
            if status == 429 or status >= 500:
                if last:
                    raise TransientError(f"{what}: Azure DevOps answered {status} after {attempt + 1} attempts")
                self._back_off(attempt, retry_after=response.headers.get("Retry-After"))
                continue
            if not response.is_success:
                raise PermanentError(f"{what}: Azure DevOps answered {status}: {response.text[:300]}")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _back_off(self, attempt: int, *, retry_after: str | None = None) -> None:
        delay = min(self.poll_seconds * (2**attempt), self.max_poll_seconds)
        if retry_after and retry_after.isdigit():
            delay = min(float(retry_after), self.max_poll_seconds)
        time.sleep(delay * (0.5 + random.random() / 2))

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
        branch: str = "refs/heads/main",
        transport: httpx.BaseTransport | None = None,
    ) -> PipelineRunResult:
        """Queue the pipeline at ``commit`` and wait for it; see :meth:`PipelineRunner.run`.

        ``repository``, ``clone_url`` and ``pipeline_path`` are defined on the Azure pipeline
        itself, and Azure clones with the pipeline's own service connection (``clone_env`` is not used);
        ``secret_variables`` go as secret queue-time variables (a script step reads one only where the pipeline maps it
        with ``env:``);
        ``branch`` is the ref the commit is on. ``transport`` is for tests.

        Raises:
            AuthenticationError: the token was refused.
            NotFound: no such organization, project or pipeline.
            TransientError: Azure DevOps kept failing, or the run outlived ``run_timeout_seconds``.
        """
        started = datetime.now(UTC)
        body = {
            "resources": {"repositories": {"self": {"refName": branch, "version": commit}}},
            "variables": {**{name: {"value": value, "isSecret": False} for name, value in (variables or {}).items()},
                          **{name: {"value": value.get_secret_value(), "isSecret": True}
                             for name, value in (secret_variables or {}).items()}},
        }
        with self._client(transport) as client:
            queued = self._request(client, "POST", f"pipelines/{self.pipeline_id}/runs", json=body,
                                   what=f"queue pipeline {self.pipeline_id}").json()
            run_id = int(queued["id"])
            if on_started is not None:
                on_started(str(run_id))
            run = self._wait(client, run_id, queued)
            jobs, logs = self._jobs(client, run_id)
        packages, images = [], []
        for job in jobs:
            for step in job.steps:
                if step.log and step.log in logs:
                    found_packages, found_images = read_published(logs[step.log])
                    packages += found_packages
                    images += found_images
        result = run.get("result", "unknown")
        failed = [job for job in jobs if job.outcome in (RunOutcome.FAILED, RunOutcome.CANCELED, RunOutcome.TIMED_OUT)]
        reason = "" if result == "succeeded" else (
            f"Azure run {run_id} ended {result}" + (": " + "; ".join(j.reason for j in failed) if failed else ""))
        web = f"{self.base_url.rstrip('/')}/{self.organization}/{self.project}/_build/results?buildId={run_id}"
        return PipelineRunResult(
            run_id=str(run_id), runner="azure-pipelines", commit=commit, succeeded=result == "succeeded",
            jobs=jobs, packages=packages, images=images, logs_url=web, reason=reason,
            started_at=_time(run.get("createdDate")) or started,
            finished_at=_time(run.get("finishedDate")) or datetime.now(UTC),
        )

    def preview(self, pipeline_yaml: str, *, branch: str = "refs/heads/main",
                transport: httpx.BaseTransport | None = None) -> str:
        """Have Azure Pipelines check a pipeline without running it (``previewRun``).

        Args:
            pipeline_yaml: the YAML to check, e.g. a freshly generated pipeline.
            branch: the ref whose templates and resources apply.
            transport: an httpx transport (tests).

        Returns:
            The ``finalYaml`` Azure expanded from it.

        Raises:
            InvalidInput: Azure refused the YAML (its message says why).
        """
        body = {"previewRun": True, "yamlOverride": pipeline_yaml,
                "resources": {"repositories": {"self": {"refName": branch}}}}
        with self._client(transport) as client:
            try:
                answer = self._request(client, "POST", f"pipelines/{self.pipeline_id}/runs", json=body,
                                       what=f"preview pipeline {self.pipeline_id}")
            except PermanentError as exc:
                if "answered 400" in str(exc):
                    raise InvalidInput(f"Azure Pipelines refused the YAML: {exc}") from exc
                raise
        return str(answer.json().get("finalYaml", ""))

    def _wait(self, client: httpx.Client, run_id: int, run: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.run_timeout_seconds
        interval = self.poll_seconds
        while run.get("state") != "completed":
            if time.monotonic() + interval > deadline:
                raise TransientError(
                    f"Azure run {run_id} still {run.get('state', 'unknown')} after {self.run_timeout_seconds:g}s")
            time.sleep(interval)
            interval = min(interval * 2, self.max_poll_seconds)
            run = self._request(client, "GET", f"pipelines/{self.pipeline_id}/runs/{run_id}",
                                what=f"read run {run_id}").json()
        return run

    def _jobs(self, client: httpx.Client, run_id: int) -> tuple[list[JobResult], dict[str, str]]:
        records = self._request(client, "GET", f"build/builds/{run_id}/timeline",
                                what=f"read the timeline of run {run_id}").json().get("records", [])
        logs: dict[str, str] = {}
        by_id = {record.get("id"): record for record in records}
        jobs = []
        for record in sorted((r for r in records if r.get("type") == "Job"), key=lambda r: r.get("order", 0)):
            stage = by_id.get(by_id.get(record.get("parentId"), {}).get("parentId"), {})
            steps = []
            for task in sorted((r for r in records if r.get("type") == "Task" and r.get("parentId") == record["id"]),
                               key=lambda r: r.get("order", 0)):
                log_url = None
                if (task.get("log") or {}).get("id") is not None:
                    log_id = task["log"]["id"]
                    log_url = f"build/builds/{run_id}/logs/{log_id}"
                    logs[log_url] = self._request(client, "GET", log_url, what=f"read log {log_id}",
                                                        headers={"Accept": "text/plain"}).text
                steps.append(StepResult(name=task.get("name", ""), outcome=_outcome(task),
                                        started_at=_time(task.get("startTime")),
                                        finished_at=_time(task.get("finishTime")), log=log_url))
            outcome = _outcome(record)
            reason = ""
            if outcome is not RunOutcome.SUCCEEDED:
                failed_steps = [s.name for s in steps if s.outcome is RunOutcome.FAILED]
                reason = f"job {record.get('name')} {outcome.value}" + (
                    f" in {', '.join(failed_steps)}" if failed_steps else "")
            jobs.append(JobResult(name=record.get("name", ""), stage=stage.get("name", ""), outcome=outcome,
                                  started_at=_time(record.get("startTime")),
                                  finished_at=_time(record.get("finishTime")), steps=steps, reason=reason))
        return jobs, logs


def _outcome(record: dict[str, Any]) -> RunOutcome:
    if record.get("state") != "completed":
        return RunOutcome.CANCELED
    return _RESULTS.get(str(record.get("result")), RunOutcome.FAILED)
