"""Ledger benchmark: latency of the read commands' ledger queries on a ledger of 10,000 releases.

Usage: .venv/bin/python bench/ledger.py [--releases N] [--runs R] [--url SQLALCHEMY_URL] [--postgresql]

Fills an empty ledger (default: a SQLite file in a temporary folder; ``--url postgresql+psycopg://...``
for an empty PostgreSQL database, whose tables it leaves filled) with N releases in one transaction:
bulk ``insert()`` executemany through ``Ledger(url).engine``, with the rows the Ledger's own writers
write (the plans and transitions are made by ``ReleasePlan.transition``, the JSON bodies are
``model_dump(mode="json")``; only the clock is the bench's). Each release, as the sample
configuration (examples/gitops/delivery.yaml) runs it:

- its pull request's checks passed and its merge (``release_actions``, once-only keys as
  tasks/pull_request.py writes them);
- dev: plan, submit, policy gate ``tests-passed`` before approval, approved by the policy gate (no
  approval required), promoted, deployed; about 3 % fail their health gates (Failed);
- about 5 % raise an incident in dev (a stage gave up: the plan is Failed, the envelope as
  tasks/stage.py keeps it): half replayed (Failed -> Promoting by a person, ``replayed`` action,
  then deployed), a quarter acknowledged (``acknowledged`` action), a quarter left open;
- staging, once dev is deployed: plan, submit, two policy gates before approval, a signed approval
  (2 % with a refused approval first), both gates again after approval, approved, promoted,
  deployed; 3 % rejected by an approver, 2 % timed out, 2 % fail their health gates;
- about 5 % with a drift reconcile in dev afterwards (``drift-reconciled`` action).

Then it times, over ``--runs`` runs each on releases drawn at random (the same draws every run of the
bench), the ledger part of the read commands, in ms (median, p95, max):

- ``release status``: ``cli.release_status.release_status`` with a client stub that has no flow runs
  (so Prefect is not asked), the ledger opened read-only per call as the CLI does; then its queries
  alone on an open ledger: ``latest_plans``, ``last_transition`` and ``approvals`` of each plan;
- ``release trace``: ``tasks.timeline.release_timeline`` with no local repository and no Prefect
  reader (``repositories={}``, ``trace_events=None``: the ledger part only); then its queries:
  ``transitions(release_id=)``, ``plans(release_id=)``, ``approvals`` / ``policy_evaluations`` of
  each plan, ``incidents(release_id=)``, ``actions(release_id=)``;
- ``incidents list`` (``Ledger.incidents()``, and ``--status open``), ``incidents show``
  (``Ledger.incident(id)``), and the ``delivery-incidents`` artifact's rows
  (``tasks.incidents.incident_rows``; its publishing to Prefect left out).

Every SELECT those calls issue is captured and run through ``EXPLAIN QUERY PLAN`` (SQLite) or
``EXPLAIN`` (PostgreSQL); a full scan of a table is printed with the query that did it.

Run: ``.venv/bin/python bench/ledger.py`` (about 15 s on SQLite; about 45 s on PostgreSQL).

Figures (2026-12-04, SQLite 3.40.1 file in /tmp, ``make test`` running beside it):

machine: 2 cores, 23.5 GiB memory, load 1.0, Python 3.11.7 (CPython), Linux x86_64
ledger: sqlite, 10000 releases, 174870 rows: 19467 plans, 77546 transitions, 9492 approvals,
  47010 policy evaluations, 516 incidents, 20839 actions
fill: rows made in 2.8 s, inserted in 2.2 s (one transaction)
size: 70.9 MiB (the file after a checkpoint; its WAL had grown to 71.3 MiB)
query (ms over 100 runs)                      median       p95       max
release status (ledger opened per call)         1.01      1.22      1.38
  Ledger(url, create=False)                     0.02      0.02      1.92
  latest_plans(release)                         0.18      0.27      0.40
  last_transition(plan)                         0.16      0.26      0.60
  approvals(plan)                               0.13      0.16      0.25
release trace (ledger part)                     1.71      1.96      3.28
release trace, release with incident            1.63      1.99      2.16
  transitions(release_id=)                      0.21      0.32      0.44
  plans(release_id=)                            0.17      0.24      0.36
  policy_evaluations(plan)                      0.13      0.20      0.59
  incidents(release_id=)                        0.13      0.18      0.54
  actions(release_id=)                          0.14      0.22      0.55
incidents list                                  4.32      4.57      5.55
incidents list --status open                    1.15      1.29      1.44
incidents show                                  0.12      0.15      0.24
incidents artifact rows (incident_rows)        11.69     12.16     14.02


Before the ledger kept one engine per process and read a release's transitions through its plans (the same
day, a quiet machine): release status 3.75 ms (opening the ledger 1.42 ms: the schema created on every
open), release trace 10.4 ms (``transitions(release_id=)`` 8.6 ms: a ``LIKE`` on ``plan_id`` that
scanned the table, and on SQLite ignored case). On PostgreSQL 15 (``--postgresql``; 2,000 releases, a
loaded machine): release status 4.5 ms, trace 7.8 ms, incidents list 1.9 ms. The incidents scans that
remain are of the whole (small) table the listing returns.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _machine import print_machine
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import Engine, make_url

from cli.release_status import release_status
from delivery.approvals import POLICY_ACTOR, TIMEOUT_ACTOR
from delivery.ids import RELEASE_FLOW
from delivery.ledger import DRIFT_RECONCILED, PULL_REQUEST_CHECKS_PASSED, PULL_REQUEST_MERGED, Ledger
from delivery.ledger_tables import (
    actions_table,
    approvals_table,
    incidents_table,
    plans_table,
    policy_table,
    transitions_table,
)
from delivery.models import (
    Approval,
    BlueGreenStrategy,
    BuildResult,
    BuildStatus,
    Decision,
    PublishedImage,
    RollingStrategy,
    TestCounts,
)
from delivery.plan import PlanState, PromotionCause, ReleasePlan
from delivery.schema import upgrade_ledger
from tasks.incidents import incident_rows
from tasks.timeline import release_timeline

SEED = 20261204
APPS = ("web", "api", "billing", "search", "worker", "gateway")
PLANNERS = ("agent:release-manager", "user:dave", "user:erin")
APPROVERS = ("user:alice", "user:bob", "agent:qa-bot")
CHECKS_ACTOR = "system:pull-request-checks"  # tasks/pull_request.py (not imported: it pulls in Prefect's tasks)
PROMOTION_ACTOR = "system:promotion"  # flows/deploy.py (not imported, same reason)
DRIFT_ACTOR = "system:drift-check"  # tasks/drift.py
DEV_POLICIES = {"tests-passed": "build.tests.failed == 0"}
STAGING_POLICIES = {
    "image-pinned": 'size(build.images) > 0 && build.images.all(i, i.digest.startsWith("sha256:"))',
    "tests-passed": "build.tests.failed == 0 && build.tests.total > 0",
}


# --------------------------------------------------------------------------- the rows


class Rows:
    """The rows of every table, in the order the writers append them."""

    def __init__(self) -> None:
        self.plans: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.approvals: list[dict[str, Any]] = []
        self.policies: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        # rows whose reason (and detail) name an incident's id, known once the incidents are inserted
        self.incident_actions: list[tuple[dict[str, Any], int]] = []

    def count(self) -> int:
        return sum(len(rows) for rows in (self.plans, self.transitions, self.approvals, self.policies,
                                          self.incidents, self.actions))


class Story:
    """One release's rows, written as the flows would (``save_plan``, ``record_*``) with the bench's clock."""

    def __init__(self, rows: Rows, rng: random.Random, at: datetime) -> None:
        self.rows, self.rng, self.at = rows, rng, at

    def tick(self, low: float, high: float) -> datetime:
        self.at += timedelta(seconds=self.rng.uniform(low, high))
        return self.at

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def new_plan(self, plan: ReleasePlan) -> ReleasePlan:
        """``save_plan(plan)``: a new plan, no transition."""
        plan = plan.model_copy(update={"created_at": self.at, "updated_at": self.at})
        self.rows.plans.append({"plan_id": plan.plan_id, "release_id": plan.release_id, "revision": plan.revision,
                                "environment": plan.environment, "trace_id": plan.trace_id,
                                "planned_by": plan.planned_by, "created_at": plan.created_at})
        return self.store(plan)

    def store(self, plan: ReleasePlan) -> ReleasePlan:
        """The plan's current state, body and updated_at: the last ``save_plan`` wins (set in :meth:`finish`)."""
        self.rows.plans[self._index(plan)].update(state=plan.state.value, body=plan.model_dump(mode="json"),
                                                  updated_at=plan.updated_at)
        return plan

    def _index(self, plan: ReleasePlan) -> int:
        for index in range(len(self.rows.plans) - 1, -1, -1):
            if self.rows.plans[index]["plan_id"] == plan.plan_id:
                return index
        raise KeyError(plan.plan_id)

    def move(self, plan: ReleasePlan, to: PlanState, *, actor: str, reason: str,
             cause: PromotionCause | None = None) -> ReleasePlan:
        """``save_plan(*plan.transition(...))`` at the bench's clock."""
        moved, record = plan.transition(to, actor=actor, reason=reason, cause=cause)
        at = self.tick(1, 30)
        moved = moved.model_copy(update={"updated_at": at})
        record = record.model_copy(update={"at": at})
        self.rows.transitions.append(record.model_dump())
        return self.store(moved)

    def approve(self, plan: ReleasePlan, approval: Approval) -> ReleasePlan:
        """``record_approval`` then ``save_plan(plan.with_approval(...))`` (tasks/approval.py ``_record``)."""
        approval = approval.model_copy(update={"at": self.tick(60, 1800)})
        self.rows.approvals.append({"plan_id": plan.plan_id, **approval.model_dump()})
        return self.store(plan.with_approval(approval))

    def gates(self, plan: ReleasePlan, policies: dict[str, str], phase: str) -> None:
        """``record_policy_evaluation`` of each gate, in name order, all passed."""
        for name in sorted(policies):
            self.rows.policies.append({"plan_id": plan.plan_id, "policy": name, "expression": policies[name],
                                       "passed": True, "detail": f"{phase}: true", "at": self.tick(0.01, 0.2)})

    def action(self, release_id: str, action: str, actor: str, reason: str, detail: dict[str, Any],
               key: str | None = None) -> dict[str, Any]:
        row = {"release_id": release_id, "action": action, "actor": actor, "reason": reason, "detail": detail,
               "at": self.tick(0.1, 5), "record_key": key}
        self.rows.actions.append(row)
        return row


