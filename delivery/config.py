"""The delivery configuration: ``delivery.yaml`` at the root of the GitOps repository.

It holds the promotion path and, per environment, where and how to deploy (namespace, runtime
block, default strategy, template values), the gates (CEL policies, approval rules, health) and
the optional infrastructure stack and drift handling. An invalid file is refused as a whole with
:class:`~delivery.errors.InvalidInput`, each problem naming its field, e.g.
``environments.prod.approval.min_approvers: ...``. CEL expressions are compiled while loading, so
a syntax error is reported here and not at the gate.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from delivery.drift import DriftSettings
from delivery.errors import InvalidInput, validated
from delivery.ids import normalise_identity
from delivery.models import STRATEGY_NAMES, RollingStrategy, Strategy
from delivery.policy import compile_expression

CONFIG_FILE = "delivery.yaml"
BLOCK_REF_PATTERN = r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENVIRONMENT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
# The block type of blocks/argocd_runtime.py: Argo CD applies, the product never reaches the cluster itself,
# so only strategies gated on the Application as a whole (rolling) can run there.
ARGOCD_RUNTIME_SLUG = "argocd-runtime"
ARGOCD_STRATEGIES = ("rolling",)


def strategy_refusal(strategy: str) -> str:
    """Why ArgoCDRuntime refuses ``strategy`` (one message for config validation, requests and the deploy)."""
    return (f"strategy {strategy} needs direct cluster access (its phases are gated on single Deployments; "
            f"Argo CD reports health per Application); ArgoCDRuntime supports {', '.join(ARGOCD_STRATEGIES)}")


def runtime_refusal(runtime: str, strategy: str) -> str | None:
    """Why the runtime block ``runtime`` (a reference) cannot run ``strategy``, or None when it can."""
    if runtime.partition("/")[0] == ARGOCD_RUNTIME_SLUG and strategy not in ARGOCD_STRATEGIES:
        return strategy_refusal(strategy)
    return None


class ConfigModel(BaseModel):
    """Base of the configuration sections: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cel(expression: str) -> str:
    compile_expression(expression)
    return expression


def _strategy_shorthand(value: Any) -> Any:
    # `strategy: rolling` is the common case; the mapping form carries parameters (canary steps).
    if isinstance(value, str):
        if value not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGY_NAMES)}")
        return {"name": value}
    return value


CelExpression = Annotated[str, Field(min_length=1), AfterValidator(_check_cel)]
ConfiguredStrategy = Annotated[Strategy, BeforeValidator(_strategy_shorthand)]
BlockRef = Annotated[str, Field(pattern=BLOCK_REF_PATTERN, description="<block-type-slug>/<block-name>")]


class ApprovalRules(ConfigModel):
    """Who must sign a plan before it is promoted."""

    required: bool = False
    approvers: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Identities (or fnmatch patterns such as user:*) allowed to approve"
    )
    # validate_default: `required: true` with no approvers and no min_approvers is refused too.
    min_approvers: int = Field(default=1, ge=1, validate_default=True, description="Distinct approvers needed")
    timeout_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    signed: bool = Field(default=False, description="Decisions and the planner's request must carry signatures "
                         "of keys registered in identities/allowed_signers")

    @field_validator("approvers")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for identity in value:
            key = normalise_identity(identity)
            if key in seen:
                raise ValueError(f"approver {identity!r} is listed twice")
            seen.add(key)
        return value

    @field_validator("min_approvers")
    @classmethod
    def _reachable(cls, value: int, info: ValidationInfo) -> int:
        approvers = info.data.get("approvers")
        if not info.data.get("required") or approvers is None:
            return value
        if not approvers:
            raise ValueError("approval is required but no approvers are listed")
        has_pattern = any(ch in identity for identity in approvers for ch in "*?[")
        if not has_pattern and value > len(approvers):
            raise ValueError(
                f"{value} distinct approvers are required but only {len(approvers)} are allowed"
            )
        return value


class HttpProbe(ConfigModel):
    """An HTTP probe that must answer ``expected_status`` once the rollout is ready.

    With ``url`` it is called directly; otherwise ``path`` is called on the application's Service
    (or ``service``) through the API server's service proxy, as ``kubectl`` would. The health stage
    takes it as it is (:class:`tasks.health.HealthSpec`).
    """

    url: str | None = Field(default=None, pattern=r"^https?://")
    path: str = Field(default="/healthz", pattern=r"^/")
    port: int | str | None = Field(default=None, description="Service port number or name; default its only port")
    service: str | None = Field(default=None, description="Service to probe; default the application's")
    expected_status: int = Field(default=200, ge=100, le=599)

    def where(self, namespace: str, app: str) -> str:
        """What is probed, for messages."""
        if self.url:
            return self.url
        port = f":{self.port}" if self.port is not None else ""
        return f"service {namespace}/{self.service or app}{port}{self.path}"


