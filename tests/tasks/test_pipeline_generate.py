"""Stage 5, generate_pipeline: deterministic YAML, refreshed only when the build settings change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.release import sample_app_files

from blocks.git_host import LocalGitHost
from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings
from delivery.errors import InvalidInput
from delivery.models import Artifact, MergeInfo, ReleaseRequest
from tasks.pipeline import generate_pipeline, render_pipeline

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "sample-app"


def request(release_id: str) -> ReleaseRequest:
    return ReleaseRequest(release_id=release_id, app="sample-app", requested_by="agent:test",
                          artifacts=[Artifact.from_text("a1", "notes.txt", "x")])


def merged(host: LocalGitHost) -> MergeInfo:
    return MergeInfo(pull_request=1, merge_sha=host.resolve("sample-app", "main"), target_branch="main", created=True)


def test_the_sample_apps_pipeline_is_the_same_bytes_on_two_runs():
    settings_text = (SAMPLE_APP / BUILD_SETTINGS_FILE).read_bytes()
    first = render_pipeline(parse_build_settings(settings_text))
    second = render_pipeline(parse_build_settings(settings_text))
    assert first.encode() == second.encode()
    document = yaml.safe_load(first)
    assert list(document) == ["trigger", "pool", "variables", "stages"]
    publish = document["stages"][1]
    assert publish["dependsOn"] == "test"
    assert [job["job"] for job in publish["jobs"]] == ["publish_package", "publish_image"]
    assert all("dependsOn" not in job for job in publish["jobs"])  # the two publish jobs run in parallel
    assert document["stages"][0]["jobs"][0]["steps"][0]["script"].startswith("python -m pytest")


def test_the_committed_sample_pipeline_is_what_the_generator_makes():
    files = sample_app_files(deploy=False)
    assert files["azure-pipelines.yml"] == render_pipeline(parse_build_settings(files[BUILD_SETTINGS_FILE])).encode()


def test_generate_or_refresh_commits_only_when_the_settings_change(prefect_server, tmp_path):
    host = LocalGitHost(root=str(tmp_path / "repos"))
    files = sample_app_files(deploy=False)
    del files["azure-pipelines.yml"]
    host.ensure_repository("sample-app", initial_files=files)

    release_1 = request("rel-gen-1")
    first = generate_pipeline(host, release_1, merged(host))
    head = host.resolve("sample-app", "main")
    assert first.refreshed and first.commit == head and first.commit != first.merge_commit
    committed = host.read_file("sample-app", "azure-pipelines.yml", ref=head)
    assert committed == render_pipeline(parse_build_settings(files[BUILD_SETTINGS_FILE])).encode()
    found = host.find_commit("sample-app", branch="main", trailer=("Release-Id", "rel-gen-1"))
    assert found is not None and found.sha == head
    assert found.trailers["Trace-Id"] == [release_1.trace_id]

    unchanged = generate_pipeline(host, request("rel-gen-2"), merged(host))
    assert not unchanged.refreshed and unchanged.commit == head
    assert host.resolve("sample-app", "main") == head  # nothing committed

    settings = files[BUILD_SETTINGS_FILE].replace(b"timeout_minutes: 5", b"timeout_minutes: 7")
    host.commit_files("sample-app", branch="main", files={BUILD_SETTINGS_FILE: settings},
                      message="Give the tests more time", trailers=[("Release-Id", "rel-gen-3")])
    release_3 = request("rel-gen-3")
    changed = generate_pipeline(host, release_3, merged(host))
    assert changed.refreshed and changed.sha256 != first.sha256
    assert "timeoutInMinutes: 7" in host.read_file("sample-app", "azure-pipelines.yml", ref="main").decode()

    head = host.resolve("sample-app", "main")
    again = generate_pipeline(host, release_3, merged(host))  # the same release again: a no-op
    assert again == changed and host.resolve("sample-app", "main") == head


def test_bad_build_settings_in_the_repository_stop_the_stage(prefect_server, tmp_path):
    host = LocalGitHost(root=str(tmp_path / "repos"))
    files = sample_app_files(deploy=False)
    files[BUILD_SETTINGS_FILE] = b"app: sample-app\ntest:\n  command: pytest\n  junit: /tmp/junit.xml\n"
    host.ensure_repository("sample-app", initial_files=files)
    head = host.resolve("sample-app", "main")
    with pytest.raises(InvalidInput, match=r"sample-app:delivery-build.yaml: test.junit: '/tmp/junit.xml' is absolute"):
        generate_pipeline(host, request("rel-gen-bad"), merged(host))
    assert host.resolve("sample-app", "main") == head