def _signed(rng: random.Random, approver: str, decision: Decision, comment: str) -> Approval:
    fingerprint = "SHA256:" + hashlib.sha256(approver.encode()).digest().hex()[:43]
    return Approval(approver=approver, decision=decision, comment=comment, key_fingerprint=fingerprint,
                    signature_digest=f"{rng.getrandbits(256):064x}")


def write_release(rows: Rows, rng: random.Random, index: int, start: datetime) -> None:
    """Append the rows of one release (see the module's docstring for what happens to it)."""
    story = Story(rows, rng, start)
    release_id = f"rel-{start:%Y%m%d}-{story.hex(8)}"
    trace_id, app, planner = story.hex(32), rng.choice(APPS), rng.choice(PLANNERS)
    repository, number, head = f"{app}-service", index + 1, story.hex(40)
    checks = [{"name": name, "kind": "command", "status": "passed", "summary": "ok"}
              for name in ("lint", "unit-tests", "build")]
    outcome = [(c["name"], c["kind"], c["status"]) for c in checks]
    key = hashlib.sha256(repr([repository, number, head, outcome]).encode()).hexdigest()
    story.action(release_id, PULL_REQUEST_CHECKS_PASSED, CHECKS_ACTOR,
                 f"{repository}#{number} at {head[:12]}: 3 check(s) passed (lint, unit-tests, build)",
                 {"pull_request": number, "repository": repository, "head_sha": head, "passed": True,
                  "requested_by": planner, "checks": checks}, key=f"checks:{key}")
    merge_sha = story.hex(40)
    story.action(release_id, PULL_REQUEST_MERGED, planner,
                 f"{repository}#{number} (release/{release_id}, checks passed at {head[:12]}) merged into main as "
                 f"{merge_sha[:12]} by the release flow for {planner}",
                 {"pull_request": number, "repository": repository, "source_branch": f"release/{release_id}",
                  "target_branch": "main", "head_sha": head, "merge_sha": merge_sha, "created": True},
                 key=f"merge:{repository}#{number}:{merge_sha}")
    build_started = story.tick(5, 20)
    total = rng.randint(40, 400)
    build = BuildResult(status=BuildStatus.SUCCEEDED, commit=merge_sha, run_id=f"pipeline-{index + 1}",
                        tests=TestCounts(total=total, passed=total),
                        images=[PublishedImage(repository=f"registry.local/{app}", tag=merge_sha[:12],
                                               digest=f"sha256:{story.hex(64)}")],
                        logs_url=f"http://pipelines.local/runs/{index + 1}", started_at=build_started,
                        finished_at=story.tick(60, 300))

    def plan_for(environment: str, strategy: Any) -> ReleasePlan:
        story.tick(1, 10)
        plan = story.new_plan(ReleasePlan(release_id=release_id, trace_id=trace_id, app=app, revision=1,
                                          environment=environment, strategy=strategy, planned_by=planner,
                                          build=build))
        return story.move(plan, PlanState.PENDING_APPROVAL, actor=planner, reason="submit for approval")

    def promote(plan: ReleasePlan, *, health_fails: float) -> ReleasePlan:
        plan = story.move(plan, PlanState.PROMOTING, actor=PROMOTION_ACTOR, reason="begin promotion")
        if rng.random() < health_fails:
            return story.move(plan, PlanState.FAILED, actor=PROMOTION_ACTOR,
                              reason=f"HealthCheckFailed: {plan.environment}: deployment/{app} not ready after "
                                     "60 s (1 of 2 replicas available)", cause=PromotionCause.HEALTH_FAILED)
        return story.move(plan, PlanState.DEPLOYED, actor=PROMOTION_ACTOR, reason="health gates passed",
                          cause=PromotionCause.DEPLOYED)

    # dev: no approval required
    dev = plan_for("dev", RollingStrategy())
    story.gates(dev, DEV_POLICIES, "before approval")
    dev = story.move(dev, PlanState.APPROVED, actor=POLICY_ACTOR, reason="no approval required; policies passed")
    if rng.random() < 0.05:  # a stage gave up: an incident, the plan Failed
        dev = story.move(dev, PlanState.PROMOTING, actor=PROMOTION_ACTOR, reason="begin promotion")
        error = (f"TransientError: sync of dev did not converge: deployment/{app} is still progressing "
                 "after 5 attempts")
        dev = story.move(dev, PlanState.FAILED, actor=PROMOTION_ACTOR, reason=error,
                         cause=PromotionCause.DEPLOY_FAILED)
        flow_run_id = f"{story.hex(8)}-{story.hex(4)}-{story.hex(4)}-{story.hex(4)}-{story.hex(12)}"
        envelope = {
            "flow": RELEASE_FLOW, "flow_run_id": flow_run_id, "deployment_id": None, "task": "sync_environment",
            "task_run_id": story.hex(32), "attempts": 5,
            "parameters": {"release_id": release_id, "trace_id": trace_id, "environment": "dev", "app": app},
            "trace_id": trace_id, "error_type": "TransientError", "error": error.split(": ", 1)[1],
            "traceback": "Traceback (most recent call last):\n  File \"tasks/sync.py\", line 88, in sync_environment\n"
                         f"    raise TransientError(...)\ndelivery.errors.{error}\n",
        }
        incident = {"flow": RELEASE_FLOW, "task": "sync_environment", "error": error, "envelope": envelope,
                    "release_id": release_id, "trace_id": trace_id, "status": "open", "created_at": story.tick(1, 5)}
        rows.incidents.append(incident)
        fate = rng.random()
        if fate < 0.25:
            return  # left open
        person = rng.choice(APPROVERS[:2])
        if fate < 0.5:
            incident["status"] = "acknowledged"
            reason = f"incident {{id}} (sync_environment) acknowledged by {person}: looking into it"
            row = story.action(release_id, "acknowledged", person, reason,
                               {"incident_id": None, "stage": "sync_environment", "comment": "looking into it"})
            rows.incident_actions.append((row, len(rows.incidents) - 1))
            return
        incident["status"] = "replayed"
        story.tick(600, 3600)
        why = f"replay of incident {{id}} (sync_environment: {error[:200]})"
        dev = story.move(dev, PlanState.PROMOTING, actor=person, reason=why)
        rows.incident_actions.append((rows.transitions[-1], len(rows.incidents) - 1))
        row = story.action(release_id, "replayed", person, why, {"flow_run_id": flow_run_id, "incident_id": None})
        rows.incident_actions.append((row, len(rows.incidents) - 1))
        dev = story.move(dev, PlanState.DEPLOYED, actor=PROMOTION_ACTOR, reason="health gates passed",
                         cause=PromotionCause.DEPLOYED)
    else:
        dev = promote(dev, health_fails=0.03)
    if dev.state is not PlanState.DEPLOYED:
        return
    if rng.random() < 0.05:
        story.tick(600, 7200)
        revision = story.hex(40)
        story.action(release_id, DRIFT_RECONCILED, DRIFT_ACTOR,
                     f"dev: drift from GitOps revision {revision[:12]} reconciled; re-applied "
                     f"ConfigMap/{app}-config changed; pruned nothing",
                     {"environment": "dev", "revision": revision, "applied": [f"ConfigMap/{app}-config changed"],
                      "pruned": [], "remaining": [], "error": None, "state": "Synced"})

    # staging: one signed approval of the three approvers
    staging = plan_for("staging", BlueGreenStrategy())
    story.gates(staging, STAGING_POLICIES, "before approval")
    fate = rng.random()
    if fate < 0.02:
        staging = story.move(staging, PlanState.REJECTED, actor=TIMEOUT_ACTOR,
                             reason="approval timed out after 3600 s with 0 of 1 distinct approvers (none)",
                             cause=PromotionCause.TIMEOUT)
        return
    if fate < 0.04:  # the planner tried to approve their own plan: refused, not counted
        refused = _signed(rng, planner, Decision.APPROVE, "lgtm").model_copy(
            update={"counted": False, "refused_reason": f"{planner} planned this release: the planner may not "
                                                        "approve it"})
        staging = story.approve(staging, refused)
    approver = rng.choice(APPROVERS)
    if fate > 0.97:
        staging = story.approve(staging, _signed(rng, approver, Decision.REJECT, "error rate too high in dev"))
        staging = story.move(staging, PlanState.REJECTED, actor=approver,
                             reason=f"rejected by {approver}: error rate too high in dev",
                             cause=PromotionCause.APPROVAL)
        return
    staging = story.approve(staging, _signed(rng, approver, Decision.APPROVE, ""))
    story.gates(staging, STAGING_POLICIES, "after approval")
    staging = story.move(staging, PlanState.APPROVED, actor=approver,
                         reason=f"approved by {approver} (1 of 1 distinct approvers)")
    promote(staging, health_fails=0.02)


