"""The event catalogue and the emitter.

Every event is a Prefect event named ``delivery.<Name>`` whose resource is the release
(``delivery.release.<release_id>``) and whose related resource is the trace
(``delivery.trace.<trace_id>``, role ``trace``), so ``/api/events/filter`` finds a whole release
by its trace id. Payloads are domain models as JSON.

This is the one module of ``delivery/`` that imports Prefect.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger(__name__)


class EventName(StrEnum):
    COMMIT_CREATED = "CommitCreated"
    PULL_REQUEST_OPENED = "PullRequestOpened"
    PULL_REQUEST_CHECKED = "PullRequestChecked"
    PULL_REQUEST_MERGED = "PullRequestMerged"
    PIPELINE_GENERATED = "PipelineGenerated"
    PIPELINE_RUN_STARTED = "PipelineRunStarted"
    BUILD_COMPLETED = "BuildCompleted"
    RELEASE_PLANNED = "ReleasePlanned"
    APPROVAL_REQUESTED = "ApprovalRequested"
    APPROVAL_COUNTED = "ApprovalCounted"
    APPROVAL_REFUSED = "ApprovalRefused"
    RELEASE_APPROVED = "ReleaseApproved"
    RELEASE_REJECTED = "ReleaseRejected"
    MANIFEST_RENDERED = "ManifestRendered"
    INFRASTRUCTURE_PROVISIONED = "InfrastructureProvisioned"
    DEPLOYMENT_PROMOTED = "DeploymentPromoted"
    GITOPS_SYNCED = "GitOpsSynced"
    HEALTH_CHECKED = "HealthChecked"
    ROLLBACK_COMPLETED = "RollbackCompleted"
    DRIFT_DETECTED = "DriftDetected"
    SYNC_DEGRADED = "SyncDegraded"
    SYNC_RECOVERED = "SyncRecovered"
    INCIDENT_RAISED = "IncidentRaised"
    IDENTITY_REVOKED = "IdentityRevoked"


EVENT_PREFIX = "delivery."


def event_type(name: EventName | str) -> str:
    """The Prefect event name for a catalogue entry, e.g. ``delivery.CommitCreated``."""
    return EVENT_PREFIX + EventName(name).value


def release_resource(release_id: str) -> str:
    return f"delivery.release.{release_id}"


def trace_resource(trace_id: str) -> str:
    return f"delivery.trace.{trace_id}"


def ui_base_url(api_url: str | None = None) -> str | None:
    """The Prefect UI's address: ``PREFECT_UI_URL``, else the API's address without ``/api``.

    Args:
        api_url: the Prefect API the caller talks to (default: ``PREFECT_API_URL``).
    """
    import os

    explicit = os.environ.get("PREFECT_UI_URL")
    if explicit:
        return explicit.rstrip("/")
    if api_url:
        return api_url.rstrip("/").removesuffix("/api")
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    api = PREFECT_API_URL.value()
    if api:
        return api.rstrip("/").removesuffix("/api")
    configured = PREFECT_UI_URL.value()
    return configured.rstrip("/") if configured else None


def events_link(resource_id: str, ui_url: str | None) -> str | None:
    """The Prefect UI's Event feed filtered to one resource: ``<ui>/v2/events?resource=["<id>"]`` (URL-encoded).

    Measured in Prefect 3.9 (the React UI under ``/v2``, where ``/`` leads): its Event feed route
    validates ``resource`` as a list of strings and reads query values as JSON, so the id goes in
    as a JSON list; a bare string there fails the page ("expected array, received string"). It asks
    the API for ``any_resource.id_prefix``, so the feed shows every event whose resource or a related
    resource starts with that id: for ``delivery.release.<id>`` the release's events (the Prefect
    events of its flow and task runs relate to tags, not to it). The page opens on the past day,
    ending at the start of the current minute: an event shows once that minute has passed, and an
    older release needs the range widened there. An id that is a prefix of another's (``rel-1``,
    ``rel-10``) shows both.
    """
    import json
    from urllib.parse import quote

    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/v2/events?resource={quote(json.dumps([resource_id]), safe='')}"


def run_link(flow_run_id: object, ui_url: str | None) -> str | None:
    """A flow run's page in the Prefect UI: ``<ui>/v2/runs/flow-run/<id>`` (the React UI ``/`` leads to)."""
    return f"{ui_url.rstrip('/')}/v2/runs/flow-run/{flow_run_id}" if ui_url and flow_run_id else None


def release_events_link(release_id: str, ui_url: str | None) -> str | None:
    """The Event feed filtered to a release's events (``delivery.release.<id>``)."""
    return events_link(release_resource(release_id), ui_url)


def trace_events_link(trace_id: str, ui_url: str | None) -> str | None:
    """The Event feed filtered to a trace's events (``delivery.trace.<id>``, related to every event)."""
    return events_link(trace_resource(trace_id), ui_url)


def _dump_dict(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, BaseModel):
            out[key] = value.model_dump(mode="json")
        elif isinstance(value, list):
            out[key] = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        else:
            out[key] = value
    return out


def event_fields(
    name: EventName | str,
    *,
    release_id: str,
    trace_id: str,
    payload: BaseModel | dict[str, Any] | None = None,
    resource: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The event :func:`emit` sends, as Prefect's ``emit_event`` arguments (and ``POST /api/events`` fields).

    Args:
        name: a catalogue entry.
        release_id: the release, used as the event's resource.
        trace_id: the trace, added as a related resource with role ``trace``.
        payload: a domain model or a dict of them; must hold no secret.
        resource: extra labels for the resource (for example the environment).
    """
    if isinstance(payload, BaseModel):
        body = payload.model_dump(mode="json")
    else:
        body = _dump_dict(payload or {})
    return {
        "event": event_type(name),
        "resource": {
            "prefect.resource.id": release_resource(release_id),
            "prefect.resource.name": release_id,
            **(resource or {}),
        },
        "related": [
            {
                "prefect.resource.id": trace_resource(trace_id),
                "prefect.resource.role": "trace",
                "prefect.resource.name": trace_id,
            }
        ],
        "payload": body,
    }


def emit(
    name: EventName | str,
    *,
    release_id: str,
    trace_id: str,
    payload: BaseModel | dict[str, Any] | None = None,
    resource: dict[str, str] | None = None,
) -> Any:
    """Emit ``delivery.<name>`` for a release (arguments as :func:`event_fields`).

    Returns:
        The Prefect event, or None when no events client is configured.
    """
    from prefect.events import emit_event

    return emit_event(**event_fields(name, release_id=release_id, trace_id=trace_id, payload=payload,
                                     resource=resource))
