"""Policy gates: CEL expressions over the plan, the build, the approvals and the clock.

Each expression must evaluate to ``true`` for the gate to pass. The variables are

- ``plan``: release_id, app, revision, environment, strategy (with ``name``), planned_by, state;
- ``build``: the build result (status, commit, tests.{total,passed,failed,skipped}, images,
  packages, finished_at as an RFC 3339 string: use ``timestamp(build.finished_at)``);
- ``approvals``: the approvals that counted so far (approver, decision, comment, at);
- ``environment``: the environment's name; ``now``: the clock, a CEL timestamp (UTC).

An expression that cannot be evaluated (a missing field, a type error) or that yields anything
but a boolean fails its gate; the detail says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from pydantic import BaseModel, ConfigDict

from delivery.models import Approval, BuildResult


class PolicyResult(BaseModel):
    """The outcome of one policy gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    expression: str
    passed: bool
    detail: str = ""


_ENVIRONMENT = celpy.Environment()


@lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(expression))


def compile_expression(expression: str) -> None:
    """Check a CEL expression's syntax.

    Raises:
        ValueError: the expression does not parse; the message points at the column.
    """
    try:
        _program(expression)
    except celpy.CELParseError as exc:
        raise ValueError(f"CEL syntax error: {' '.join(str(exc).split())}") from None


def policy_context(
    *,
    plan: Mapping[str, Any],
    build: BuildResult,
    approvals: Sequence[Approval] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the CEL activation of a gate.

    Args:
        plan: the plan's fields (``ReleasePlan.model_dump(mode="json")`` minus the build).
        build: the build the plan deploys.
        approvals: approvals recorded so far; only those that counted are visible.
        now: the clock (default: the current UTC time).
    """
    plan_fields = {key: value for key, value in plan.items() if key not in ("build", "approvals")}
    counted = [a.model_dump(mode="json") for a in approvals if a.counted]
    return {
        "plan": celpy.json_to_cel(plan_fields),
        "build": celpy.json_to_cel(build.model_dump(mode="json")),
        "approvals": celpy.json_to_cel(counted),
        "environment": celtypes.StringType(str(plan_fields.get("environment", ""))),
        "now": celtypes.TimestampType(now or datetime.now(UTC)),
    }


def evaluate_policy(name: str, expression: str, context: Mapping[str, Any]) -> PolicyResult:
    """Evaluate one gate; never raises for a bad expression or missing data, it fails the gate."""
    try:
        value = _program(expression).evaluate(dict(context))
    except celpy.CELParseError as exc:
        return PolicyResult(name=name, expression=expression, passed=False, detail=f"syntax error: {exc}")
    except Exception as exc:  # noqa: BLE001 - CELEvalError and friends carry the reason in args
        reason = exc.args[0] if exc.args else repr(exc)
        return PolicyResult(name=name, expression=expression, passed=False, detail=f"cannot evaluate: {reason}")
    if isinstance(value, celtypes.BoolType):
        passed = bool(value)
        return PolicyResult(
            name=name, expression=expression, passed=passed, detail="true" if passed else "evaluated to false"
        )
    return PolicyResult(
        name=name,
        expression=expression,
        passed=False,
        detail=f"must evaluate to a boolean, got {type(value).__name__} {value!r}",
    )


def evaluate_policies(policies: Mapping[str, str], context: Mapping[str, Any]) -> list[PolicyResult]:
    """Evaluate every gate, in name order, and return each result."""
    return [evaluate_policy(name, policies[name], context) for name in sorted(policies)]


__all__ = ["PolicyResult", "compile_expression", "evaluate_policies", "evaluate_policy", "policy_context"]