def make_rows(releases: int) -> Rows:
    rng = random.Random(SEED)
    rows = Rows()
    start = datetime(2026, 6, 1, tzinfo=UTC)
    step = timedelta(days=180) / max(releases, 1)  # about half a year of releases
    for index in range(releases):
        write_release(rows, rng, index, start + index * step)
    return rows


def fill(ledger: Ledger, rows: Rows) -> None:
    """Insert every row in one transaction (executemany per table)."""
    with ledger.engine.begin() as conn:
        conn.execute(insert(plans_table), rows.plans)
        if rows.approvals:
            conn.execute(insert(approvals_table), rows.approvals)
        conn.execute(insert(policy_table), rows.policies)
        ids: list[int] = []
        if rows.incidents:
            ids = list(conn.execute(insert(incidents_table).returning(incidents_table.c.id,
                                                                      sort_by_parameter_order=True),
                                    rows.incidents).scalars())
        for row, index in rows.incident_actions:  # the transition of a replay, or its action
            row["reason"] = row["reason"].format(id=ids[index])
            if "detail" in row:
                row["detail"]["incident_id"] = ids[index]
        conn.execute(insert(transitions_table), rows.transitions)
        conn.execute(insert(actions_table), rows.actions)


# --------------------------------------------------------------------------- measuring


