"""AzurePipelinesRunner against httpx.MockTransport handlers speaking the Azure DevOps 7.1 shapes."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from blocks.azure_pipelines import AzurePipelinesRunner
from blocks.pipeline_runner import RunOutcome
from delivery.errors import AuthenticationError, TransientError

PAT = "s3cret-pat"
BASE = "https://dev.azure.com/contoso/shop/_apis/"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "c0ffee" * 6 + "abcd"


def runner(**options) -> AzurePipelinesRunner:
    settings = {"organization": "contoso", "project": "shop", "pipeline_id": 7, "token": PAT,
                "poll_seconds": 0.01, "max_poll_seconds": 0.02, "request_retries": 2}
    return AzurePipelinesRunner(**{**settings, **options})


def timeline(job_result: str = "succeeded") -> dict:
    def record(id_, type_, name, parent, result, log=None, order=1):
        return {"id": id_, "type": type_, "name": name, "parentId": parent, "state": "completed",
                "result": result, "order": order, "startTime": "2026-11-27T10:00:01Z",
                "finishTime": "2026-11-27T10:00:09Z", "log": {"id": log} if log else None}

    return {"records": [
        record("s1", "Stage", "test", None, job_result),
        record("p1", "Phase", "test", "s1", job_result),
        record("j1", "Job", "test", "p1", job_result),
        record("t1", "Task", "Run tests", "j1", job_result, log=11),
        record("s2", "Stage", "publish", None, "succeeded" if job_result == "succeeded" else "skipped"),
        record("p2", "Phase", "publish_image", "s2", "succeeded"),
        record("j2", "Job", "publish_image", "p2", "succeeded", order=2),
        record("t2", "Task", "Build and push the image", "j2", "succeeded", log=12),
    ]}


class AzureDevOps:
    """A fake Azure DevOps answering with the documented shapes; records what it was asked."""

    def __init__(self, *, result: str = "succeeded", polls_before_done: int = 2, fail_first: int = 0,
                 status_on_fail: int = 503) -> None:
        self.result = result
        self.polls_before_done = polls_before_done
        self.fail_first = fail_first
        self.status_on_fail = status_on_fail
        self.requests: list[httpx.Request] = []
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.params["api-version"] == "7.1"
        expected = "Basic " + base64.b64encode(f":{PAT}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, text="Access Denied: The Personal Access Token used has expired.")
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(self.status_on_fail, json={"message": "service unavailable"})
        path = request.url.path.removeprefix("/contoso/shop/_apis/")
        if request.method == "POST" and path == "pipelines/7/runs":
            body = json.loads(request.content)
            assert body["resources"]["repositories"]["self"]["version"] == COMMIT
            assert body["variables"]["IMAGE_REGISTRY"] == {"value": "https://acr.example", "isSecret": False}
            return httpx.Response(200, json={"id": 42, "name": "20261127.1", "state": "inProgress",
                                             "result": "unknown", "createdDate": "2026-11-27T10:00:00Z"})
        if request.method == "GET" and path == "pipelines/7/runs/42":
            self.polls += 1
            done = self.polls > self.polls_before_done
            return httpx.Response(200, json={
                "id": 42, "state": "completed" if done else "inProgress",
                "result": self.result if done else "unknown", "createdDate": "2026-11-27T10:00:00Z",
                "finishedDate": "2026-11-27T10:00:10Z" if done else None})
        if path == "build/builds/42/timeline":
            return httpx.Response(200, json=timeline("succeeded" if self.result == "succeeded" else "failed"))
        if path == "build/builds/42/logs/11":
            return httpx.Response(200, text="3 passed\n")
        if path == "build/builds/42/logs/12":
            record = {"kind": "image", "repository": "acr.example/sample-app", "tag": COMMIT, "digest": DIGEST}
            return httpx.Response(200, text="pushed\n##delivery[published]" + json.dumps(record) + "\n")
        return httpx.Response(404, json={"message": f"no route {request.method} {path}"})


def queue(fake, **options):
    started: list[str] = []
    result = runner(**options).run(repository="sample-app", clone_url="unused", commit=COMMIT,
                                   pipeline_path="azure-pipelines.yml",
                                   variables={"IMAGE_REGISTRY": "https://acr.example"}, run_name="rel-1",
                                   on_started=started.append, transport=httpx.MockTransport(fake))
    return result, started


def test_a_successful_run_is_mapped_with_jobs_logs_and_images():
    fake = AzureDevOps(polls_before_done=2)
    result, started = queue(fake)
    assert started == ["42"]
    assert result.succeeded and result.runner == "azure-pipelines" and result.run_id == "42"
    assert fake.polls == 3  # polled until completed
    assert [(j.name, j.stage, j.outcome) for j in result.jobs] == [
        ("test", "test", RunOutcome.SUCCEEDED), ("publish_image", "publish", RunOutcome.SUCCEEDED)]
    assert result.jobs[0].steps[0].log == "build/builds/42/logs/11"
    assert [i.reference for i in result.images] == [f"acr.example/sample-app@{DIGEST}"]
    assert result.logs_url.endswith("/contoso/shop/_build/results?buildId=42")
    assert all(PAT not in str(r.url) for r in fake.requests)


def test_a_failed_run_is_a_failed_result_naming_the_job():
    result, _ = queue(AzureDevOps(result="failed"))
    assert not result.succeeded
    assert result.job("test").outcome is RunOutcome.FAILED
    assert "Azure run 42 ended failed" in result.reason and "Run tests" in result.reason


def test_a_5xx_is_retried():
    fake = AzureDevOps(fail_first=2, status_on_fail=503)
    result, _ = queue(fake)
    assert result.succeeded
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 3  # two 503s, then the run was queued


def test_a_401_is_not_retried():
    fake = AzureDevOps()
    with pytest.raises(AuthenticationError, match="refused the token"):
        queue(fake, token="wrong")
    assert len(fake.requests) == 1


def test_a_5xx_that_persists_ends_transient():
    fake = AzureDevOps(fail_first=10, status_on_fail=500)
    with pytest.raises(TransientError, match="500 after 3 attempts"):
        queue(fake)


def test_a_request_timeout_is_retried_then_reported():
    calls = []

    def hang(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(TransientError, match="timed out after 3 attempts"):
        queue(hang)
    assert len(calls) == 3


def test_a_run_that_outlives_the_timeout_is_reported():
    fake = AzureDevOps(polls_before_done=10_000)
    with pytest.raises(TransientError, match="still inProgress after 0.2s"):
        queue(fake, run_timeout_seconds=0.2)
    assert fake.polls >= 1


def test_a_generated_pipeline_can_be_checked_by_azure_without_running():
    from pathlib import Path

    from delivery.build_settings import parse_build_settings
    from delivery.errors import InvalidInput
    from tasks.pipeline import render_pipeline

    seen: list[dict] = []

    def preview(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url.path == "/contoso/shop/_apis/pipelines/7/runs" and body["previewRun"] is True
        if "stages:" not in body["yamlOverride"]:
            return httpx.Response(400, json={"message": "/azure-pipelines.yml: Unexpected value 'stagez'"})
        return httpx.Response(200, json={"id": -1, "finalYaml": body["yamlOverride"]})

    settings = Path(__file__).resolve().parents[2] / "examples" / "sample-app" / "delivery-build.yaml"
    generated = render_pipeline(parse_build_settings(settings.read_bytes()))
    assert runner().preview(generated, transport=httpx.MockTransport(preview)) == generated
    with pytest.raises(InvalidInput, match="Unexpected value 'stagez'"):
        runner().preview("stagez: []\n", transport=httpx.MockTransport(preview))
    assert len(seen) == 2
