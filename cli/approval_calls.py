"""The approval half of :class:`~cli.client.DeliveryClient`: find the waits, decide, learn the verdict.

A decision is a resume of the waiting run (``POST /api/flow_runs/{id}/resume``) whose orchestration
``status`` (ACCEPT, REJECT, ABORT) is the answer, never the HTTP code. Where the environment counts
signed decisions only, the decision is signed over the statement the wait asks for (its
``<key>-request`` input); the flow's verdict on a signature comes back as the ``<key>-verdict`` input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.client_models import PausedRun, ResumeResult
from delivery.approvals import ApprovalInput
from delivery.decision_audit import record_refused_resumes, refuse_after_timeout
from delivery.errors import ApprovalRefused, NotFound, TransientError
from delivery.identity import Statement, sign
from delivery.ids import waiting_environment
from delivery.models import Decision
from delivery.signing import find_signing_key

if TYPE_CHECKING:
    import httpx


class ApprovalCalls:
    """Calls on a release's approval waits; mixed into :class:`~cli.client.DeliveryClient`."""

    def request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:  # pragma: no cover - mixin
        raise NotImplementedError

    def release_runs(self, release_id: str, *, state_types: list[str] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - mixin

    def paused_runs(self, release_id: str, *, environment: str | None = None) -> list[PausedRun]:
        """The release's promotions waiting for a decision, optionally in one environment."""
        paused = []
        for run in self.release_runs(release_id, state_types=["PAUSED"]):
            details = (run.get("state") or {}).get("state_details") or {}
            env = waiting_environment(details.get("pause_key"))
            if environment is not None and env != environment:
                continue
            paused.append(
                PausedRun(
                    flow_run_id=str(run["id"]),
                    name=run.get("name") or "",
                    environment=env,
                    pause_key=details.get("pause_key"),
                    paused_at=(run.get("state") or {}).get("timestamp"),
                )
            )
        return paused

    def wait_for_pause(
        self,
        release_id: str,
        *,
        environment: str | None = None,
        after: PausedRun | None = None,
        timeout: float = 120.0,
        interval: float = 0.5,
    ) -> PausedRun:
        """Wait until a promotion of the release pauses for a decision (a new pause, if ``after``).

        Raises:
            TransientError: nothing paused within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for run in self.paused_runs(release_id, environment=environment):
                if after is None or (run.flow_run_id, run.pause_key) != (after.flow_run_id, after.pause_key):
                    return run
            if time.monotonic() >= deadline:
                where = f" in {environment}" if environment else ""
                raise TransientError(f"release {release_id}: no promotion paused for approval{where} in {timeout} s")
            time.sleep(interval)

    def resume(self, flow_run_id: str, run_input: Mapping[str, Any], *, environment: str | None = None) -> ResumeResult:
        """Resume a paused run with input; return the orchestration status (never trust the HTTP code).

        The flow saves its input schema just after it pauses: a resume in between is retried briefly.
        """
        deadline = time.monotonic() + 10
        while True:
            response = self.request("POST", f"/flow_runs/{flow_run_id}/resume", json={"run_input": dict(run_input)})
            body = response.json()
            reason = ((body.get("details") or {}).get("reason")) or ""
            result = ResumeResult(
                flow_run_id=flow_run_id, environment=environment, status=str(body.get("status", "")), reason=reason
            )
            if result.status == "REJECT" and "schema not found" in reason and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            return result

    def decide(
        self,
        release_id: str,
        *,
        decision: Decision,
        approver: str,
        environment: str | None = None,
        comment: str = "",
        wait: float = 0.0,
        key: Path | None = None,
        verdict_timeout: float = 120.0,
    ) -> list[ResumeResult]:
        """Send one decision to every promotion of the release waiting (in ``environment``), and wait for the verdict.

        Where the environment counts signed decisions only, the decision is signed with the
        approver's key (``key``, else ``DELIVERY_SIGNING_KEY``, else the keys folder: see
        :func:`delivery.signing.find_signing_key`) over the statement the wait asks for. A resume
        that reaches the run between two waits is sent again to the next wait.

        Args:
            release_id: the release.
            decision: approve or reject.
            approver: the deciding identity.
            environment: only this environment's promotion.
            comment: why.
            wait: seconds to wait for a pause when none is there yet.
            key: the private key to sign with.
            verdict_timeout: seconds to wait for the flow's verdict once the resume was accepted.

        Returns:
            One result per paused run, with the flow's verdict (``counted``).

        Raises:
            NotFound: nothing of that release is waiting for a decision.
            ApprovalRefused: refused by the resume call (the reason names the field) or by the flow
                (a bad signature: its reason), or no signing key for a signed environment.
        """
        paused = self.paused_runs(release_id, environment=environment)
        if not paused and wait > 0:
            try:
                paused = [self.wait_for_pause(release_id, environment=environment, timeout=wait)]
            except TransientError:
                paused = []
        if not paused:
            refuse_after_timeout(release_id, environment=environment, decision=decision, approver=approver,
                                 comment=comment)
            where = f" in {environment}" if environment else ""
            raise NotFound(f"release {release_id}: no promotion is waiting for approval{where}")
        results = [self._decide_one(release_id, run, decision=decision, approver=approver, comment=comment, key=key,
                                    verdict_timeout=verdict_timeout) for run in paused]
        record_refused_resumes(release_id, [(r.environment, r.reason) for r in results if r.status == "REJECT"],
                               decision=decision, approver=approver, comment=comment)
        refused = [r for r in results if not r.accepted or r.counted is False]
        if refused:
            raise ApprovalRefused(
                "; ".join(f"{r.environment or r.flow_run_id}: {r.status}: {r.reason}" for r in refused)
            )
        return results

    def _decide_one(self, release_id: str, run: PausedRun, *, decision: Decision, approver: str, comment: str,
                    key: Path | None, verdict_timeout: float) -> ResumeResult:
        for _ in range(3):  # the run may be between two waits: the decision goes to the next one
            asked = self.wait_request(run)
            run_input = ApprovalInput(decision=decision, approver=approver, comment=comment,
                                      signature=self._signature(asked, approver=approver, decision=decision, key=key))
            result = self.resume(run.flow_run_id, run_input.model_dump(mode="json", exclude_defaults=not asked.get(
                "signed")), environment=run.environment)
            if result.status == "ABORT" and "not paused" in result.reason:
                run = self.wait_for_pause(release_id, environment=run.environment, after=run, timeout=verdict_timeout)
                continue
            if result.accepted:
                verdict = self.wait_verdict(run, timeout=verdict_timeout)
                if verdict is not None:
                    result = result.model_copy(update={"counted": bool(verdict.get("counted")),
                                                       "reason": verdict.get("reason") or ""})
            return result
        return result

    def _signature(self, asked: Mapping[str, Any], *, approver: str, decision: Decision, key: Path | None) -> str:
        if not asked.get("signed"):
            return ""
        path = find_signing_key(approver, key=key)
        if path is None:
            raise ApprovalRefused(f"{asked.get('environment')}: decisions must be signed: give --key (or set "
                                  f"DELIVERY_SIGNING_KEY) with the private key registered for {approver}")
        statement = Statement(kind="approval", signer=approver, release_id=asked["release_id"],
                              revision=asked["revision"], environment=asked["environment"],
                              plan_digest=asked["plan_digest"], decision=decision,
                              at=datetime.fromisoformat(asked["at"].replace("Z", "+00:00")))
        return sign(statement, key_path=path).render()

    def _run_input(self, run: PausedRun, suffix: str) -> dict[str, Any] | None:
        try:
            value = self.request("GET", f"/flow_runs/{run.flow_run_id}/input/{run.pause_key}{suffix}").json()
        except NotFound:
            return None
        return dict(json.loads(value) if isinstance(value, str) else value)

    def wait_request(self, run: PausedRun, *, timeout: float = 10.0) -> dict[str, Any]:
        """What a wait asks for (its ``<key>-request`` input: the statement to sign, who may decide)."""
        deadline = time.monotonic() + timeout
        while (asked := self._run_input(run, "-request")) is None and time.monotonic() < deadline:
            time.sleep(0.2)  # written just before the run suspends; an older run may not write it at all
        return asked or {}

    def wait_verdict(self, run: PausedRun, *, timeout: float) -> dict[str, Any] | None:
        """The flow's verdict on the decision sent to ``run``'s wait, or None when none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (verdict := self._run_input(run, "-verdict")) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return verdict

    def approve(self, release_id: str, *, approver: str, **options: Any) -> list[ResumeResult]:
        """Approve the release's paused promotion(s); see :meth:`decide`."""
        return self.decide(release_id, decision=Decision.APPROVE, approver=approver, **options)

    def reject(self, release_id: str, *, approver: str, **options: Any) -> list[ResumeResult]:
        """Reject the release's paused promotion(s); see :meth:`decide`."""
        return self.decide(release_id, decision=Decision.REJECT, approver=approver, **options)


__all__ = ["ApprovalCalls"]
