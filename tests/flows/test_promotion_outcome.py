"""The error that stops the promotion path, from the environment's state and its recorded cause (pure)."""

from __future__ import annotations

import pytest

from delivery.errors import ApprovalRefused, HealthCheckFailed, PermanentError, PolicyViolation
from delivery.plan import PlanState, PromotionCause
from flows.promotion import EnvironmentOutcome

REJECTED, FAILED = PlanState.REJECTED, PlanState.FAILED


def outcome(state: PlanState | None, cause: PromotionCause | None, reason: str = "why") -> EnvironmentOutcome:
    return EnvironmentOutcome(environment="prod", state=state, revision=1, reason=reason, cause=cause)


@pytest.mark.parametrize(("state", "cause", "error"), [
    (REJECTED, PromotionCause.POLICY, PolicyViolation),
    (REJECTED, PromotionCause.SUPERSEDED, PolicyViolation),
    (REJECTED, PromotionCause.APPROVAL, ApprovalRefused),
    (REJECTED, PromotionCause.TIMEOUT, ApprovalRefused),
    (REJECTED, PromotionCause.CANCELLED, ApprovalRefused),
    (REJECTED, None, ApprovalRefused),  # a transition recorded before causes were
    (FAILED, PromotionCause.HEALTH_FAILED, HealthCheckFailed),
    (FAILED, PromotionCause.DEPLOY_FAILED, PermanentError),
    (FAILED, PromotionCause.SUPERSEDED, PermanentError),
    (FAILED, PromotionCause.CANCELLED, PermanentError),
    (FAILED, None, PermanentError),
], ids=str)
def test_the_stop_error_follows_the_state_and_the_cause(state, cause, error) -> None:
    stop = outcome(state, cause).stop_error(["later"])
    assert type(stop) is error
    assert str(stop) == f"prod: {state.value}: why; not touched: later"
    assert stop.reason == (cause.value if cause else error.__name__)


def test_a_deployed_environment_stops_nothing() -> None:
    assert outcome(PlanState.DEPLOYED, PromotionCause.DEPLOYED).stop_error(["later"]) is None
    assert str(outcome(FAILED, PromotionCause.DEPLOY_FAILED).stop_error()) == "prod: Failed: why"