class NoRuns:
    """The client ``release_status`` asks for flow runs: none (Prefect is not asked)."""

    api_url = "http://127.0.0.1:1/api"

    def release_runs(self, _release_id: str) -> list[dict[str, Any]]:
        return []

    def events_url(self, release_id: str) -> str:
        return f"{self.api_url}/events?release={release_id}"


class Statements:
    """The SELECT statements an engine runs, with one set of parameters each (for EXPLAIN)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.on = False

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                 _executemany: bool) -> None:
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.seen.setdefault(statement, parameters)

    @contextmanager
    def capture(self) -> Iterator[dict[str, Any]]:
        self.seen, self.on = {}, True
        try:
            yield self.seen
        finally:
            self.on = False


def timed(call: Callable[[Any], Any], arguments: list[Any]) -> list[float]:
    """One run per argument, each in ms."""
    times = []
    for argument in arguments:
        start = time.perf_counter()
        call(argument)
        times.append((time.perf_counter() - start) * 1000)
    return times


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):>9.2f} {p95:>9.2f} {ordered[-1]:>9.2f}"


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The query plan's lines."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return [row[-1] for row in rows]
        return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()]


def full_scans(engine: Engine, lines: list[str]) -> list[str]:
    """The plan's lines that read a whole table (no index)."""
    if engine.dialect.name == "sqlite":
        return [line for line in lines if line.startswith("SCAN ") and " USING " not in line]
    return [line.strip() for line in lines if "Seq Scan" in line]