def _probe_shorthand(value: Any) -> Any:
    # `http_probe: /healthz` probes through the Service; `http_probe: http://...` calls the URL.
    if isinstance(value, str):
        return {"url": value} if "://" in value else {"path": value}
    return value


class HealthGates(ConfigModel):
    """When a deployment counts as healthy."""

    timeout_seconds: int = Field(default=120, ge=1, le=3600)
    http_probe: Annotated[HttpProbe | None, BeforeValidator(_probe_shorthand)] = None


class EnvironmentConfig(ConfigModel):
    """One environment of the promotion path."""

    namespace: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    runtime: BlockRef
    strategy: ConfiguredStrategy = Field(default_factory=RollingStrategy)
    values: dict[str, Any] = Field(default_factory=dict, description="Template values over deploy/values.yaml")
    policies: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")], CelExpression] = Field(
        default_factory=dict, description="Policy gates: name -> CEL expression that must be true"
    )
    approval: ApprovalRules = Field(default_factory=ApprovalRules)
    health: HealthGates = Field(default_factory=HealthGates)
    infrastructure: BlockRef | None = Field(default=None, description="A saved PulumiStack block")
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @model_validator(mode="after")
    def _runtime_can_run(self) -> EnvironmentConfig:
        refusal = runtime_refusal(self.runtime, self.strategy.name)
        if refusal:
            raise ValueError(refusal)
        probe = self.health.http_probe
        if self.runtime.partition("/")[0] == ARGOCD_RUNTIME_SLUG and probe is not None and not probe.url:
            raise ValueError("health.http_probe: a probe through the Service proxy needs direct cluster access; "
                             "with ArgoCDRuntime give http_probe as a URL")
        return self


class DeliveryConfig(ConfigModel):
    """The whole ``delivery.yaml``."""

    path: list[Annotated[str, Field(pattern=ENVIRONMENT_NAME_PATTERN)]] = Field(min_length=1)
    environments: dict[Annotated[str, Field(pattern=ENVIRONMENT_NAME_PATTERN)], EnvironmentConfig]

    @field_validator("path")
    @classmethod
    def _unique_path(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"an environment appears twice in the path {value}")
        return value

    @model_validator(mode="after")
    def _path_matches_environments(self) -> DeliveryConfig:
        missing = [name for name in self.path if name not in self.environments]
        extra = [name for name in self.environments if name not in self.path]
        if missing:
            raise ValueError(f"path: {', '.join(missing)} on the path but not under environments")
        if extra:
            raise ValueError(f"environments: {', '.join(extra)} configured but not on the path")
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        """Return an environment's settings.

        Raises:
            InvalidInput: the environment is not on the path.
        """
        if name not in self.environments:
            raise InvalidInput(
                f"unknown environment {name!r}; the promotion path is {' -> '.join(self.path)}"
            )
        return self.environments[name]

    def path_to(self, target: str | None) -> list[str]:
        """The environments to walk, in order, up to and including ``target`` (default: all).

        Raises:
            InvalidInput: ``target`` is not on the path.
        """
        if target is None:
            return list(self.path)
        self.environment(target)
        return self.path[: self.path.index(target) + 1]


def parse_config(data: Any, *, source: str = CONFIG_FILE) -> DeliveryConfig:
    """Validate an already parsed configuration.

    Raises:
        InvalidInput: naming each bad field and what is wrong with it.
    """
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return validated(DeliveryConfig, data, context=source)


def load_config(raw: bytes | str | None, *, source: str = CONFIG_FILE) -> DeliveryConfig:
    """Parse and validate ``delivery.yaml``.

    Args:
        raw: the file's bytes (None when the file does not exist).
        source: how to name the file in messages.

    Returns:
        The validated configuration, CEL policies compiled.

    Raises:
        InvalidInput: missing file, YAML syntax error, or an invalid field (named in the message).
    """
    if raw is None:
        raise InvalidInput(f"{source}: not found at the root of the GitOps repository")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        raise InvalidInput(f"{source}: the file is empty")
    return parse_config(data, source=source)


__all__ = [
    "ARGOCD_RUNTIME_SLUG",
    "ARGOCD_STRATEGIES",
    "CONFIG_FILE",
    "ApprovalRules",
    "DeliveryConfig",
    "EnvironmentConfig",
    "HealthGates",
    "HttpProbe",
    "load_config",
    "parse_config",
    "runtime_refusal",
    "strategy_refusal",
]
