"""What every delivery stage shares: retries, resume keys and the incident hook.

A stage is a Prefect task declared with :func:`stage`. It retries only
:class:`~delivery.errors.TransientError`, with exponential backoff and jitter; it persists its
result under a key made of the release's ids, so a new flow run of the same release skips what
completed (stages 1-7 on ``(release_id, stage)``, stages 8-14 on
``(release_id, revision, stage, environment)``); and when it finally fails on something a retry
could have fixed, it records an incident with the full envelope for replay.

Keys carry :data:`RESULTS_VERSION`: a release resumed after an upgrade that changed a stage's
result model finds no stored result under the new keys and runs the stage again (every stage is
idempotent against the outside world), rather than reading an old result as a new one. The
stage's failpoint (:mod:`delivery.failpoints`) sits after the stage's work and before Prefect
persists its result: the one moment a crash loses a result whose effect already happened.
"""

from __future__ import annotations

import functools
import inspect
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from delivery import failpoints, provider_timing
from delivery.errors import DeliveryError, is_retryable, validated
from delivery.events import EventName, emit
from delivery.ids import ReleaseKey
from delivery.ledger import Ledger
from delivery.stages import stage_named

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

DEFAULT_RETRIES = int(os.environ.get("DELIVERY_STAGE_RETRIES", "3"))
BACKOFF_FACTOR = float(os.environ.get("DELIVERY_RETRY_BACKOFF_SECONDS", "1"))
# Raise when a stage's result model changes meaning: stored results of older keys are then ignored.
RESULTS_VERSION = 2


def _ids(parameters: Mapping[str, Any]) -> ReleaseKey:
    """Find release id, revision, environment and trace id among a stage's (or a flow's) parameters.

    A parameter is a typed model, or raw JSON where the release flow validates its parameter itself;
    a parameter named like a field (``release_id``, ``environment``...) wins over one carried inside.
    """
    found = ReleaseKey()
    for name, value in parameters.items():
        carried = ReleaseKey.of(value)
        found = ReleaseKey(*(mine if mine is not None else theirs for mine, theirs in zip(found, carried, strict=True)))
        if name == "environment" and not isinstance(value, str):
            value = getattr(value, "name", None)  # an environment's configuration names it
        named = ReleaseKey.of({name: value})
        found = ReleaseKey(*(theirs if theirs is not None else mine for mine, theirs in zip(found, named, strict=True)))
    return found


def stage_environment(parameters: dict[str, Any]) -> str | None:
    """The environment a stage's call acts on, found among its parameters (None: not per environment)."""
    return _ids(parameters)[2]


def stage_run_name(stage_name: str) -> Callable[..., str]:
    """Build the task run name function of a registered stage: ``NN-stage`` or ``NN-stage-<environment>``."""
    registered = stage_named(stage_name)

    def name(parameters: dict[str, Any]) -> str:  # Prefect passes the call's parameters by this name
        return registered.run_name(stage_environment(parameters))

    return name


def stage_cache_key(stage_name: str) -> Callable[[Any, dict[str, Any]], str | None]:
    """Build the cache key function of a registered stage: the release's business ids, nothing else."""
    per_environment = stage_named(stage_name).per_environment

    def key(_context: Any, parameters: dict[str, Any]) -> str | None:
        release_id, revision, environment, _ = _ids(parameters)
        if release_id is None:
            return None
        if per_environment:
            if environment is None:
                return None
            return f"v{RESULTS_VERSION}-release-{release_id}-r{revision or 1}-{stage_name}-{environment}"
        return f"v{RESULTS_VERSION}-release-{release_id}-{stage_name}"

    return key


def _exception(state: Any) -> BaseException | None:
    # raise_on_failure=False hands back the exception without re-raising it, so its traceback
    # does not collect the hook's frames.
    result = state.result(raise_on_failure=False)
    return result if isinstance(result, BaseException) else None


def retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: only a :class:`TransientError` may be retried."""
    return is_retryable(_exception(state))


def record_incident(task_obj: Any, task_run: Any, state: Any) -> None:
    """Failure hook: keep the envelope of a stage that failed on something retryable or unexpected."""
    error = _exception(state)
    if error is None:
        return
    if isinstance(error, DeliveryError) and not error.retryable:
        return  # a permanent outcome (policy, failed check, bad input) is a result, not an incident
    parameters = dict(task_run.parameters or {}) if hasattr(task_run, "parameters") else {}
    raise_incident(task_obj.name, error, attempts=task_run.run_count, task_run_id=str(task_run.id),
                   parameters=parameters)


def raise_incident(stage_name: str, error: BaseException, *, attempts: int, task_run_id: str | None = None,
                   parameters: dict[str, Any] | None = None) -> int:
    """Record an incident for a stage that gave up, emit ``IncidentRaised``, refresh the views; return its id.

    The stage task's failure hook calls it, and so does stage 9, which runs in flow code. The
    envelope holds the flow run's parameters (what a replay needs), the ids and the traceback.

    Args:
        stage_name: the stage (a task name, or ``request_approval``).
        error: what it failed with.
        attempts: how many times it ran.
        task_run_id: the failed task run, when the stage is a task.
        parameters: the stage's own parameters, used when no flow run context holds any.
    """
    from prefect.context import FlowRunContext

    from tasks.incidents import refresh_incident_views

    flow_ctx = FlowRunContext.get()
    own = dict(parameters or {})
    parameters = dict(flow_ctx.parameters) if flow_ctx is not None and flow_ctx.parameters else own
    release_id, _, _, trace_id = _ids(own)
    flow_ids = _ids(parameters)
    release_id, trace_id = release_id or flow_ids[0], trace_id or flow_ids[3]
    envelope = {
        "flow": flow_ctx.flow.name if flow_ctx else None,
        "flow_run_id": str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None,
        "deployment_id": str(flow_ctx.flow_run.deployment_id)
        if flow_ctx and flow_ctx.flow_run and flow_ctx.flow_run.deployment_id
        else None,
        "task": stage_name,
        "task_run_id": task_run_id,
        "attempts": attempts,
        "parameters": _jsonable(parameters),
        "trace_id": trace_id,
        "error_type": type(error).__name__,
        "error": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
    ledger = Ledger()
    incident_id = ledger.record_incident(
        flow=envelope["flow"] or "unknown",
        task=stage_name,
        error=f"{type(error).__name__}: {error}",
        envelope=envelope,
        release_id=release_id,
        trace_id=trace_id,
    )
    if release_id and trace_id:
        emit(
            EventName.INCIDENT_RAISED,
            release_id=release_id,
            trace_id=trace_id,
            payload={"incident_id": incident_id, "task": stage_name, "error": envelope["error"]},
        )
    refresh_incident_views(release_id, ledger)
    return incident_id


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def stage(
    name: str,
    *,
    retries: int = DEFAULT_RETRIES,
    timeout_seconds: float | None = None,
) -> Callable[[F], F]:
    """Declare a delivery stage as a Prefect task.

    Args:
        name: the stage's name in :mod:`delivery.stages`, e.g. ``create_commit``; also its task
            name. Stages per environment key their results by revision and environment too.
        retries: retries on :class:`TransientError`.
        timeout_seconds: the stage's own time limit.

    Returns:
        A decorator turning a function into the stage task.
    """

    stage_named(name)  # an unknown stage fails where it is declared

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            environment = stage_environment(dict(signature.bind_partial(*args, **kwargs).arguments))
            with provider_timing.stage_scope(name, environment):
                result = fn(*args, **kwargs)
            failpoints.hit(name)
            return result

        return task(  # type: ignore[return-value]
            run,
            name=name,
            task_run_name=stage_run_name(name),
            retries=retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=BACKOFF_FACTOR),
            retry_jitter_factor=0.5,
            retry_condition_fn=retry_transient,
            cache_key_fn=stage_cache_key(name),
            persist_result=True,
            timeout_seconds=timeout_seconds,
            on_failure=[record_incident],
        )

    return decorate


def coerce(model: type[M], value: M | Mapping[str, Any], *, stage_name: str) -> M:
    """Validate a stage's input, turning pydantic's error into :class:`InvalidInput` naming the fields.

    Args:
        model: the input model.
        value: an instance, or a mapping to validate.
        stage_name: the stage, for the message.

    Returns:
        The validated model.

    Raises:
        InvalidInput: the mapping does not fit the model.
    """
    if isinstance(value, model):
        return value
    return validated(model, value, context=f"{stage_name}: invalid input")