def _size(ledger: Ledger) -> str:
    with ledger.engine.connect() as conn:
        if ledger.engine.dialect.name == "sqlite":
            database = Path(make_url(ledger.url).database or "")
            wal = Path(f"{database}-wal")
            grown = wal.stat().st_size if wal.exists() else 0
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return (f"{database.stat().st_size / 2**20:.1f} MiB (the file after a checkpoint; its WAL had grown to "
                    f"{grown / 2**20:.1f} MiB)")
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
        return f"{size / 2**20:.1f} MiB (pg_database_size)"


def run(url: str, releases: int, runs: int) -> None:
    upgrade_ledger(url)  # `delivery db upgrade`: a PostgreSQL ledger is not migrated by opening it
    ledger = Ledger(url)
    with ledger.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(plans_table)).scalar_one():
            sys.exit(f"{url}: the ledger already holds plans; the bench fills an empty one")
    start = time.perf_counter()
    rows = make_rows(releases)
    made = time.perf_counter() - start
    start = time.perf_counter()
    fill(ledger, rows)
    filled = time.perf_counter() - start
    print(f"ledger: {ledger.engine.dialect.name}, {releases} releases, {rows.count()} rows: {len(rows.plans)} plans, "
          f"{len(rows.transitions)} transitions, {len(rows.approvals)} approvals,\n  {len(rows.policies)} policy "
          f"evaluations, {len(rows.incidents)} incidents, {len(rows.actions)} actions")
    print(f"fill: rows made in {made:.1f} s, inserted in {filled:.1f} s (one transaction)\nsize: {_size(ledger)}",
          flush=True)
    if ledger.engine.dialect.name == "postgresql":
        with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")

    draw = random.Random(SEED + 1)
    release_ids = [draw.choice(rows.plans)["release_id"] for _ in range(runs)]
    with_incident = [row["release_id"] for row in rows.incidents]
    incident_release_ids = [draw.choice(with_incident) for _ in range(runs)] if with_incident else []
    plan_ids = [draw.choice(rows.plans)["plan_id"] for _ in range(runs)]
    incident_ids = [draw.randint(1, len(rows.incidents)) for _ in range(runs)] if rows.incidents else []
    reader = Ledger(url, create=False)
    statements = Statements()
    for engine in (ledger.engine, reader.engine):
        event.listen(engine, "before_cursor_execute", statements)
    client = NoRuns()

    def trace(release_id: str) -> Any:
        entries, _missing = release_timeline(release_id, ledger=reader, repositories={}, trace_events=None)
        return entries

    measured: list[tuple[str, Callable[[Any], Any], list[Any]]] = [
        ("release status (ledger opened per call)",
         lambda rid: release_status(client, rid, ledger_url=url), release_ids),
        ("  Ledger(url, create=False)", lambda _: Ledger(url, create=False), release_ids),
        ("  latest_plans(release)", reader.latest_plans, release_ids),
        ("  last_transition(plan)", reader.last_transition, plan_ids),
        ("  approvals(plan)", reader.approvals, plan_ids),
        ("release trace (ledger part)", trace, release_ids),
        ("release trace, release with incident", trace, incident_release_ids),
        ("  transitions(release_id=)", lambda rid: reader.transitions(release_id=rid), release_ids),
        ("  plans(release_id=)", lambda rid: reader.plans(release_id=rid), release_ids),
        ("  policy_evaluations(plan)", reader.policy_evaluations, plan_ids),
        ("  incidents(release_id=)", lambda rid: reader.incidents(release_id=rid), release_ids),
        ("  actions(release_id=)", lambda rid: reader.actions(release_id=rid), release_ids),
        ("incidents list", lambda _: reader.incidents(), release_ids),
        ("incidents list --status open", lambda _: reader.incidents(status="open"), release_ids),
        ("incidents show", reader.incident, incident_ids),
        ("incidents artifact rows (incident_rows)", lambda _: incident_rows(reader), release_ids),
    ]
    print(f"{'query (ms over ' + str(runs) + ' runs)':<42} {'median':>9} {'p95':>9} {'max':>9}")
    plans: dict[str, Any] = {}
    for name, call, arguments in measured:
        if not arguments:
            print(f"{name:<42} (nothing to ask: no incident)")
            continue
        with statements.capture() as seen:
            call(arguments[0])  # warm-up, and the statements it runs
        for statement, parameters in seen.items():
            plans.setdefault(statement, (name.strip(), parameters))
        print(f"{name:<42} {figures(timed(call, arguments))}", flush=True)

    print(f"\nquery plans ({'EXPLAIN QUERY PLAN' if ledger.engine.dialect.name == 'sqlite' else 'EXPLAIN'}) "
          "of the SELECTs above that read a whole table:")
    found = False
    for statement, (name, parameters) in plans.items():
        if statement.lstrip().upper().startswith("SELECT COUNT"):
            continue
        lines = explain(ledger.engine, statement, parameters)
        scans = full_scans(ledger.engine, lines)
        if scans:
            found = True
            print(f"- {name}: {' '.join(statement.split())}")
            for line in lines:
                print(f"    {line}")
    if not found:
        print("  none")
    for engine in (ledger.engine, reader.engine):
        engine.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", type=int, default=10_000, help="releases to fill the ledger with")
    parser.add_argument("--runs", type=int, default=100, help="runs of each query (releases drawn at random)")
    parser.add_argument("--url", help="an empty ledger's SQLAlchemy URL (default: SQLite in a temporary folder)")
    parser.add_argument("--postgresql", action="store_true",
                        help="also on a PostgreSQL started for the bench (cli/postgres_server.py), removed after")
    options = parser.parse_args(argv)
    if options.releases < 1 or options.runs < 1:
        parser.error("--releases and --runs take a number of at least 1")
    print_machine()
    if options.url:
        run(options.url, options.releases, options.runs)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        print("== SQLite")
        run(f"sqlite:///{tmp}/ledger.db", options.releases, options.runs)
        if options.postgresql:
            from cli.postgres_server import create_database, start_postgres, stop_postgres

            os.chmod(tmp, 0o711)  # the server's unprivileged user walks to its cluster
            server = start_postgres(Path(tmp) / "pg")
            try:
                create_database(server, "bench_ledger")
                print("== PostgreSQL")
                run(server.url("bench_ledger"), options.releases, options.runs)
            finally:
                stop_postgres(server.process())


if __name__ == "__main__":
    main(sys.argv[1:])
