"""Stage 11: provision an environment's infrastructure when its configuration names a stack.

The environment's platform (``infra.platform``) is declared from the block's settings, previewed,
and applied only when the preview proposes changes other than the release stamp. A locked stack
is waited out; a stage retry after a failed apply first reconciles with Pulumi's state (refresh,
then a new preview). The event and the result carry the change summary and the non-secret
outputs; the kubeconfig stays in the stack and is read on demand (:func:`kubernetes_runtime_settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, SecretStr

from blocks.pulumi_stack import PulumiStack
from delivery.errors import InvalidInput, NotFound, validated
from delivery.events import EventName, emit
from delivery.ids import release_fields
from delivery.models import Model
from infra.stack_values import ApplyResult, Program, StackOutput
from tasks.stage import stage

STAGE = "provision_infrastructure"


class InfrastructureRequest(Model):
    """Which release provisions which environment (the ids the stage is keyed on)."""

    release_id: str = Field(min_length=1)
    trace_id: str = Field(min_length=1)
    revision: int = Field(default=1, ge=1)
    environment: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

    @classmethod
    def of(cls, source: Any) -> InfrastructureRequest:
        """Build from anything carrying the ids (a ``DeployTarget``, a plan...)."""
        if isinstance(source, cls):
            return source
        return validated(cls, release_fields(source), context=f"{STAGE}: invalid input", under="request")


class ClusterInfo(Model):
    """The cluster the environment's runtime can target."""

    name: str
    resource_group: str
    registry_login_server: str | None = None
    kubeconfig_output: str = Field(default="kubeconfig", description="Secret stack output holding the kubeconfig")


class InfrastructureResult(Model):
    """What provisioning did. Holds no secret: secret outputs are listed by name only."""

    environment: str
    project: str
    stack: str
    changed: bool
    change_summary: dict[str, int] = Field(default_factory=dict)
    resource_changes: dict[str, int] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    secret_outputs: list[str] = Field(default_factory=list)
    attempts: int = 1
    reconciled: bool = False
    cluster: ClusterInfo | None = None


def platform_spec(stack: PulumiStack, request: InfrastructureRequest) -> Any:
    """The platform to declare: the block's ``platform`` settings for this environment and release.

    Raises:
        InvalidInput: the settings do not fit ``PlatformSpec``; the message names the field.
    """
    from infra.platform import PlatformSpec  # azure-native loads only when a stack is provisioned

    reserved = {"environment", "release_id", "trace_id"} & set(stack.platform)
    if reserved:
        raise InvalidInput(f"{STAGE}: invalid input: platform.{sorted(reserved)[0]}: set by the release, not the block")
    values = {
        "location": stack.location,
        **stack.platform,
        "environment": request.environment,
        "release_id": request.release_id,
        "trace_id": request.trace_id,
    }
    return validated(PlatformSpec, values, context=f"{STAGE}: invalid input", under="platform")


def _unstamped(spec: Any) -> Callable[[Mapping[str, StackOutput]], Program | None]:
    """The platform as last applied, if only the release stamp had changed since."""
    from infra.platform import OUTPUT_RELEASE_ID, OUTPUT_TRACE_ID, platform_program

    def baseline(outputs: Mapping[str, StackOutput]) -> Program | None:
        previous = outputs.get(OUTPUT_RELEASE_ID)
        if previous is None or not previous.value or previous.value == spec.release_id:
            return None
        trace = outputs.get(OUTPUT_TRACE_ID)
        return platform_program(
            spec.model_copy(update={"release_id": previous.value, "trace_id": trace.value if trace else None})
        )

    return baseline


def _cluster(applied: ApplyResult) -> ClusterInfo | None:
    from infra.platform import OUTPUT_CLUSTER_NAME, OUTPUT_REGISTRY_LOGIN_SERVER, OUTPUT_RESOURCE_GROUP

    public = applied.public_outputs()
    if not public.get(OUTPUT_CLUSTER_NAME) or not public.get(OUTPUT_RESOURCE_GROUP):
        return None
    return ClusterInfo(
        name=str(public[OUTPUT_CLUSTER_NAME]),
        resource_group=str(public[OUTPUT_RESOURCE_GROUP]),
        registry_login_server=public.get(OUTPUT_REGISTRY_LOGIN_SERVER),
    )


def _run_count() -> int:
    from prefect.runtime import task_run

    try:
        return int(task_run.run_count or 1)
    except (TypeError, ValueError):
        return 1


