"""What :class:`~cli.client.DeliveryClient` returns: frozen models that reject unknown fields."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from delivery.models import Decision
from delivery.plan import PlanState


class ClientModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartedRelease(ClientModel):
    """What ``start_release`` returns."""

    release_id: str
    trace_id: str
    revision: int
    flow_run_id: str
    flow_run_name: str
    created: bool = Field(description="False when the idempotency key returned an existing run")
    run_url: str | None = Field(default=None, description="The release run's page in the Prefect UI")
    events_url: str | None = Field(default=None, description="The Prefect UI's Event feed filtered to the release")


class PausedRun(ClientModel):
    """A release run waiting for a decision in one environment (suspended, or paused in its process)."""

    flow_run_id: str
    name: str
    environment: str | None
    pause_key: str | None
    paused_at: datetime | None = None


class ResumeResult(ClientModel):
    """The orchestration answer to a resume."""

    flow_run_id: str
    environment: str | None
    status: str = Field(description="ACCEPT, REJECT or ABORT")
    reason: str = ""
    counted: bool | None = Field(default=None, description="The flow's verdict: counted, refused, or not known yet")

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPT"


class RunStatus(ClientModel):
    flow_run_id: str
    name: str
    flow: str | None = None
    state: str
    environment: str | None = None


class RefusedDecision(ClientModel):
    """A decision the flow refused, and why (kept in the ledger)."""

    approver: str
    decision: Decision
    reason: str
    at: datetime


class PlanStatus(ClientModel):
    environment: str
    revision: int
    state: PlanState
    planned_by: str
    approvers: list[str]
    updated_at: datetime
    attempt: int = Field(default=1, description="Promotion attempt (raised by each retry)")
    reason: str = Field(default="", description="Why the plan is in its state (its last transition's reason)")
    actor: str | None = Field(default=None, description="Who or what moved it there")
    refused: list[RefusedDecision] = Field(default_factory=list, description="Decisions refused, with the reason")


class ReleaseStatus(ClientModel):
    """A release as the ledger and Prefect see it."""

    release_id: str
    trace_id: str | None
    plans: list[PlanStatus]
    runs: list[RunStatus]
    waiting_for_approval: list[str] = Field(description="Environments paused for a decision")
    events_url: str | None = Field(default=None, description="The Prefect UI's Event feed filtered to the release")


class Operation(ClientModel):
    """An operation on a release that ran (retry, cancel, replay)."""

    deployment: str
    flow_run_id: str
    flow_run_name: str
    state: str


__all__ = ["ClientModel", "Operation", "PausedRun", "PlanStatus", "RefusedDecision", "ReleaseStatus", "ResumeResult",
           "RunStatus", "StartedRelease"]
