"""A release's timeline from the ledger and Git alone (Prefect's events expired or out of reach).

A real ledger (SQLite) walked through the state machine, and real bare repositories holding the
commits the product writes (``Release-Id``/``Trace-Id`` trailers).
"""

from __future__ import annotations

from pathlib import Path

from support.overview import fail, new_plan

from blocks.git_repository import commits_with_trailer
from blocks.git_writes import commit_files, init_bare
from delivery.drift import DriftMode, DriftReport
from delivery.drift_compare import ObjectDrift
from delivery.errors import TransientError
from delivery.ledger import Ledger
from delivery.models import Artifact, CheckResult, CheckStatus, MergeInfo, PullRequest, ReleaseRequest
from delivery.objects import ObjectKey
from delivery.timeline import TraceEvent, collect_trace_events, ledger_entries
from tasks.drift import record_reconcile
from tasks.pull_request import record_checks, record_merge
from tasks.timeline import release_timeline


def _repository(path: Path, commits: list[tuple[str, str]]) -> Path:
    """A bare repository with one commit per (release id, environment) on main, trailers as the product writes."""
    init_bare(path, initial_files={"README.md": b"seed\n"})
    for n, (release_id, environment) in enumerate(commits):
        commit_files(path, branch="main", files={f"{environment}/objects-{n}.yaml": f"n: {n}\n".encode()},
                     message=f"{environment}: deploy {release_id}",
                     trailers=[("Release-Id", release_id), ("Trace-Id", "t" * 32), ("Environment", environment)])
    return path


def test_only_the_releases_own_commits_are_found(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "gitops.git", [("rel-1", "dev"), ("rel-10", "dev"), ("rel-1", "staging")])
    found = commits_with_trailer(repo, "Release-Id", "rel-1")
    assert [c.trailers["Environment"] for c in found] == [["dev"], ["staging"]]  # not rel-10's, oldest first
    assert [c.subject for c in found] == ["dev: deploy rel-1", "staging: deploy rel-1"]
    assert commits_with_trailer(tmp_path / "absent.git", "Release-Id", "rel-1") == []


def test_the_timeline_merges_decisions_and_commits_without_prefect(ledger: Ledger, tmp_path: Path) -> None:
    new_plan(ledger, "rel-1", "dev", approvers=("user:alice",))
    fail(ledger, "rel-1", "staging")  # failed its health gates, rolled back
    new_plan(ledger, "rel-other", "dev")
    ledger.record_incident(flow="release", task="run_pipeline", error="registry down", envelope={},
                           release_id="rel-1")
    ledger.record_incident(flow="release", task="run_pipeline", error="rel-other's", envelope={},
                           release_id="rel-other")
    gitops = _repository(tmp_path / "gitops.git", [("rel-1", "dev"), ("rel-other", "dev")])

    entries, missing = release_timeline("rel-1", ledger=ledger, repositories={"gitops": gitops}, trace_events=None)

    assert missing == ["no Prefect API found: its events left out"]
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    kinds = [(e.source, e.kind, e.environment, e.actor) for e in entries]
    assert ("ledger", "approval", "dev", "user:alice") in kinds
    assert ("ledger", "approval-refused", "dev", "agent:planner") in kinds
    assert ("ledger", "rollback-started", "staging", "system:promotion") in kinds
    assert ("git", "commit", "dev", "gitops-delivery") in kinds  # the commit's author
    assert [e.summary for e in entries if e.kind == "incident"] == ["incident 1 (open) in run_pipeline: registry down"]
    refused = next(e for e in entries if e.kind == "approval-refused")
    assert "refused: planner" in refused.summary
    failed = next(e for e in entries if e.kind == "transition" and "-> Failed" in e.summary)
    assert "HealthCheckFailed" in failed.summary and failed.environment == "staging"
    assert all("rel-other" not in e.summary for e in entries)


