"""Policy gates: CEL over the plan, the build, the approvals and the clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from celpy import celtypes

from delivery.models import Approval, BuildResult, BuildStatus, Decision, PublishedImage, TestCounts
from delivery.policy import compile_expression, evaluate_policies, evaluate_policy, policy_context

DIGEST = "sha256:" + "a" * 64
FINISHED = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _build(failed: int = 0) -> BuildResult:
    return BuildResult(
        status=BuildStatus.SUCCEEDED, commit="c" * 40, run_id="run-1",
        tests=TestCounts(total=5, passed=5 - failed, failed=failed),
        images=[PublishedImage(repository="127.0.0.1:5000/sample-app", tag="r1", digest=DIGEST)],
        finished_at=FINISHED,
    )


PLAN = {"release_id": "rel-1", "app": "sample-app", "revision": 1, "environment": "prod",
        "strategy": {"name": "rolling"}, "planned_by": "agent:release-manager", "state": "PendingApproval"}


def _context(*, failed: int = 0, approvals=(), now: datetime | None = None):
    clock = now or FINISHED + timedelta(hours=1)
    return policy_context(plan=PLAN, build=_build(failed), approvals=approvals, now=clock)


@pytest.mark.parametrize(
    ("expression", "passed"),
    [
        ("build.tests.failed == 0", True),
        ("build.tests.total > 10", False),
        ('plan.environment == "prod" && environment == "prod"', True),
        ('plan.planned_by.startsWith("agent:")', True),
        ("size(build.images) == 1 && build.images[0].digest.startsWith('sha256:')", True),
        ("now - timestamp(build.finished_at) < duration('2h')", True),
        ("now - timestamp(build.finished_at) < duration('30m')", False),
        ("now.getHours() >= 9 && now.getHours() < 17", True),
        ("size(approvals) == 0", True),
        ('plan.strategy.name == "rolling"', True),
    ],
)
def test_expressions_over_plan_build_and_clock(expression: str, passed: bool) -> None:
    result = evaluate_policy("gate", expression, _context())
    assert result.passed is passed, result.detail


def test_only_counted_approvals_are_visible() -> None:
    approvals = [
        Approval(approver="user:alice", decision=Decision.APPROVE),
        Approval(approver="agent:release-manager", decision=Decision.APPROVE, counted=False, refused_reason="planner"),
    ]
    result = evaluate_policy(
        "humans", 'size(approvals) == 1 && approvals.all(a, a.approver.startsWith("user:"))',
        _context(approvals=approvals),
    )
    assert result.passed, result.detail


def test_failed_build_fails_the_gate() -> None:
    assert not evaluate_policy("tests", "build.tests.failed == 0", _context(failed=2)).passed


def test_missing_field_fails_with_the_reason() -> None:
    result = evaluate_policy("gate", "build.coverage > 80", _context())
    assert not result.passed
    assert "cannot evaluate" in result.detail and "coverage" in result.detail


def test_non_boolean_fails() -> None:
    result = evaluate_policy("gate", "build.tests.total", _context())
    assert not result.passed and "must evaluate to a boolean" in result.detail


def test_every_policy_gets_a_result_in_name_order() -> None:
    results = evaluate_policies({"b-fails": "1 == 2", "a-passes": "true"}, _context())
    assert [(r.name, r.passed) for r in results] == [("a-passes", True), ("b-fails", False)]


def test_syntax_error_is_reported_at_compile_time() -> None:
    with pytest.raises(ValueError, match="CEL syntax error"):
        compile_expression("build.tests.failed ==")


def test_an_expression_that_does_not_parse_fails_its_gate_and_says_so() -> None:
    result = evaluate_policy("tests-green", "build.tests.failed ==", _context())
    assert (result.name, result.expression, result.passed) == ("tests-green", "build.tests.failed ==", False)
    assert result.detail.startswith("syntax error: ")


def test_the_compile_error_is_one_line_pointing_at_the_column() -> None:
    with pytest.raises(ValueError) as info:
        compile_expression("build.tests.failed ==")
    assert str(info.value) == "CEL syntax error: build.tests.failed == ^"


def test_the_detail_says_true_or_evaluated_to_false() -> None:
    assert evaluate_policy("gate", "true", _context()).detail == "true"
    assert evaluate_policy("gate", "false", _context()).detail == "evaluated to false"


def test_a_non_boolean_detail_names_the_type_it_got() -> None:
    detail = evaluate_policy("gate", "plan.app", _context()).detail
    assert detail == "must evaluate to a boolean, got StringType StringType('sample-app')"


def test_an_evaluation_error_reads_as_its_reason_not_a_python_repr() -> None:
    detail = evaluate_policy("gate", "build.coverage > 80", _context()).detail
    assert detail.startswith("cannot evaluate: ") and "coverage" in detail and "Error(" not in detail


class _Unreadable(celtypes.MapType):
    def __getitem__(self, key):
        raise RuntimeError()  # an error without a message


def test_an_error_without_a_message_fails_the_gate_with_its_name() -> None:
    context = {**_context(), "plan": _Unreadable({})}
    result = evaluate_policy("gate", 'plan.app == "x"', context)
    assert not result.passed and result.detail == "cannot evaluate: RuntimeError()"


def test_the_plan_variable_carries_neither_the_build_nor_the_approvals() -> None:
    refused = Approval(approver="agent:release-manager", decision=Decision.APPROVE, counted=False,
                       refused_reason="planner")
    plan = {**PLAN, "build": _build().model_dump(mode="json"), "approvals": [refused.model_dump(mode="json")]}
    context = policy_context(plan=plan, build=_build(), approvals=[refused], now=FINISHED)
    assert evaluate_policy("gate", "!has(plan.build) && !has(plan.approvals) && size(approvals) == 0", context).passed


def test_times_are_rfc3339_strings_as_documented() -> None:
    alice = Approval(approver="user:alice", decision=Decision.APPROVE, at=FINISHED)
    context = _context(approvals=[alice])
    expression = 'build.finished_at == "2026-11-27T10:00:00Z" && approvals[0].at == "2026-11-27T10:00:00Z"'
    result = evaluate_policy("gate", expression, context)
    assert result.passed, result.detail


def test_a_plan_without_an_environment_has_an_empty_environment() -> None:
    plan = {key: value for key, value in PLAN.items() if key != "environment"}
    context = policy_context(plan=plan, build=_build(), now=FINISHED)
    assert evaluate_policy("gate", 'environment == ""', context).passed


def test_the_default_clock_is_utc_whatever_the_machine_time_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "JST-9")  # POSIX form: needs no tz database
    time.tzset()
    try:
        context = policy_context(plan=PLAN, build=_build())
        utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    finally:
        monkeypatch.undo()
        time.tzset()
    expression = f'now - timestamp("{utc}") < duration("60s") && timestamp("{utc}") - now < duration("60s")'
    assert evaluate_policy("clock", expression, context).passed
