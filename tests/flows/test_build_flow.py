"""run_build end to end: the sample app's release builds for real, or fails and stops the release."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect import flow
from support.release import sample_app_files

from blocks.git_host import LocalGitHost
from blocks.image_registry import OciImageRegistry
from blocks.package_feed import DirectoryPackageFeed
from blocks.pipeline_runner import LocalPipelineRunner
from delivery.errors import BuildFailed
from delivery.models import Artifact, BuildStatus, MergeInfo, ReleaseRequest
from flows.build import run_build

# The release flow runs the build inside its own run; here a flow of the test's own does.
build_flow = flow(name="build-under-test")(run_build)

FAILING_TEST = "def test_the_change_broke_something():\n    assert 1 + 1 == 3\n"


@pytest.fixture
def stack(prefect_server, registry, tmp_path, monkeypatch):
    """The embedded providers, saved as blocks under names of this test only, and the sample app repo."""
    suffix = secrets.token_hex(4)
    host = LocalGitHost(root=str(tmp_path / "repos"))
    host.ensure_repository("sample-app", initial_files=sample_app_files(deploy=False))
    blocks = {
        "git_host": host,
        "pipeline_runner": LocalPipelineRunner(work_dir=str(tmp_path / "runs")),
        "package_feed": DirectoryPackageFeed(path=str(tmp_path / "feed")),
        "image_registry": OciImageRegistry(url=registry.url),
    }
    for role, block in blocks.items():
        name = f"build-test-{suffix}"
        block.save(name, overwrite=True)
        monkeypatch.setenv(f"DELIVERY_{role.upper()}_BLOCK", f"{block._block_type_slug}/{name}")
    return blocks


def release_through_a_pull_request(host: LocalGitHost, artifact: Artifact) -> tuple[ReleaseRequest, MergeInfo]:
    """Stages 1-4 as the release flow runs them: commit to the release branch, PR, checks, merge."""
    request = ReleaseRequest(app="sample-app", requested_by="agent:release-manager", artifacts=[artifact])
    trailers = [("Release-Id", request.release_id), ("Trace-Id", request.trace_id),
                ("Artifact-Id", artifact.artifact_id)]
    host.commit_files("sample-app", branch=request.branch, files={artifact.path: artifact.data()},
                      message=f"Release {request.release_id}", trailers=trailers)
    pr = host.open_pull_request("sample-app", source=request.branch, target="main", title=request.release_id)
    host.run_checks("sample-app", pr.number)
    merge = host.merge_pull_request("sample-app", pr.number, message=f"Merge {request.release_id}",
                                    trailers=trailers[:2])
    return request, merge


def events_of(api_url: str, trace_id: str, wanted: set[str], *, timeout: float = 30.0) -> dict[str, dict]:
    """Poll the Prefect events API until the release's trace holds every wanted event."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}
    while time.monotonic() < deadline:
        response = httpx.post(f"{api_url}/events/filter", json={
            "filter": {"related": {"id": [f"delivery.trace.{trace_id}"]},
                       "occurred": {"since": "2020-01-01T00:00:00Z"}}, "limit": 50})
        if response.status_code == 503:  # SQLite busy: the server asks callers to come back
            time.sleep(0.5)
            continue
        response.raise_for_status()
        found = {e["event"].removeprefix("delivery."): e for e in response.json()["events"]}
        if wanted <= set(found):
            return found
        time.sleep(0.5)
    raise AssertionError(f"events {sorted(wanted - set(found))} not seen for trace {trace_id}")


def run_record(build) -> dict:
    """The runner's own record of the run, kept beside the logs the build result links to."""
    logs = Path(build.logs_url.removeprefix("file://"))
    return json.loads((logs.parent / "result.json").read_text())


def test_a_release_of_the_sample_app_builds_for_real(stack, registry, prefect_server, tmp_path):
    host = stack["git_host"]
    notes = Artifact.from_text("notes-1", "CHANGES.md", "- first release through the pipeline\n")
    request, merge = release_through_a_pull_request(host, notes)

    build = build_flow(request, merge)

    assert build.status is BuildStatus.SUCCEEDED, build.reason
    assert build.tests.total == 3 and build.tests.passed == 3 and build.tests.failed == 0
    assert build.commit == host.resolve("sample-app", "main")  # the refreshed pipeline's commit
    assert host.read_file("sample-app", "azure-pipelines.yml", ref=build.commit) is not None

    # the wheel is in the feed and pip installs it from there, and from nowhere else
    [package] = build.packages
    assert (package.name, package.version) == ("sample-app", "0.1.0")
    target = tmp_path / "installed"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                          "--find-links", str(tmp_path / "feed"), "--target", str(target), "sample-app==0.1.0"],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stderr
    version = subprocess.run([sys.executable, "-c", "import sample_app; print(sample_app.__version__)"],
                             capture_output=True, text=True, env={"PYTHONPATH": str(target)}, timeout=60)
    assert version.stdout.strip() == "0.1.0"

    # the image is in the registry and comes back by its digest
    [image] = build.images
    assert image.repository == f"{registry.host}/sample-app" and image.tag == build.commit
    pulled = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{image.reference}",
                             f"oci:{tmp_path / 'pulled'}:app"], capture_output=True, text=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest

    # the two publish jobs ran at the same time: their step intervals overlap
    jobs = {job["name"]: job for job in run_record(build)["jobs"]}
    package_steps, image_steps = jobs["publish_package"]["steps"], jobs["publish_image"]["steps"]
    assert max(package_steps[0]["started_at"], image_steps[0]["started_at"]) < min(
        package_steps[-1]["finished_at"], image_steps[-1]["finished_at"])
    assert all(Path(step["log"]).is_file() for job in jobs.values() for step in job["steps"] if step["log"])

    events = events_of(prefect_server, request.trace_id, {"PipelineGenerated", "PipelineRunStarted", "BuildCompleted"})
    completed = events["BuildCompleted"]["payload"]
    assert completed["status"] == "Succeeded" and completed["images"][0]["digest"] == image.digest
    assert events["PipelineRunStarted"]["payload"]["commit"] == build.commit


def test_a_change_with_a_failing_test_fails_the_build_and_nothing_can_be_planned(stack, prefect_server, ledger,
                                                                                  tmp_path):
    host = stack["git_host"]
    broken = Artifact.from_text("test-broken", "tests/test_broken.py", FAILING_TEST)
    request, merge = release_through_a_pull_request(host, broken)

    state = build_flow(request, merge, return_state=True)

    assert state.is_failed()
    with pytest.raises(BuildFailed, match=r"1 of 4 tests failed") as caught:
        state.result()
    assert "step 'Run tests' of job test failed" in str(caught.value)
    events = events_of(prefect_server, request.trace_id, {"BuildCompleted"})
    completed = events["BuildCompleted"]["payload"]
    assert completed["status"] == "Failed"
    assert completed["tests"] == {"total": 4, "passed": 3, "failed": 1, "skipped": 0}
    assert completed["packages"] == [] and completed["images"] == []  # the publish jobs never ran
    assert not (tmp_path / "feed").exists() or not list((tmp_path / "feed").iterdir())
    assert ledger.plans(release_id=request.release_id) == []
