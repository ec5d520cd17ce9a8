"""ArgoCDRuntime against an in-test Argo CD API on 127.0.0.1 (tests/support/argocd.py): sync at a revision and
wait, the health gate, the rollback, the error policy, and the configuration that refuses what Argo CD cannot run.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from support.argocd import (
    APPLICATION,
    ENVIRONMENT,
    PASSWORD,
    STATIC_TOKEN,
    FakeArgo,
    promoted,
    runtime_for,
    serve_argo,
)
from support.runtime import APP, IMAGE_V1, IMAGE_V2

from blocks.argocd_runtime import ArgoCDRuntime
from blocks.gitops_repo import GitOpsRepo
from blocks.loading import BLOCK_MODULES, product_block_classes
from delivery.config import parse_config
from delivery.errors import AuthenticationError, InvalidInput, NotFound, PermanentError, TransientError
from tasks.health import HealthSpec, evaluate_health
from tasks.promote import Promotion, write_promotion
from tasks.rollback import RollbackSpec, restore_healthy
from tasks.sync import SyncSpec, reconcile


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    with serve_argo() as state:
        yield state


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    gitops = GitOpsRepo(url=str(tmp_path / "gitops.git"))
    gitops.ensure_exists(initial_files={"delivery.yaml": b"path: [dev]\n"})
    return gitops


# --------------------------------------------------------------------------- sync, health, rollback


def test_a_sync_at_a_revision_logs_in_and_waits_until_synced_then_the_gate_until_healthy(
    argo: FakeArgo, repo: GitOpsRepo
) -> None:
    runtime = runtime_for(argo, username="admin", password=SecretStr(PASSWORD))
    where, revision = promoted(repo, IMAGE_V1)

    synced = reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))

    assert argo.syncs() == [{"revision": revision, "prune": True, "dryRun": False}]
    assert synced.sync_requested and not synced.no_op and synced.git_revision == revision
    assert synced.application is not None and synced.application.synced_at(revision)
    assert argo.count("POST", "/api/v1/session") == 1  # one login, its token reused
    reads_during_sync = argo.count("GET", APPLICATION)
    assert reads_during_sync >= 1 + argo.reads_to_sync  # the read before, then polled until Synced

    gate = evaluate_health(runtime, repo, HealthSpec(**where, git_revision=revision, timeout_seconds=5,
                                                      poll_seconds=0.01))

    assert gate.healthy and gate.tagged, gate.message
    assert gate.application is not None and gate.application.healthy_at(revision)
    assert argo.count("GET", APPLICATION) > reads_during_sync  # it waited through Progressing
    assert repo.healthy_revision(ENVIRONMENT, APP) == revision


def test_the_second_sync_at_the_same_revision_posts_nothing(argo: FakeArgo, repo: GitOpsRepo) -> None:
    runtime = runtime_for(argo)
    where, revision = promoted(repo, IMAGE_V1)
    reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))
    runtime.wait_healthy(APPLICATION, revision, timeout_seconds=5, poll_seconds=0.01)

    again = reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))

    assert again.no_op and not again.sync_requested
    assert len(argo.syncs()) == 1


def test_argo_cd_reporting_a_newer_head_with_the_same_manifests_counts_as_synced_at_the_revision(
    argo: FakeArgo, repo: GitOpsRepo
) -> None:
    runtime = runtime_for(argo)
    where, revision = promoted(repo, IMAGE_V1)
    other = {**where, "environment": "staging", "namespace": "staging-ns"}
    argo.reported_head = write_promotion(repo, Promotion(**other, files={"x.yaml": "a: 1\n"})).git_revision

    synced = reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))
    gate = evaluate_health(runtime, repo, HealthSpec(**where, git_revision=revision, timeout_seconds=5,
                                                      poll_seconds=0.01))

    assert synced.sync_requested and gate.healthy, gate.message
    # a head that changed this Application's manifests is not the revision asked for
    _, newer = promoted(repo, IMAGE_V2)
    argo.reported_head = newer
    with pytest.raises(PermanentError, match=f"not Synced at {revision[:12]} after 1s"):
        reconcile(runtime.model_copy(update={"sync_timeout_seconds": 1}), repo,
                  SyncSpec(**where, git_revision=revision))


def test_degraded_fails_the_gate_with_argo_cds_reason_and_tags_nothing(argo: FakeArgo, repo: GitOpsRepo) -> None:
    runtime = runtime_for(argo)
    where, revision = promoted(repo, IMAGE_V1)
    argo.degraded.add(revision)
    reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))

    started = time.monotonic()
    gate = evaluate_health(runtime, repo, HealthSpec(**where, git_revision=revision, timeout_seconds=30,
                                                      poll_seconds=0.01))

    assert time.monotonic() - started < 5  # Degraded ends the wait, it does not run into the timeout
    assert not gate.healthy and not gate.tagged
    assert gate.message.startswith("Degraded: ")
    assert "exceeded its progress deadline" in gate.message
    assert repo.healthy_revision(ENVIRONMENT, APP) is None


def test_still_progressing_at_the_timeout_fails_the_gate(argo: FakeArgo, repo: GitOpsRepo) -> None:
    runtime = runtime_for(argo)
    where, revision = promoted(repo, IMAGE_V1)
    argo.reads_to_health = 10_000
    reconcile(runtime, repo, SyncSpec(**where, git_revision=revision))

    gate = evaluate_health(runtime, repo, HealthSpec(**where, git_revision=revision, timeout_seconds=0.3,
                                                      poll_seconds=0.02))

    assert not gate.healthy
    assert gate.message.startswith("not healthy after 0.3s (Progressing)"), gate.message


def test_rollback_syncs_the_commit_restoring_the_last_healthy_revision(argo: FakeArgo, repo: GitOpsRepo) -> None:
    runtime = runtime_for(argo)
    where, good = promoted(repo, IMAGE_V1)
    reconcile(runtime, repo, SyncSpec(**where, git_revision=good))
    assert evaluate_health(runtime, repo, HealthSpec(**where, git_revision=good, poll_seconds=0.01)).tagged
    _, bad = promoted(repo, IMAGE_V2)
    argo.degraded.add(bad)
    reconcile(runtime, repo, SyncSpec(**where, git_revision=bad))
    assert not evaluate_health(runtime, repo, HealthSpec(**where, git_revision=bad, poll_seconds=0.01)).healthy

    result = restore_healthy(runtime, repo, RollbackSpec(**where, failed_revision=bad, reason="Degraded",
                                                         timeout_seconds=5, poll_seconds=0.01))

    assert result.restored_from == good and result.committed and result.healthy, result.message
    assert argo.syncs()[-1] == {"revision": result.git_revision, "prune": True, "dryRun": False}
    # the synced commit holds exactly the healthy revision's manifests (Git keeps saying what runs)
    assert repo.read_environment(ENVIRONMENT, APP, ref=result.git_revision) == \
        repo.read_environment(ENVIRONMENT, APP, ref=good)
    assert result.application is not None and result.application.healthy_at(result.git_revision)
    assert [body["revision"] for body in argo.syncs()] == [good, bad, result.git_revision]


# --------------------------------------------------------------------------- errors


def test_429_and_503_are_retried_then_the_read_succeeds(argo: FakeArgo) -> None:
    runtime = runtime_for(argo)
    argo.fail_next = [429, 503]

    status = runtime.status(APPLICATION)

    assert status.sync_status == "OutOfSync"
    assert argo.count("GET", APPLICATION) == 3


def test_5xx_beyond_the_retries_is_transient(argo: FakeArgo) -> None:
    runtime = runtime_for(argo, request_retries=1)
    argo.fail_next = [502, 502]

    with pytest.raises(TransientError, match="answered 502 after 2 attempt"):
        runtime.status(APPLICATION)


def test_a_refused_token_is_permanent_and_never_repeated(argo: FakeArgo) -> None:
    wrong = "wrong-token-s3cr3t"
    runtime = runtime_for(argo, token=SecretStr(wrong))

    with pytest.raises(AuthenticationError) as refused:
        runtime.status(APPLICATION)

    assert not refused.value.retryable
    assert "refused the credentials (401)" in str(refused.value) and "token" in str(refused.value)
    assert wrong not in str(refused.value) and wrong not in repr(refused.value)
    assert argo.count("GET", APPLICATION) == 1  # not retried


def test_a_refused_password_is_permanent_and_never_repeated(argo: FakeArgo) -> None:
    runtime = runtime_for(argo, username="admin", password=SecretStr("not-" + PASSWORD))

    with pytest.raises(AuthenticationError) as refused:
        runtime.status(APPLICATION)

    assert PASSWORD not in str(refused.value) and "username and password" in str(refused.value)
    assert argo.count("POST", "/api/v1/session") == 1


def test_an_expired_session_logs_in_again_once(argo: FakeArgo) -> None:
    runtime = runtime_for(argo, username="admin", password=SecretStr(PASSWORD))
    runtime.status(APPLICATION)
    argo.tokens.clear()  # every session token expired

    runtime.status(APPLICATION)

    assert argo.count("POST", "/api/v1/session") == 2


def test_an_unknown_application_is_not_found(argo: FakeArgo) -> None:
    with pytest.raises(NotFound, match="does the Application exist"):
        runtime_for(argo).status("nope-dev")


def test_an_unreachable_server_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    runtime = ArgoCDRuntime(server_url=f"http://127.0.0.1:{port}", token=SecretStr(STATIC_TOKEN),
                            request_retries=1, retry_backoff_seconds=0.01)

    with pytest.raises(TransientError, match="unreachable after 2 attempt"):
        runtime.status(APPLICATION)


# --------------------------------------------------------------------------- configuration


BASE = {"server_url": "https://argocd.example", "token": "t0ken"}


@pytest.mark.parametrize(("fields", "error"), [
    (BASE, None),
    ({"server_url": "https://argocd.example", "username": "admin", "password": "pw"}, None),
    ({**BASE, "application_name": "{environment}-{app}"}, None),
    ({**BASE, "prnue": False}, "Extra inputs are not permitted"),
    ({"server_url": "https://argocd.example"}, "give a token, or username and password"),
    ({**BASE, "username": "admin", "password": "pw"}, "either token or username/password"),
    ({"server_url": "https://argocd.example", "username": "admin"}, "username and password go together"),
    ({**BASE, "server_url": "argocd.example"}, "server_url"),
    ({**BASE, "application_name": "{app}-{cluster}"}, "unknown placeholder(s) {cluster}"),
    ({**BASE, "sync_timeout_seconds": 0}, "sync_timeout_seconds"),
    ({**BASE, "request_retries": -1}, "request_retries"),
    ({**BASE, "poll_seconds": 0}, "poll_seconds"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_the_blocks_configuration(fields: dict[str, Any], error: str | None) -> None:
    if error is None:
        runtime = ArgoCDRuntime(**fields)
        assert "t0ken" not in repr(runtime) and "pw" not in repr(runtime).replace("password=", "")
        return
    with pytest.raises(ValidationError, match=error.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}")):
        ArgoCDRuntime(**fields)


def environments(runtime: str, strategy: Any = "rolling", **extra: Any) -> dict[str, Any]:
    return {"path": ["dev"], "environments": {"dev": {"namespace": "dev-ns", "runtime": runtime,
                                                      "strategy": strategy, **extra}}}


@pytest.mark.parametrize(("config", "error"), [
    (environments("argocd-runtime/prod"), None),
    (environments("argocd-runtime/prod", health={"http_probe": "https://app.example/healthz"}), None),
    (environments("kubernetes-runtime/local", "blue_green"), None),
    (environments("argocd-runtime/prod", "blue_green"),
     "strategy blue_green needs direct cluster access"),
    (environments("argocd-runtime/prod", {"name": "canary", "steps": [25, 100]}),
     "strategy canary needs direct cluster access"),
    (environments("argocd-runtime/prod", health={"http_probe": "/healthz"}),
     "a probe through the Service proxy needs direct cluster access"),
])
def test_delivery_yaml_refuses_what_argo_cd_cannot_run(config: dict[str, Any], error: str | None) -> None:
    if error is None:
        parse_config(config)
        return
    with pytest.raises(InvalidInput) as refused:
        parse_config(config)
    assert error in str(refused.value)
    if "strategy" in error:
        assert "ArgoCDRuntime supports rolling" in str(refused.value)


def test_the_block_type_is_registered() -> None:
    assert "blocks.argocd_runtime" in BLOCK_MODULES
    assert "argocd-runtime" in {cls.get_block_type_slug() for cls in product_block_classes()}



def test_a_release_request_asking_argo_cd_for_canary_is_refused() -> None:
    from delivery.models import Artifact, ReleaseRequest
    from flows.promotion import check_request

    config = parse_config({"path": ["dev", "prod"], "environments": {
        "dev": {"namespace": "dev-ns", "runtime": "kubernetes-runtime/local"},
        "prod": {"namespace": "prod-ns", "runtime": "argocd-runtime/prod"}}})
    notes = Artifact.from_text("notes", "CHANGES.md", "- x\n")

    def request(**fields: Any) -> ReleaseRequest:
        return ReleaseRequest(release_id="rel-argo-request", app=APP, requested_by="agent:planner",
                              artifacts=[notes], **fields)

    assert check_request(request(), config) == ["dev", "prod"]
    assert check_request(request(strategy={"name": "canary"}, target_environment="dev"), config) == ["dev"]
    with pytest.raises(InvalidInput, match="environment 'prod': strategy canary needs direct cluster access"):
        check_request(request(strategy={"name": "canary"}), config)
