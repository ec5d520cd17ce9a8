"""Fixtures of the release flow tests: the whole product wired (see tests/support/release.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.release import ReleaseStack, Services, release_services, wire_release_stack


@pytest.fixture(scope="module")
def services(prefect_server, registry) -> Iterator[Services]:
    """The module's simulator, runtime block and image registry."""
    with release_services(registry) as running:
        yield running


@pytest.fixture
def release_stack(services, tmp_path, monkeypatch, ledger) -> ReleaseStack:
    """This test's repositories and blocks, saved and pointed at through ``DELIVERY_<ROLE>_BLOCK``."""
    return wire_release_stack(services, tmp_path, monkeypatch, ledger)
