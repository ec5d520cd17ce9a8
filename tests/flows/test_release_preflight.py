"""The release flow's pre-flight of the application's files (``validate_application_files``), without a server.

It reads ``delivery-build.yaml`` and the deploy templates as the release will build them: at the commit
given (the protected branch's head, or ``source.ref``'s), with what an artifact of the request brings in
place of the repository's version. That the whole flow refuses before its first write is proven in
tests/security/test_refused_release_writes_nothing.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.release import APP, PLANNER, sample_app_files

from blocks.git_host import LocalGitHost
from delivery.build_settings import BUILD_SETTINGS_FILE
from delivery.errors import InvalidInput
from delivery.models import Artifact, ReleaseRequest
from flows.release import validate_application_files

BAD_BUILD = b"app: sample-app\ntest:\n  timeout_minutes: 5\n"  # no test command
UNCLOSED_IF = "{% if values.replicas %}\nkind: Service\n"


@pytest.fixture
def host(tmp_path: Path) -> LocalGitHost:
    host = LocalGitHost(root=str(tmp_path / "repos"))
    host.ensure_repository(APP, initial_files=sample_app_files())
    return host


def commit(host: LocalGitHost, files: dict[str, bytes | None], *, branch: str = "main") -> str:
    return host.commit_files(APP, branch=branch, files=files, message="test", trailers=(), base="main").sha


def request(*artifacts: Artifact) -> ReleaseRequest:
    notes = Artifact.from_text("notes", "CHANGES.md", "- x\n")
    return ReleaseRequest(release_id="rel-preflight", app=APP, requested_by=PLANNER, artifacts=[*artifacts] or [notes])


def refusal(host: LocalGitHost, commit_sha: str, release: ReleaseRequest | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_application_files(host, release or request(), commit_sha)
    return str(caught.value)


def test_the_sample_app_passes_and_templates_are_not_rendered(host: LocalGitHost):
    # A value defined nowhere is the rendering's to judge (it may sit in a branch never taken): not refused here.
    sha = commit(host, {"deploy/zz-later.yaml.j2": b"{% if false %}{{ values.nowhere }}{% endif %}\n"})
    validate_application_files(host, request(), sha)


def test_the_files_are_read_at_the_commit_given(host: LocalGitHost):
    good = host.resolve(APP, "main")
    bad = commit(host, {BUILD_SETTINGS_FILE: BAD_BUILD})
    assert "sample-app:delivery-build.yaml: test.command: Field required" in refusal(host, bad)
    validate_application_files(host, request(), good)  # e.g. source.ref's commit, from before the bad one


def test_an_artifact_is_judged_instead_of_the_file_it_replaces(host: LocalGitHost):
    good = host.resolve(APP, "main")
    breaks = request(Artifact.from_text("extra", "deploy/zz-extra.yaml.j2", UNCLOSED_IF))
    assert refusal(host, good, breaks).startswith("sample-app:deploy/zz-extra.yaml.j2 line 1: template syntax error")

    bad = commit(host, {BUILD_SETTINGS_FILE: BAD_BUILD, "deploy/service.yaml.j2": UNCLOSED_IF.encode()})
    fixes = request(Artifact.from_text("build", BUILD_SETTINGS_FILE, sample_app_files()[BUILD_SETTINGS_FILE].decode()),
                    Artifact.from_text("service", "deploy/service.yaml.j2", "kind: Service\n"))
    validate_application_files(host, fixes, bad)


@pytest.mark.parametrize(("files", "message"), [
    ({"deploy/values.yaml": b"- a\n- b\n"}, "sample-app:deploy/values.yaml: must be a mapping of values, got list"),
    ({"deploy/values.yaml": b"a: [\n"}, "sample-app:deploy/values.yaml line 2: not valid YAML"),
    ({"deploy/service.yaml.j2": b"\xff\xfe"}, "deploy/service.yaml.j2: not UTF-8 text"),
    ({BUILD_SETTINGS_FILE: None}, "sample-app: delivery-build.yaml is missing at "),
    ({f"deploy/{name}": None for name in ("configmap.yaml.j2", "deployment.yaml.j2", "ingress.yaml.j2",
                                          "service.yaml.j2")}, "sample-app:deploy: no *.yaml.j2 template"),
])
def test_a_bad_deploy_folder_or_missing_settings_are_refused_naming_the_file(host: LocalGitHost, files, message):
    assert message in refusal(host, commit(host, files))


def test_other_files_of_the_deploy_folder_are_ignored_as_the_rendering_ignores_them(host: LocalGitHost):
    sha = commit(host, {"deploy/README.md": b"\xff not text", "deploy/.gitkeep": b"", "deploy/sub/x.yaml.j2": b"{%"})
    validate_application_files(host, request(), sha)
