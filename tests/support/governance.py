"""Shared by the governance tests: requests, builds, and an approver working from another thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cli.client import DeliveryClient
from cli.client_models import PausedRun, ResumeResult
from delivery.models import (
    Artifact,
    BuildResult,
    BuildStatus,
    Decision,
    PublishedImage,
    ReleaseRequest,
    TestCounts,
)

DIGEST = "sha256:" + "b" * 64
PLANNER = "agent:release-manager"


def new_request(*, revision: int = 1, release_id: str | None = None, **fields) -> ReleaseRequest:
    return ReleaseRequest(
        release_id=release_id or f"rel-test-{uuid.uuid4().hex[:10]}",
        app="sample-app",
        artifacts=[Artifact.from_text("art-1", "app/config.txt", "greeting=hello\n")],
        requested_by=PLANNER,
        revision=revision,
        **fields,
    )


def succeeded_build(*, failed_tests: int = 0) -> BuildResult:
    return BuildResult(
        status=BuildStatus.SUCCEEDED,
        commit="c" * 40,
        run_id="run-1",
        tests=TestCounts(total=4, passed=4 - failed_tests, failed=failed_tests),
        images=[PublishedImage(repository="127.0.0.1:5000/sample-app", tag="t1", digest=DIGEST)],
    )


@dataclass
class Step:
    """One decision, and an optional check run on the next pause (the flow judged it and paused again).

    ``refused``: the resume call itself must answer REJECT with a reason containing this text; the
    run stays at the same wait.
    """

    approver: str
    decision: Decision = Decision.APPROVE
    environment: str | None = None
    comment: str = ""
    then: Callable[[], None] | None = None
    refused: str | None = None


@dataclass
class Approver:
    """Gives scripted decisions through the REST resume, from its own thread."""

    api_url: str
    release_id: str
    steps: Sequence[Step]
    timeout: float = 90.0
    results: list[ResumeResult] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Approver:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with DeliveryClient(self.api_url) as client:
                previous: PausedRun | None = None
                pending_check: Callable[[], None] | None = None
                for step in self.steps:
                    paused = client.wait_for_pause(
                        self.release_id, environment=step.environment, after=previous, timeout=self.timeout
                    )
                    if pending_check is not None:
                        pending_check()
                    result = client.resume(
                        paused.flow_run_id,
                        {"decision": step.decision.value, "approver": step.approver, "comment": step.comment},
                        environment=paused.environment,
                    )
                    self.results.append(result)
                    if step.refused is not None:
                        assert result.status == "REJECT" and step.refused in result.reason, result
                        assert client.paused_runs(self.release_id, environment=paused.environment), "still waiting"
                        continue
                    assert result.accepted, result
                    previous, pending_check = paused, step.then
                if pending_check is not None:
                    client.wait_for_pause(self.release_id, after=previous, timeout=self.timeout)
                    pending_check()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "approver thread still running"
        if self.error is not None:
            raise self.error
