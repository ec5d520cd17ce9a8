"""A refused release writes nothing (issue 11, point 7): no branch, no commit, no ledger row, no object.

Bad requests drawn from the fuzzing strategies (one field broken: refused by the flow's parameter
validation) and requests that are well formed but that the flow refuses before its first write
(an unknown application, an environment not on the path) go through the real release flow on the
whole wired product (tests/release_support.py): a real Prefect server, local bare repositories, the
ledger, the Kubernetes simulator, the registry. Before and after each: every ref and the object
count of every bare repository, the row count of every ledger table, the simulator's objects and
resource version, and what ``ReleaseStack.snapshot`` compares (pull requests, feed, runs, images).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from release_support import ReleaseStack
from security_strategies import SECURITY, Broken, bad_requests, names_request_field, request_base
from sqlalchemy import MetaData, func, select

# Well formed, refused by the flow before anything is written (validate_release / validate_promotion).
REFUSED_BEFORE_WRITING = [
    Broken({**request_base("rel-ghost"), "app": "ghost"}, "app", "no such repository"),
    Broken({**request_base("rel-qa"), "target_environment": "qa"}, "target_environment", "unknown environment"),
]


def bare_repositories(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.git") if (p / "HEAD").is_file() and (p / "objects").is_dir())


def git_state(repository: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repository), *args], check=True, capture_output=True,
                              text=True).stdout

    objects = dict(line.split(": ", 1) for line in git("count-objects", "-v").splitlines())
    return {"refs": git("for-each-ref", "--format=%(refname) %(objectname)"),
            "objects": (objects["count"], objects["in-pack"])}


def ledger_rows(stack: ReleaseStack) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(stack.ledger.engine)
    with stack.ledger.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in metadata.tables.items()}


def simulator_state(stack: ReleaseStack) -> tuple[int, list[str]]:
    store = stack.services.sim.store
    with store.lock:
        return store.rv, sorted(f"{rt}/{namespace}/{name}" for rt, by_namespace in store._objects.items()
                                for namespace, names in by_namespace.items() for name in names)


def everything(stack: ReleaseStack) -> dict[str, Any]:
    repositories = bare_repositories(stack.root)
    assert len(repositories) >= 2, repositories  # the application's and the GitOps repository
    return {"git": {str(p.relative_to(stack.root)): git_state(p) for p in repositories},
            "ledger": ledger_rows(stack), "simulator": simulator_state(stack), "stack": stack.snapshot()}


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
