"""What agents read about incidents without the ledger: the ``delivery-incidents`` table artifact.

An incident is raised by a stage that exhausted its retries (``tasks/stage.py``, and stage 9 in
``tasks/approval.py``) or by the recovery of a release run that kept crashing; it is replayed or
acknowledged by the operations of ``flows/recovery.py``. Each of these calls
:func:`refresh_incident_views`, which republishes, from the ledger:

- the table artifact ``delivery-incidents`` (:func:`publish_incidents`): one row per incident,
  newest first: id, status, release, trace, stage (``<number>-<name>``, or the flow when no stage
  failed), the error's first line (no traceback; credentials in URLs masked), and when it was
  raised. ``GET /api/artifacts/delivery-incidents/latest`` returns it; its ``data`` is the rows as
  a JSON string;
- the release's status artifact ``release-<id>`` (``flows/promotion.py:publish_status``).

Publishing is best effort: a failure to write the views is logged and never replaces the error
that raised the incident.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from delivery.ledger import Ledger
from delivery.stages import stage_named

INCIDENTS_ARTIFACT_KEY = "delivery-incidents"
# The newest incidents the artifact lists (older ones stay in the ledger: `delivery incidents list`).
ARTIFACT_ROWS = 500
ERROR_CHARS = 300
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_PAIRS = re.compile(r"(?P<key>(?:password|passwd|token|secret|api[_-]?key)\s*[=:]\s*)\S+", re.IGNORECASE)

logger = logging.getLogger(__name__)


def public_error(error: str) -> str:
    """An incident's error as it may be shown anywhere: its first line, credentials masked, bounded."""
    first = next((line.strip() for line in (error or "").splitlines() if line.strip()), "")
    first = _URL_CREDENTIALS.sub(r"\g<scheme>***@", first)
    first = _SECRET_PAIRS.sub(r"\g<key>***", first)
    return first if len(first) <= ERROR_CHARS else first[: ERROR_CHARS - 1] + "…"


def stage_label(task: str | None, flow: str) -> str:
    """``<number>-<stage>`` for a registered stage, the task's own name otherwise, else ``flow:<name>``."""
    if not task:
        return f"flow:{flow}"
    try:
        return stage_named(task).label
    except KeyError:
        return task


def incident_row(row: dict[str, Any]) -> dict[str, Any]:
    """One incident as the artifact lists it (nothing from the envelope but ids and the attempt count)."""
    envelope = row.get("envelope") or {}
    created = row.get("created_at")
    return {
        "id": row["id"],
        "status": row["status"],
        "release_id": row.get("release_id"),
        "trace_id": row.get("trace_id"),
        "stage": stage_label(row.get("task"), row.get("flow") or "unknown"),
        "error": public_error(row.get("error") or ""),
        "attempts": envelope.get("attempts") if isinstance(envelope, dict) else None,
        "flow_run_id": envelope.get("flow_run_id") if isinstance(envelope, dict) else None,
        "raised_at": created.isoformat() if created is not None else None,
    }


def incident_rows(ledger: Ledger | None = None) -> list[dict[str, Any]]:
    """The artifact's rows: the newest :data:`ARTIFACT_ROWS` incidents, newest first."""
    return [incident_row(row) for row in (ledger or Ledger()).incidents(limit=ARTIFACT_ROWS)]


def publish_incidents(ledger: Ledger | None = None) -> None:
    """Republish the ``delivery-incidents`` table artifact from the ledger."""
    from prefect.artifacts import create_table_artifact

    rows = incident_rows(ledger)
    open_count = sum(1 for row in rows if row["status"] == "open")
    create_table_artifact(
        key=INCIDENTS_ARTIFACT_KEY,
        table=rows,
        description=f"Delivery incidents, newest first: {open_count} open of {len(rows)} listed. Replay: "
                    "the replay-incident deployment; acknowledge: acknowledge-incident.",
    )


def refresh_incident_views(release_id: str | None, ledger: Ledger | None = None) -> None:
    """After an incident was raised, replayed or acknowledged: the incidents artifact and the release's status.

    Never raises: the views are rebuilt on the next change anyway, and the caller's own error matters more.
    """
    ledger = ledger or Ledger()
    try:
        publish_incidents(ledger)
        if release_id:
            from tasks.summary import publish_status

            publish_status(release_id, ledger)
    except Exception as exc:  # noqa: BLE001 - best effort, logged
        logger.warning("could not refresh the incident views (release %s): %s: %s", release_id,
                       type(exc).__name__, exc)


__all__ = [
    "INCIDENTS_ARTIFACT_KEY",
    "incident_row",
    "incident_rows",
    "public_error",
    "publish_incidents",
    "refresh_incident_views",
]