@stage(STAGE)
def provision_infrastructure(stack: PulumiStack, request: InfrastructureRequest) -> InfrastructureResult:
    """Converge the environment's platform stack and report what changed.

    Args:
        stack: the environment's ``PulumiStack`` block.
        request: the release ids and the environment.

    Returns:
        The change summary, the non-secret outputs and the cluster the runtime can target.

    Raises:
        InvalidInput: the block's settings are malformed (names the field).
        StackLocked: the stack stayed locked (transient: the stage retries, reconciling first).
        PulumiCommandFailed: Pulumi failed; the message keeps the CLI's output with secrets masked.
    """
    from prefect import get_run_logger

    from infra.platform import platform_program

    request = InfrastructureRequest.of(request)
    spec = platform_spec(stack, request)
    # A retried stage follows a failed attempt: reconcile with the state before previewing again.
    reconcile_first = _run_count() > 1
    applied = stack.apply(platform_program(spec), baseline=_unstamped(spec), reconcile_first=reconcile_first)
    result = InfrastructureResult(
        environment=request.environment,
        project=stack.project,
        stack=stack.stack,
        changed=applied.changed,
        change_summary=applied.change_summary,
        resource_changes=applied.resource_changes,
        outputs=applied.public_outputs(),
        secret_outputs=applied.secret_output_names(),
        attempts=applied.attempts,
        reconciled=applied.reconciled or reconcile_first,
        cluster=_cluster(applied),
    )
    get_run_logger().info(
        "infrastructure of %s (%s/%s): %s, preview %s",
        request.environment,
        stack.project,
        stack.stack,
        "applied" if result.changed else "no changes",
        result.change_summary,
    )
    emit(
        EventName.INFRASTRUCTURE_PROVISIONED,
        release_id=request.release_id,
        trace_id=request.trace_id,
        payload=result,
        resource={"delivery.environment": request.environment},
    )
    return result


def load_stack(reference: str) -> PulumiStack:
    """Load a saved ``PulumiStack`` from ``pulumi-stack/<name>`` or a bare ``<name>``.

    Raises:
        NotFound: no block is saved under that reference.
        InvalidInput: the reference names another kind of block.
    """
    from prefect.blocks.core import Block

    try:
        block = Block.load(reference) if "/" in reference else PulumiStack.load(reference)
    except ValueError as exc:  # Prefect's answer for a missing document or type
        raise NotFound(f"infrastructure: no saved PulumiStack block {reference!r}: {exc}") from None
    if not isinstance(block, PulumiStack):
        raise InvalidInput(f"infrastructure: {reference!r} is a {type(block).__name__}, not a PulumiStack block")
    return block


def stack_ref_of(settings: Any) -> str | None:
    """The environment's stack reference: ``settings`` itself (a ref or None) or its ``infrastructure``."""
    if settings is None or isinstance(settings, str):
        return settings or None
    return getattr(settings, "infrastructure", None) or None


def provision_if_configured(
    target: Any,
    settings: Any,
    *,
    load: Callable[[str], PulumiStack] = load_stack,
) -> InfrastructureResult | None:
    """Run stage 11 when the environment's configuration names a stack; otherwise do nothing.

    Call it from the promotion loop, inside the flow:
    ``provision_if_configured(plan, environment_config)``.

    Args:
        target: anything carrying release_id, trace_id, revision and environment (a ``ReleasePlan``,
            a ``DeployTarget``, an :class:`InfrastructureRequest`).
        settings: the environment's configuration (its ``infrastructure`` block reference is used),
            or the reference itself (``"pulumi-stack/<name>"``), or None.
        load: how to load the block (tests may attach a fake CLI boundary).

    Returns:
        The stage's result, or None when the environment has no stack (the stage is not called).
    """
    stack_ref = stack_ref_of(settings)
    if not stack_ref:
        return None
    return provision_infrastructure(load(stack_ref), InfrastructureRequest.of(target))


def kubernetes_runtime_settings(stack: PulumiStack, result: InfrastructureResult) -> dict[str, SecretStr | str] | None:
    """Settings for a ``KubernetesRuntime`` pointed at the provisioned cluster.

    The kubeconfig is read from the stack's secret output now, so it never travels in results,
    events or logs.

    Returns:
        ``{"kubeconfig": SecretStr, "context": <cluster name>}``, or None without a cluster.
    """
    if result.cluster is None:
        return None
    kubeconfig = stack.secret_output(result.cluster.kubeconfig_output)
    if kubeconfig is None:
        return None
    return {"kubeconfig": kubeconfig, "context": result.cluster.name}
