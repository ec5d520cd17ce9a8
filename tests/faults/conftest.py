"""Fixtures of the fault-injection suite: one local stack (``delivery up``) for the whole session.

The stack runs in a folder of its own with ``DELIVERY_FAILPOINTS_FILE`` set before its worker
starts, and ``DELIVERY_RECOVERY_ATTEMPTS`` raised so that one release can be killed at several
stages in a row (see fault_support.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from fault_support import FaultStack

# One release of the suite is killed seven times; the product's default bound (3) would raise an incident.
RECOVERY_ATTEMPTS = 10


def _say(line: str) -> None:
    print(f"[faults] {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The session's fault-injection stack; stopped, with every process a test added, at the end."""
    if os.environ.get("DELIVERY_FAULT_SUITE") != "1":
        pytest.skip("the stack-based fault suite runs with `make test-faults` (DELIVERY_FAULT_SUITE=1): "
                    "it has not yet been measured green within make test's budget")
    with FaultStack.running(tmp_path_factory.mktemp("fault-stack"), say=_say,
                            env={"DELIVERY_RECOVERY_ATTEMPTS": str(RECOVERY_ATTEMPTS)}) as stack:
        yield stack
