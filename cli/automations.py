"""The Prefect automations the product relies on, created (or updated) by ``delivery up``.

For a production server, run :func:`setup_automations` once against it (``delivery up`` does it
for the local stack), and start workers with ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30``.

- ``delivery-release-heartbeat``: when a release run's heartbeats stop (its process died with its
  worker, or the host went down), ``recover-release`` is asked to mark it Crashed; it does so
  only when the run still claims to be Running (or Pending) and has given no sign of life since
  (:func:`flows.recovery.recover_release`). A suspended or paused run stops beating on purpose,
  and its Suspended/Paused state event, like any state after a heartbeat, satisfies the trigger.
  But the flow-run process can beat once more just after it suspended (its heartbeat thread stops
  when the process unwinds): that late beat opens a window no state event closes, and a
  trigger that changed the run's state by itself would crash the approval wait 75 s later. So
  the automation only asks, and the product, which reads the run's current state, decides.
- ``delivery-release-crashed``: a release run that became Crashed (by the heartbeat automation,
  or by its worker seeing the process die) runs the ``recover-release`` deployment, which
  resubmits it, bounded and audited.
- ``delivery-release-failed``: a release run that failed runs ``recover-release`` too; it acts
  only when the failure is Prefect's server expiring an approval wait (the plan is rejected for
  timeout, with no worker needed at expiry: the recovery runs when one is up).
- ``delivery-incident-raised``: with an alert webhook configured, ``IncidentRaised`` calls it.
- ``delivery-approval-requested``: with an alert webhook configured, ``ApprovalRequested`` (a release
  waits for a decision: who may decide, a link to the run) calls it.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from delivery.events import EventName, event_type
from delivery.settings import HEARTBEAT_SECONDS
from flows.release_runs import GONE_AFTER_SECONDS

# Silence after the last heartbeat that means the process died: two missed beats and a margin (the
# recovery sweep's judgement too), so that detection plus the server's proactive evaluation stays under 120 s.
SILENCE_SECONDS = GONE_AFTER_SECONDS
RECOVERY_DEPLOYMENT = "recover-release/recover-release"
RELEASE_FLOW = {"prefect.resource.role": "flow", "prefect.resource.name": "release"}
_STATES_AFTER_A_BEAT = ("Completed", "Failed", "Cancelled", "Cancelling", "Crashed", "Suspended", "Paused",
                        "Scheduled", "AwaitingRetry", "Pending", "Running")
_RUN_ID = "{{ event.resource.id.split('.')[-1] }}"

def _webhook_payload(*fields: str) -> str:
    """The JSON body a webhook gets for a release event: the event, the release, ``fields`` of its payload, its id."""
    lines = ['"alert": "{{ event.event }}"',
             "\"release_id\": {{ event.resource.get('prefect.resource.name', '') | tojson }}",
             *(f'"{field}": {{{{ event.payload.{field} | tojson }}}}' for field in fields),
             '"event_id": "{{ event.id }}"', '"occurred": "{{ event.occurred }}"']
    return "{\n  " + ",\n  ".join(lines) + "\n}"


INCIDENT_PAYLOAD = _webhook_payload("incident_id", "task", "error")
APPROVAL_PAYLOAD = _webhook_payload("environment", "approvers", "still_needed", "signed", "link")


def upsert_automation(name: str, *, description: str, trigger: object, actions: list[object]) -> UUID:
    """Create the automation called ``name``, or update the one that exists; return its id."""
    from prefect.automations import Automation

    try:
        existing = Automation.read(name=name)
    except ValueError:
        existing = None
    if existing is None:
        return Automation(name=name, description=description, trigger=trigger, actions=actions,
                          enabled=True).create().id
    existing.trigger, existing.actions, existing.description, existing.enabled = trigger, actions, description, True
    existing.update()
    return existing.id


def _deployment_id(name: str) -> UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).id


def setup_recovery() -> dict[str, UUID]:
    """Create the crash-detection and recovery automations (needs the ``recover-release`` deployment)."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    def on_release_run(state: str) -> EventTrigger:
        return EventTrigger(expect={f"prefect.flow-run.{state}"}, match={"prefect.resource.id": "prefect.flow-run.*"},
                            match_related=RELEASE_FLOW, posture=Posture.Reactive, threshold=1)

    recovery = _deployment_id(RECOVERY_DEPLOYMENT)
    recover = RunDeployment(source="selected", deployment_id=recovery, parameters={"flow_run_id": _RUN_ID})
    check_silence = RunDeployment(source="selected", deployment_id=recovery,
                                  parameters={"flow_run_id": _RUN_ID, "silent_for": SILENCE_SECONDS})
    silence = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in _STATES_AFTER_A_BEAT)},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=RELEASE_FLOW,
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=SILENCE_SECONDS),
    )
    return {
        "delivery-release-heartbeat": upsert_automation(
            "delivery-release-heartbeat", trigger=silence,
            description=(f"When a release run's heartbeats stop for {SILENCE_SECONDS} s, recover-release marks "
                         "it Crashed if it still claims to run (never a suspended, paused or scheduled run)."),
            actions=[check_silence]),
        "delivery-release-crashed": upsert_automation(
            "delivery-release-crashed", actions=[recover],
            description="Resubmits a crashed release run (recover-release: bounded, audited).",
            trigger=on_release_run("Crashed")),
        "delivery-release-failed": upsert_automation(
            "delivery-release-failed", actions=[recover],
            description="Settles a release run whose approval wait expired (recover-release).",
            trigger=on_release_run("Failed")),
    }


def _on_release_event(name: str, event: EventName, *, description: str, webhook_block_id: UUID,
                      payload: str) -> UUID:
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    trigger = EventTrigger(expect={event_type(event)}, match={"prefect.resource.id": "delivery.release.*"},
                           posture=Posture.Reactive, threshold=1)
    return upsert_automation(name, trigger=trigger, description=description,
                             actions=[CallWebhook(block_document_id=webhook_block_id, payload=payload)])


def setup_incident_alerts(webhook_block_id: UUID) -> UUID:
    """Call the alert webhook (a saved Webhook block) on every ``IncidentRaised``."""
    return _on_release_event("delivery-incident-raised", EventName.INCIDENT_RAISED, webhook_block_id=webhook_block_id,
                             description="Calls the configured webhook when a release raises an incident.",
                             payload=INCIDENT_PAYLOAD)


def setup_approval_alerts(webhook_block_id: UUID) -> UUID:
    """Call the alert webhook (a saved Webhook block) on every ``ApprovalRequested``: approvers are told."""
    return _on_release_event("delivery-approval-requested", EventName.APPROVAL_REQUESTED,
                             webhook_block_id=webhook_block_id, payload=APPROVAL_PAYLOAD,
                             description="Calls the configured webhook when a release waits for a decision.")


__all__ = [
    "HEARTBEAT_SECONDS",
    "SILENCE_SECONDS",
    "setup_approval_alerts",
    "setup_incident_alerts",
    "setup_recovery",
    "upsert_automation",
]
