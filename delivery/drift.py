"""The drift check's settings (an environment's ``drift`` section of delivery.yaml) and its report.

A drift check compares what Git says with what runs (:mod:`delivery.drift_compare`, with the
ignore rules of :mod:`delivery.field_paths`), reconciles it in ``reconcile`` mode, and moves the
environment's sync state (:mod:`delivery.sync_state`), which :mod:`delivery.sync_state_store`
keeps in the ledger database with the :class:`DriftReport`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from delivery.drift_compare import ObjectDrift
from delivery.errors import InvalidInput
from delivery.field_paths import parse_path
from delivery.sync_state import SyncStatus

# --------------------------------------------------------------------------- settings


class DriftMode(StrEnum):
    RECONCILE = "reconcile"
    DETECT = "detect"


def _ignore_rule(rule: str) -> str:
    """An ignore rule checked on its own, so a refusal names its index (``drift.ignore.<n>``)."""
    try:
        parse_path(rule)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
    return rule


class DriftSettings(BaseModel):
    """An environment's ``drift`` section of delivery.yaml, validated once when the file is loaded
    (:class:`delivery.config.EnvironmentConfig`), ignore rules included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: DriftMode = DriftMode.RECONCILE
    ignore: tuple[Annotated[str, AfterValidator(_ignore_rule)], ...] = Field(
        default=(), description="Field paths never compared, e.g. spec.replicas")
    degraded_after: int = Field(default=3, ge=1, description="consecutive checks with drift before Degraded")


# --------------------------------------------------------------------------- reports


class InfrastructureDrift(BaseModel):
    """The Pulumi stack's drift preview for an environment, or why it was skipped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str
    checked: bool
    skipped_reason: str | None = None
    changes: tuple[str, ...] = Field(default=(), description="resources the preview would change, e.g. 'update urn'")

    @property
    def drifted(self) -> bool:
        return bool(self.changes)


class DriftReport(BaseModel):
    """What one drift check of one environment found and did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    revision: str | None
    mode: DriftMode
    desired_objects: int
    live_objects: int
    drift: tuple[ObjectDrift, ...] = ()
    reconciled: bool = False
    remaining: tuple[ObjectDrift, ...] = Field(default=(), description="drift left after reconciling")
    reconcile_error: str | None = None
    infrastructure: InfrastructureDrift | None = None
    status: SyncStatus | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.drift) or bool(self.infrastructure and self.infrastructure.drifted)

    @property
    def missing(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "missing"]

    @property
    def extra(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "extra"]

    @property
    def changed(self) -> list[ObjectDrift]:
        return [d for d in self.drift if d.change == "changed"]

    def summary(self) -> str:
        """One line per drifted object, or a note that everything matches."""
        lines = [str(d) for d in self.drift]
        if self.infrastructure and self.infrastructure.drifted:
            lines += [f"infrastructure {self.infrastructure.stack}: {c}" for c in self.infrastructure.changes]
        return "\n".join(lines) if lines else f"{self.environment}: live state matches revision {self.revision}"


__all__ = ["DriftMode", "DriftReport", "DriftSettings", "InfrastructureDrift"]
