"""A refused release writes nothing (issue 11, point 7): no branch, no commit, no ledger row, no object.

Bad requests drawn from the fuzzing strategies (one field broken: refused by the flow's parameter
validation) and requests that are well formed but that the flow refuses before its first write
(an unknown application, an environment not on the path) go through the real release flow on the
whole wired product (tests/support/release.py): a real Prefect server, local bare repositories, the
ledger, the Kubernetes simulator, the registry. Before and after each: every ref and the object
count of every bare repository, the row count of every ledger table, the simulator's objects and
resource version, and what ``ReleaseStack.snapshot`` compares (pull requests, feed, runs, images):
``support.release.everything``.
"""

from __future__ import annotations

from hypothesis import given, settings
from security_strategies import SECURITY, Broken, bad_requests, names_request_field, request_base
from support.release import ReleaseStack, everything

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