def test_before_any_plan_the_trace_comes_from_the_commits(ledger: Ledger, tmp_path: Path) -> None:
    """A release whose build failed has no plan: its commits still carry the trace id, so the events are asked for."""
    app = _repository(tmp_path / "shop.git", [("rel-early", "dev")])

    asked: list[str] = []

    def unreachable(trace_id: str) -> list[TraceEvent]:
        asked.append(trace_id)
        raise TransientError("Prefect API at http://127.0.0.1:9/api unreachable")

    entries, missing = release_timeline("rel-early", ledger=ledger, repositories={"shop": app},
                                        trace_events=unreachable)

    assert asked == ["t" * 32]  # the trace id, from the commit's Trace-Id trailer
    assert [e.kind for e in entries] == ["commit"]
    assert len(missing) == 1 and missing[0].startswith("Prefect's events left out: "), missing


def test_the_pull_requests_checks_and_merge_and_a_drift_reconcile_show_with_their_actor_and_reason(
        ledger: Ledger) -> None:
    request = ReleaseRequest(release_id="rel-1", app="shop", requested_by="agent:rm",
                             artifacts=[Artifact.from_text("a", "notes.txt", "hi\n")])
    checks = [CheckResult(name="branch-policy", kind="branch_policy", status=CheckStatus.PASSED, summary="ok"),
              CheckResult(name="unit-tests", status=CheckStatus.FAILED, summary="exit code 1")]
    pr = PullRequest(number=7, repository="shop", source_branch="release/rel-1", target_branch="main", title="t",
                     head_sha="a" * 40, checks=checks)
    record_checks(request, pr)
    passed = pr.model_copy(update={"head_sha": "b" * 40, "checks": [checks[0]]})  # fixed on a new head
    record_checks(request, passed)
    record_merge(request, passed, MergeInfo(pull_request=7, merge_sha="c" * 40, target_branch="main", created=True))
    web = ObjectKey(api_version="apps/v1", kind="Deployment", namespace="shop-dev", name="web")
    record_reconcile(ledger, "rel-1", DriftReport(
        environment="dev", revision="d" * 40, mode=DriftMode.RECONCILE, desired_objects=1, live_objects=1,
        drift=(ObjectDrift(object=web, change="changed", fields=("spec.replicas",)),), reconciled=True))

    shown = [(e.kind, e.actor, e.environment, e.summary) for e in ledger_entries(ledger, "rel-1")]

    assert shown == [
        ("pull-request-checks-failed", "system:pull-request-checks", None,
         f"pull-request-checks-failed: shop#7 at {'a' * 12}: failed unit-tests: exit code 1; passed branch-policy"),
        ("pull-request-checks-passed", "system:pull-request-checks", None,
         f"pull-request-checks-passed: shop#7 at {'b' * 12}: 1 check(s) passed (branch-policy)"),
        ("pull-request-merged", "agent:rm", None,
         f"pull-request-merged: shop#7 (release/rel-1, checks passed at {'b' * 12}) merged into main as "
         f"{'c' * 12} by the release flow for agent:rm"),
        ("drift-reconciled", "system:drift-check", "dev",
         f"drift-reconciled: dev: drift from GitOps revision {'d' * 12} reconciled; re-applied changed "
         "Deployment shop-dev/web: spec.replicas; pruned nothing"),
    ]


def test_trace_events_are_collected_page_by_page_up_to_the_limit() -> None:
    def page(*names: str, next_page: str | None = None) -> dict:
        return {"events": [{"event": name, "occurred": "2026-12-03T10:00:00Z",
                            "resource": {"prefect.resource.name": "rel-1", "delivery.environment": "dev"}}
                           for name in names], "next_page": next_page}

    asked: list[str] = []
    pages = {"http://x/api/events/filter/next?page=2": page("c", "d")}

    def next_page(url: str) -> dict:
        asked.append(url)
        return pages[url]

    found = collect_trace_events(page("a", "b", next_page="http://x/api/events/filter/next?page=2"), next_page,
                                 limit=3)

    assert [e.event for e in found] == ["a", "b", "c"]
    assert asked == ["http://x/api/events/filter/next?page=2"]
    assert (found[0].release_id, found[0].environment) == ("rel-1", "dev")
