"""Policy gates: CEL over the plan, the build, the approvals and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
