"""A refused release writes nothing (issue 11, point 7): no branch, no commit, no ledger row, no object.

Bad requests drawn from the fuzzing strategies (one field broken: refused by the flow's parameter
validation) and requests that are well formed but that the flow refuses before its first write
(an unknown application, an environment not on the path) go through the real release flow on the
whole wired product (tests/support/release.py): a real Prefect server, local bare repositories, the
ledger, the Kubernetes simulator, the registry. Before and after each: every ref and the object
count of every bare repository, the row count of every ledger table, the simulator's objects and
resource version, and what ``ReleaseStack.snapshot`` compares (pull requests, feed, runs, images):
``support.release.everything``.

The configuration a release reads is checked before its first write too (``validate_application_files``,
the pre-flight the flow runs beside ``validate_release``): a bad ``delivery.yaml`` in the GitOps repository, and a bad
``delivery-build.yaml`` or deploy template in the application repository (on the protected branch, at
``source.ref``'s commit, or brought by an artifact of the request), each committed for the case and
restored after it; and a few of the fuzzing strategies' broken ``delivery.yaml`` and
``delivery-build.yaml`` documents the same way. Without the pre-flight, the bad build settings were
refused only at the build, after the release branch, pull request and merge were written, and the bad
template only when rendering, after the build had published a wheel and an image and the ledger held a
plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import yaml
from hypothesis import given, settings
from security_strategies import (
    SECURITY,
    Broken,
    bad_build_settings,
    bad_configs,
    bad_requests,
    names_field,
    names_request_field,
    request_base,
)
from support.release import APP, ReleaseStack, everything

from delivery.build_settings import BUILD_SETTINGS_FILE
from delivery.config import CONFIG_FILE
from delivery.models import Artifact, ReleaseRequest

# Well formed, refused by the flow before anything is written (validate_release / validate_promotion).
REFUSED_BEFORE_WRITING = [
    Broken({**request_base("rel-ghost"), "app": "ghost"}, "app", "no such repository"),
    Broken({**request_base("rel-qa"), "target_environment": "qa"}, "target_environment", "unknown environment"),
]


def refused_and_nothing_written(stack: ReleaseStack, broken: Broken) -> None:
    from flows.release import release

    before = everything(stack)
    state = release(request=broken.document, return_state=True)
    assert state.is_failed(), broken
    message = f"{state.message} {state.result(raise_on_failure=False)}"
    assert names_request_field(message, broken.field) or broken.what in message, (broken, message)
    assert everything(stack) == before, broken


def test_a_refused_release_writes_nothing(release_stack: ReleaseStack):
    for broken in REFUSED_BEFORE_WRITING:
        refused_and_nothing_written(release_stack, broken)

    @settings(SECURITY, max_examples=4)
    @given(bad_requests())
    def broken_requests(broken: Broken):
        refused_and_nothing_written(release_stack, broken)

    broken_requests()


# --------------------------------------------------------------------------- the configuration a release reads

TEMPLATE = "deploy/service.yaml.j2"
UNCLOSED_IF = "{% if values.replicas %}\n"  # never closed: a syntax error, whatever the values


@dataclass(frozen=True)
class BadFile:
    """A configuration file broken for one case, where it is put, and what the refusal must name."""

    name: str
    repository: str  # "gitops" or "app"
    path: str
    breaks: Callable[[bytes], bytes]
    field: str  # the field (or, for a template, the file and line) the message names
    branch: str = "main"  # for the application repository: main, or a branch released through source.ref
    brought: bool = False  # the request's artifact brings the bad file instead of the repository

    def request(self, stack: ReleaseStack, original: bytes) -> ReleaseRequest:
        """The release of this case: ordinary, of ``branch`` through source.ref, or bringing the bad file."""
        if self.branch != "main":
            return ReleaseRequest(release_id=f"rel-{self.name}", app=APP, requested_by="agent:release-manager",
                                  source={"ref": self.branch})
        if self.brought:
            bad = Artifact.from_text("bad-file", self.path, self.breaks(original).decode(), validator="ci-lint")
            return stack.request(f"rel-{self.name}", artifacts=[bad])
        return stack.request(f"rel-{self.name}")


def _without_test_command(raw: bytes) -> bytes:
    settings_ = yaml.safe_load(raw)
    del settings_["test"]["command"]
    return yaml.safe_dump(settings_, sort_keys=False).encode()


def _no_approvers_needed(raw: bytes) -> bytes:
    config = yaml.safe_load(raw)
    config["environments"]["staging"]["approval"]["min_approvers"] = 0
    return yaml.safe_dump(config, sort_keys=False).encode()


BAD_FILES = [
    BadFile("config", "gitops", CONFIG_FILE, _no_approvers_needed, "environments.staging.approval.min_approvers"),
    BadFile("build", "app", BUILD_SETTINGS_FILE, _without_test_command, "test.command"),
    BadFile("template", "app", TEMPLATE, lambda raw: UNCLOSED_IF.encode() + raw, f"{APP}:{TEMPLATE} line"),
    BadFile("build-source", "app", BUILD_SETTINGS_FILE, _without_test_command, "test.command",
            branch="feature/bad-build"),
    BadFile("template-source", "app", TEMPLATE, lambda raw: UNCLOSED_IF.encode() + raw, f"{APP}:{TEMPLATE} line",
            branch="feature/bad-template"),
    BadFile("build-brought", "app", BUILD_SETTINGS_FILE, _without_test_command, "test.command", brought=True),
    BadFile("template-brought", "app", "deploy/zz-extra.yaml.j2", lambda raw: UNCLOSED_IF.encode(),
            f"{APP}:deploy/zz-extra.yaml.j2 line", brought=True),
]


def read(stack: ReleaseStack, bad: BadFile) -> bytes:
    raw = stack.repo.read_config() if bad.repository == "gitops" else stack.host.read_file(APP, bad.path, ref="main")
    return raw or b""


def commit(stack: ReleaseStack, bad: BadFile, data: bytes, *, branch: str = "main") -> None:
    message = f"Security suite: {bad.path} for the {bad.name} case"
    if bad.repository == "gitops":
        stack.repo.write_files({bad.path: data}, message=message, trailers=[])
    else:
        stack.host.commit_files(APP, branch=branch, files={bad.path: data}, message=message, trailers=[],
                                base="main")


@contextmanager
def arranged(stack: ReleaseStack, bad: BadFile) -> Iterator[bytes]:
    """Commit the bad file where the case wants it (none when the request brings it); restore main after."""
    original = read(stack, bad)
    if not bad.brought:
        commit(stack, bad, bad.breaks(original), branch=bad.branch)
    try:
        yield original
    finally:
        if not bad.brought and bad.branch == "main":
            commit(stack, bad, original)
        assert read(stack, bad) == original, bad


def refused_before_writing(stack: ReleaseStack, bad: BadFile) -> None:
    from flows.release import release

    with arranged(stack, bad) as original:
        before = everything(stack)
        state = release(request=bad.request(stack, original), return_state=True)
        assert state.is_failed(), bad
        message = state.message or ""
        assert message.startswith("InvalidInput: "), (bad, message)  # the pre-flight's refusal, not a crash
        assert bad.path.rsplit("/", 1)[-1] in message and names_field(message, bad.field), (bad, message)
        assert everything(stack) == before, bad


def test_a_release_reading_a_bad_configuration_file_is_refused_and_writes_nothing(release_stack: ReleaseStack):
    for bad in BAD_FILES:
        refused_before_writing(release_stack, bad)

    # A few of the fuzzing suite's broken documents (test_input_fuzzing.py), through the whole flow.
    @settings(SECURITY, max_examples=3)
    @given(bad_configs())
    def broken_configs(broken: Broken):
        refused_before_writing(release_stack, BadFile("fuzz-config", "gitops", CONFIG_FILE,
                                                      lambda _: broken.document.encode(), broken.field))

    @settings(SECURITY, max_examples=3)
    @given(bad_build_settings())
    def broken_build_settings(broken: Broken):
        refused_before_writing(release_stack, BadFile("fuzz-build", "app", BUILD_SETTINGS_FILE,
                                                      lambda _: broken.document.encode(), broken.field))

    broken_configs()
    broken_build_settings()
