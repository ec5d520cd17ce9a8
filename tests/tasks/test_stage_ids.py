"""Which release, revision, environment and trace a stage's parameters name: typed models and raw JSON alike.

The release flow validates its own parameter, so its ``request`` is the JSON the caller sent; an
incident raised from it must still carry the release and trace ids (its envelope is what a replay uses).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tasks.stage import _ids, stage_environment

PLAN = SimpleNamespace(release_id="rel-1", revision=2, environment="staging", trace_id="t" * 32)


@pytest.mark.parametrize(("parameters", "expected"), [
    ({"plan": PLAN}, ("rel-1", 2, "staging", "t" * 32)),
    ({"request": {"release_id": "rel-2", "trace_id": "a" * 32, "revision": 3}}, ("rel-2", 3, None, "a" * 32)),
    ({"request": {"release_id": 7, "revision": "3"}}, (None, None, None, None)),  # wrong types are not ids
    ({"release_id": "rel-3", "revision": 4, "environment": "prod"}, ("rel-3", 4, "prod", None)),
    ({"environment": SimpleNamespace(name="dev")}, (None, None, "dev", None)),
    ({"plan": PLAN, "release_id": "rel-named"}, ("rel-named", 2, "staging", "t" * 32)),  # a named id wins
    ({"count": 3, "labels": ["x"]}, (None, None, None, None)),
    ({}, (None, None, None, None)),
])
def test_ids_are_found_in_attributes_keys_and_named_parameters(parameters: dict[str, Any], expected: tuple) -> None:
    assert _ids(parameters) == expected


def test_the_environment_of_a_call() -> None:
    assert stage_environment({"plan": PLAN}) == "staging"
    assert stage_environment({"request": {"app": "sample-app"}}) is None
