"""Fixtures of the fault-injection suite: one local stack (``delivery up``) for the whole session.

The stack runs in a folder of its own with ``DELIVERY_FAILPOINTS_FILE`` set before its worker
starts, and ``DELIVERY_RECOVERY_ATTEMPTS`` raised so that one release can be killed at several
stages in a row (see fault_support.py).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fault_support import FaultStack

# One release of the suite is killed seven times; the product's default bound (3) would raise an incident.
RECOVERY_ATTEMPTS = 10


def _say(line: str) -> None:
    print(f"[faults] {line}", file=sys.stderr, flush=True)


# Closers of the running stack: the stack serves this folder's tests only and stops after the last of them.
_closers: list[Callable[[], None]] = []
_HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def fault_stack(request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    """The fault-injection stack of this folder's tests; stopped, with every process a test added, after the last.

    Its folder (logs, Prefect's database, ledger, repositories) is removed after a clean run and
    kept after a failure, for the post-mortem (pytest's own temporary folders rotate away).
    """
    home = Path(tempfile.mkdtemp(prefix="delivery-fault-stack-"))
    exits = ExitStack()
    stack = exits.enter_context(FaultStack.running(home / "stack", say=_say,
                                                   env={"DELIVERY_RECOVERY_ATTEMPTS": str(RECOVERY_ATTEMPTS)}))

    def close() -> None:
        exits.close()
        if request.session.testsfailed:
            _say(f"kept the stack's folder for the post-mortem: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    _closers.append(close)
    try:
        yield stack
    finally:
        _stop()


def _stop() -> None:
    while _closers:
        _closers.pop()()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the stack once the next test is not one of this folder's (the rest of the suite does not need it)."""
    if nextitem is None or Path(nextitem.path).parent != _HERE:
        _stop()
