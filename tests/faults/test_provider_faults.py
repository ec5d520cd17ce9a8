"""A transient fault at every provider call is retried, and the release completes with no duplicate.

One whole release of the sample app to prod (tests/support/release.py: real Prefect server, git
repositories, pipeline, registry, Kubernetes simulator, ledger; approvals by other identities
through the REST resume) with one fault armed at each provider the release talks to, all at once,
each injected in the provider itself (tests/faults/provider_fault_support.py):

- git push rejected: the app repository's first push of the release branch and of ``main`` (the
  merge), and every GitOps push (one per phase), fail once as while another writer holds the ref;
- registry 5xx: a proxy in front of the registry answers 503 to the first blob upload and to the
  first manifest upload of the image;
- Kubernetes 409 and 503: the simulator answers the first apply of a Deployment in dev with 409
  and in staging with 503;
- Pulumi stack locked: dev names an infrastructure stack whose first ``up`` meets Pulumi's
  ``ConcurrentUpdateError`` (the recording CLI boundary of infra/testing.py).

Each fault must have fired exactly as armed, the call must have been retried (stage task runs
with run_count 2, or the block's or step's own retry where the product retries there), and the
outside world must hold each effect once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from git import Repo
from provider_fault_support import RegistryFaultProxy, install_push_faults, manifest_revisions
from pydantic import SecretStr
from support.governance import Approver, Step
from support.release import APP, ENVIRONMENTS, PLANNER, ReleaseStack, Services, release_services, wire_release_stack

from blocks.image_registry import OciImageRegistry
from blocks.pulumi_stack import PulumiStack
from delivery.git_grammar import parse_trailers
from delivery.plan import PlanState
from infra.pulumi_backend import backend_override
from infra.testing import RecordingBackend, locked_error

APPROVALS = [Step("user:alice", environment="staging"), Step("user:bob", environment="prod"),
             Step("user:carol", environment="prod")]


@pytest.fixture(scope="module")
def services(prefect_server, registry) -> Iterator[Services]:
    with release_services(registry) as running:
        yield running


@pytest.fixture(scope="module")
def registry_proxy(registry) -> Iterator[RegistryFaultProxy]:
    with RegistryFaultProxy(registry.url) as proxy:
        yield proxy


def _save_as(block, stack: ReleaseStack) -> None:
    """Save a block under the name wire_release_stack gave its role (the variables point there)."""
    block.save(f"release-{stack.suffix}", overwrite=True)


def _poll(api: str, path: str, body: dict, done, *, timeout: float = 30.0, what: str = "") -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{api}{path}", json=body, timeout=10)
        response.raise_for_status()
        found = response.json()
        found = found.get("events", found) if isinstance(found, dict) else found
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or path} not there within {timeout}s: {found}")
        time.sleep(0.25)


def stage_runs(api: str, release_id: str, wanted: set[str]) -> dict[str, list[int]]:
    """Run counts of the release's stage task runs by task run name (``13-sync_environment-dev[deploy]``...).

    Task run states reach the API asynchronously: wait until the ``wanted`` names are there and
    every run of the release is Completed.
    """
    body = {"task_runs": {"tags": {"all_": [f"release:{release_id}"]}}, "limit": 200}

    def settled(runs: list[dict]) -> bool:
        return wanted <= {r["name"] for r in runs} and all(r["state_type"] == "COMPLETED" for r in runs)

    counts: dict[str, list[int]] = {}
    for run in _poll(api, "/task_runs/filter", body, settled, what="the completed stage task runs"):
        counts.setdefault(run["name"], []).append(run["run_count"])
    return counts


def gitops_commits(stack: ReleaseStack, release_id: str) -> list[dict[str, list[str]]]:
    with Repo(stack.repo.url) as gitops:
        return [trailers for c in gitops.iter_commits("main")
                if release_id in (trailers := parse_trailers(c.message)).get("Release-Id", [])]


def test_a_transient_fault_at_every_provider_call_is_retried_and_the_release_completes(
    services: Services, registry_proxy: RegistryFaultProxy, registry, tmp_path: Path, monkeypatch, ledger,
    prefect_server: str,
):
    from flows.release import release

    stack = wire_release_stack(services, tmp_path, monkeypatch, ledger)
    request = stack.request()
    rid = request.release_id

    # dev names an infrastructure stack (the Pulumi CLI boundary is the recording fake).
    pulumi_name = f"faults-dev-{uuid.uuid4().hex[:8]}"
    PulumiStack(stack="dev", passphrase=SecretStr("faults-passphrase"), lock_backoff_seconds=0.05).save(
        pulumi_name, overwrite=True)
    config = yaml.safe_load(stack.repo.read_config())
    config["environments"]["dev"]["infrastructure"] = f"pulumi-stack/{pulumi_name}"
    stack.repo.write_files({"delivery.yaml": yaml.safe_dump(config, sort_keys=False).encode()},
                           message="provider faults: dev has an infrastructure stack", trailers=[])
    # GitOps writes go through a push, as to any remote GitOps repository (the in-place fast path of a
    # local repository runs no server-side hook); the image goes through the faulty proxy.
    stack.repo.direct_writes = False
    _save_as(stack.repo, stack)
    _save_as(OciImageRegistry(url=registry_proxy.url), stack)

    # Arm one fault at each provider.
    app_pushes = install_push_faults(stack.host.clone_url(APP), tmp_path / "faults" / "app")
    app_pushes.arm(f"refs/heads/{request.branch}").arm("refs/heads/main")
    gitops_pushes = install_push_faults(stack.repo.url, tmp_path / "faults" / "gitops")
    gitops_pushes.arm("refs/heads/main", times=len(ENVIRONMENTS))
    blob_503 = registry_proxy.arm("PUT", rf"^/v2/{APP}/blobs/uploads/")
    manifest_503 = registry_proxy.arm("PUT", rf"^/v2/{APP}/manifests/")
    conflict_409 = services.sim.inject_fault("PATCH", rf"/namespaces/{stack.namespace('dev')}/deployments/", 409)
    unavailable_503 = services.sim.inject_fault(
        "PATCH", rf"/namespaces/{stack.namespace('staging')}/deployments/", 503)
    pulumi = RecordingBackend(outputs={"cluster_name": "aks-delivery-dev", "resource_group_name": "rg-delivery-dev"})
    pulumi.fail("up", locked_error())
    main_before = stack.host.resolve(APP, "main")

    started = time.monotonic()
    approver = Approver(prefect_server, rid, APPROVALS, timeout=240).start()
    with backend_override(pulumi):
        state = release(request, return_state=True)
    assert state.is_completed(), f"{state.type}: {state.message}"
    approver.join(timeout=60)
    summary = state.result()
    elapsed = time.monotonic() - started

    # The release completed: every environment Deployed, each plan's history written once.
    assert [(e.environment, e.state) for e in summary.promotion.environments] == [
        (env, PlanState.DEPLOYED) for env in ENVIRONMENTS]
    approvers = {"dev": "system:policy-gate", "staging": "user:alice", "prod": "user:carol"}
    for env in ENVIRONMENTS:
        history = [(t.from_state.value, t.to_state.value, t.actor) for t in ledger.transitions(f"{rid}/r1/{env}")]
        assert [h[:2] for h in history] == [("Planned", "PendingApproval"), ("PendingApproval", "Approved"),
                                            ("Approved", "Promoting"), ("Promoting", "Deployed")], env
        assert history[0][2] == PLANNER and history[1][2] == approvers[env], env
    [image] = summary.build.images
    for env in ENVIRONMENTS:
        assert stack.images(env) == {f"{image.repository}@{image.digest}"}, env

    # Every fault fired exactly as armed.
    branch, main = f"refs/heads/{request.branch}", "refs/heads/main"
    assert (app_pushes.count("rejected", branch), app_pushes.count("rejected", main)) == (1, 1)
    assert gitops_pushes.count("rejected", main) == len(ENVIRONMENTS)
    assert (blob_503.fired, manifest_503.fired) == (1, 1)
    assert (conflict_409.fired, unavailable_503.fired) == (1, 1)
    assert pulumi.calls.count("up") == 2 and "refresh" in pulumi.calls

    # ... and was retried where the product retries it.
    runs = stage_runs(prefect_server, rid, {"01-create_commit", "04-merge_pull_request", "06-run_pipeline",
                                            "13-sync_environment-dev[deploy]",
                                            "13-sync_environment-staging[deploy-blue]"})
    assert runs["01-create_commit"] == [2] and runs["04-merge_pull_request"] == [2], runs
    syncs = sorted(count for name, counts in runs.items() if "sync_environment" in name for count in counts)
    assert syncs == [1, 2, 2], runs  # dev's 409 and staging's 503, one retry each; prod's apply met no fault
    assert runs["06-run_pipeline"] == [1], runs  # the publish step retried the push itself: one pipeline run
    [run_dir] = [p for p in Path(stack.runner.work_dir).iterdir() if p.is_dir()]
    image_logs = "".join(p.read_text() for p in sorted((run_dir / "logs" / "publish_image").glob("*.log")))
    assert image_logs.count("##[warning] attempt") == 2 and "registry answered 503" in image_logs
    # GitOps: the block rebased and pushed again after each rejection (promote itself did not fail).
    gitops_log = [e.what for e in gitops_pushes.log() if e.ref == main]
    assert gitops_log.count("rejected") == len(ENVIRONMENTS)
    assert all(gitops_log[i + 1:i + 3] == ["passed", "updated"] for i, what in enumerate(gitops_log)
               if what == "rejected"), gitops_log
    # Pulumi: the runner refreshed and previewed again before the second up (stage 11 reports it).
    provisioned = _poll(prefect_server, "/events/filter", {
        "filter": {"related": {"id": [f"delivery.trace.{request.trace_id}"]},
                   "event": {"name": ["delivery.InfrastructureProvisioned"]}}, "limit": 10},
        lambda events: len(events) >= 1, what="InfrastructureProvisioned")
    [event] = provisioned
    assert event["payload"]["attempts"] == 2 and event["payload"]["reconciled"] is True
    failed_up = pulumi.calls.index("up")
    assert pulumi.calls[failed_up + 1] == "refresh" and pulumi.calls[-2:] == ["preview", "up"], pulumi.calls
    # Every failure was retried away: no incident.
    assert ledger.incidents() == []
    # No duplicate anywhere.
    assert app_pushes.updates().count(branch) == 1
    with Repo(stack.host.clone_url(APP)) as app:
        assert len(list(app.iter_commits(f"{main_before}..{branch}"))) == 1  # one release commit
        merges = [c for c in app.iter_commits("main") if len(c.parents) == 2
                  and rid in parse_trailers(c.message).get("Release-Id", [])]
    assert len(merges) == 1 and merges[0].hexsha == summary.merge.merge_sha
    assert len(list((Path(stack.host.clone_url(APP)).with_suffix(".prs")).glob("*.json"))) == 1
    assert stack.registry_tags() == [image.tag]
    assert manifest_revisions(registry.root, APP) == [image.digest]
    assert registry_proxy.seen("PUT", rf"^/v2/{APP}/manifests/", status=201) == 1
    commits = gitops_commits(stack, rid)
    phases = Counter((c["Environment"][0], c["Delivery-Phase"][0]) for c in commits)
    assert sorted(env for env, _ in phases) == sorted(ENVIRONMENTS) and set(phases.values()) == {1}, phases
    assert gitops_pushes.updates().count(main) == len(commits)
    assert pulumi.calls.count("up") == 2  # one met the lock, one applied
    print(f"provider faults: release {rid} completed in {elapsed:.1f}s")  # noqa: T201 - runtime in -s output
