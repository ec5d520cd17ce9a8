"""`delivery down` and `delivery up` while a release waits for its approval: the approval, given to the
new stack, continues the release to the same end as an uninterrupted one.

A stack of its own (not the suite's shared one), as a user runs it: `up`, a release to staging
started through the API, `down` while it is suspended for staging, `up` again in the same folder
(new ports, a new empty simulator; the Prefect database, ledger and repositories kept), the
approval through the CLI against the new API, then the release's end: run Completed, dev and
staging Deployed, each transition written once, staging serving the built image. The API
credential is the same after `up` again (the state folder's ``api-auth``), and the client finds
it there (``DELIVERY_HOME``), as the CLI of a user who never exported it does.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from fault_support import PLANNER, release_request, serving_images, uninterrupted_transitions
from pydantic import SecretStr
from typer.testing import CliRunner

from blocks.gitops_repo import GitOpsRepo
from blocks.kubernetes_runtime import KubernetesRuntime
from cli.client import DeliveryClient
from cli.main import app
from cli.stack import down, up
from delivery import failpoints
from delivery.config import load_config
from delivery.ledger import Ledger
from delivery.signing import KEYS_DIR_ENV

pytestmark = pytest.mark.timeout(900)


def _say(line: str) -> None:
    print(f"[down-up] {line}", file=sys.stderr, flush=True)


def test_a_release_waiting_for_approval_lives_through_down_and_up(monkeypatch):
    # a stack as a user starts it: none of the shared fault stack's settings
    monkeypatch.delenv(failpoints.SETTING, raising=False)
    monkeypatch.delenv("DELIVERY_RECOVERY_ATTEMPTS", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.delenv(KEYS_DIR_ENV, raising=False)  # the planner and alice sign with this stack's keys
    home = Path(tempfile.mkdtemp(prefix="delivery-down-up-")) / "stack"
    monkeypatch.setenv("DELIVERY_HOME", str(home))  # the client reads the credential from <home>/api-auth
    try:
        first = up(home=home, say=_say)
        request = release_request(target="staging")
        with DeliveryClient(first.api_url) as client:
            started = client.start_release(request)
            client.wait_for_pause(request.release_id, environment="staging", timeout=600)
        down(home=home, say=_say)

        second = up(home=home, say=_say)
        assert second.api_url != first.api_url  # a new server process on a new port, the same database
        assert second.auth_string() == first.auth_string() and second.auth_file == first.auth_file
        approved = CliRunner().invoke(app, ["release", "approve", request.release_id, "--as", "user:alice",
                                            "-e", "staging", "--wait", "120", "--api-url", second.api_url, "--json"])
        assert approved.exit_code == 0, approved.output
        assert [r["status"] for r in json.loads(approved.output)] == ["ACCEPT"]
        with DeliveryClient(second.api_url) as client:
            final = client.wait_for_run(started.flow_run_id, timeout=600)
        assert (final["state"]["type"], final["state"]["name"]) == ("COMPLETED", "Completed")

        ledger = Ledger(second.ledger_url)
        plans = {p.environment: p.state.value for p in ledger.plans(release_id=request.release_id)}
        assert plans == {"dev": "Deployed", "staging": "Deployed"}
        written = Counter(f"{t.plan_id}: {t.from_state.value} -> {t.to_state.value}"
                          for p in ledger.plans(release_id=request.release_id) for t in ledger.transitions(p.plan_id))
        assert written == uninterrupted_transitions(request.release_id, ["dev", "staging"])
        [image] = {i.reference for p in ledger.plans(release_id=request.release_id) for i in p.build.images}
        runtime = KubernetesRuntime(kubeconfig=SecretStr(Path(second.kubeconfig).read_text()))
        config = load_config(GitOpsRepo(url=second.gitops_repo).read_config())
        assert serving_images(runtime, config.environment("staging").namespace, app=request.app) == {image}
        assert [a.approver for a in ledger.approvals(f"{request.release_id}/r1/staging")] == ["user:alice"]
        assert ledger.plans(release_id=request.release_id)[0].planned_by == PLANNER
    finally:
        down(home=home, say=_say)
        shutil.rmtree(home.parent, ignore_errors=True)
