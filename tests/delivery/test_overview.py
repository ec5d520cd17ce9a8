"""The environments overview, computed from a real SQLite ledger."""

from __future__ import annotations

from support.overview import PATH, deploy, drift_check, fail, move, new_plan

from delivery.ledger import OnDemandRollback
from delivery.overview import Health, environment_overview, render_overview
from delivery.plan import PlanState
from delivery.sync_state import SyncState


def by_env(rows):
    return {(row.environment, row.app): row for row in rows}


def test_a_ledger_with_nothing_shows_every_environment_of_the_path_not_deployed(ledger):
    rows = environment_overview(ledger, path=PATH)

    assert [(r.environment, r.app, r.deployed, r.health) for r in rows] == [
        ("dev", None, False, Health.MISSING), ("staging", None, False, Health.MISSING),
        ("prod", None, False, Health.MISSING)]
    assert all(r.sync_state is None and r.last_check is None for r in rows)
    assert "| prod | - | not deployed |" in render_overview(rows)
    markdown = render_overview(rows)
    assert "`Synced` (live" in markdown and "`Drifted` (the check" in markdown  # the legend names each state
    assert "| environment | app | release | revision | since | approved by | health | drift | drift since " \
           "| last check | last attempt |" in markdown
    assert environment_overview(ledger) == []  # without a path: only what the ledger knows


def test_deployed_release_shows_its_revision_since_approvers_and_health(ledger):
    deployed = deploy(ledger, "rel-1", "dev", approvers=("user:alice", "user:bob"))

    [dev, staging, prod] = environment_overview(ledger, path=PATH)

    assert (dev.app, dev.deployed, dev.release_id, dev.revision) == ("shop", True, "rel-1", 1)
    assert dev.approved_by == ["user:alice", "user:bob"]  # the refused planner is not an approver
    assert dev.health is Health.HEALTHY and dev.last_attempt is None
    [to_deployed] = [t for t in ledger.transitions(deployed.plan_id) if t.to_state is PlanState.DEPLOYED]
    assert dev.since.replace(tzinfo=None) == to_deployed.at.replace(tzinfo=None)
    assert (staging.deployed, prod.deployed) == (False, False)


def test_failed_then_rolled_back_keeps_the_previous_release_running_and_shows_the_attempt(ledger):
    deploy(ledger, "rel-1", "staging", approvers=("user:alice",))
    fail(ledger, "rel-2", "staging", approvers=("user:carol",))

    staging = by_env(environment_overview(ledger, path=PATH))[("staging", "shop")]

    assert (staging.release_id, staging.approved_by, staging.health) == ("rel-1", ["user:alice"], Health.HEALTHY)
    attempt = staging.last_attempt
    assert (attempt.release_id, attempt.state, attempt.rolled_back) == ("rel-2", PlanState.FAILED, True)
    assert "HealthCheckFailed" in attempt.reason
    assert "rel-2 r1 Failed (rolled back): HealthCheckFailed" in render_overview([staging])


def test_a_first_release_that_failed_and_rolled_back_is_not_deployed(ledger):
    fail(ledger, "rel-1", "dev")

    dev = by_env(environment_overview(ledger, path=PATH))[("dev", "shop")]

    assert (dev.deployed, dev.release_id, dev.health) == (False, None, Health.MISSING)
    assert dev.last_attempt.state is PlanState.FAILED


def test_an_unfinished_rollback_makes_health_unknown_and_a_promotion_in_flight_progressing(ledger):
    deploy(ledger, "rel-1", "dev")
    deploy(ledger, "rel-1", "staging")
    fail(ledger, "rel-2", "dev", finished=False)
    move(ledger, new_plan(ledger, "rel-2", "staging"), PlanState.PROMOTING, "begin promotion")

    rows = by_env(environment_overview(ledger, path=PATH))

    assert rows[("dev", "shop")].health is Health.UNKNOWN
    assert rows[("staging", "shop")].health is Health.PROGRESSING
    assert rows[("staging", "shop")].release_id == "rel-1"


def test_drift_states_and_the_last_check_per_environment(ledger):
    deploy(ledger, "rel-1", "dev")
    deploy(ledger, "rel-1", "staging")
    drift_check(ledger, "dev", found=0)
    drift_check(ledger, "staging", found=2)
    for _ in range(2):
        drift_check(ledger, "prod", found=1, degraded_after=2)

    rows = by_env(environment_overview(ledger, path=PATH))

    dev, staging, prod = rows[("dev", "shop")], rows[("staging", "shop")], rows[("prod", None)]
    assert (dev.sync_state, dev.sync_reason) == (SyncState.SYNCED, "InSync")
    assert (staging.sync_state, staging.sync_reason) == (SyncState.OUT_OF_SYNC, "DriftDetected")
    assert (prod.sync_state, prod.deployed) == (SyncState.DEGRADED, False)  # checked, never deployed
    assert prod.last_check is not None and prod.sync_since <= prod.last_check
    markdown = render_overview(list(rows.values()))
    # the overview says Drifted where the sync state (ledger, events) says OutOfSync
    assert "| Drifted |" in markdown and "| Degraded |" in markdown and "| Synced |" in markdown
    assert "OutOfSync |" not in markdown and "never checked" not in markdown


def test_apps_are_rows_of_their_environment_and_environments_follow_the_path(ledger):
    deploy(ledger, "rel-9", "prod", app="shop")
    deploy(ledger, "rel-8", "prod", app="cart")
    deploy(ledger, "rel-7", "dev", app="shop")

    rows = environment_overview(ledger, path=PATH)

    assert [(r.environment, r.app) for r in rows] == [("dev", "shop"), ("staging", None), ("prod", "cart"),
                                                      ("prod", "shop")]
    # without the path: the environments in the order they were first planned
    assert [r.environment for r in environment_overview(ledger)] == ["prod", "prod", "dev"]


def test_an_on_demand_rollback_moves_since_and_reports_its_health(ledger):
    deploy(ledger, "rel-1", "prod")
    before = by_env(environment_overview(ledger, path=PATH))[("prod", "shop")]
    ledger.record_on_demand_rollback(OnDemandRollback(
        release_id="rollback-1", environment="prod", app="shop", actor="user:ops", reason="customers complain",
        git_revision="d" * 40, restored_from="e" * 40, healthy=False))

    after = by_env(environment_overview(ledger, path=PATH))[("prod", "shop")]

    assert after.release_id == "rel-1" and after.since > before.since
    assert after.health is Health.DEGRADED and "user:ops" in after.health_detail
    [kept] = ledger.on_demand_rollbacks()
    assert (kept.environment, kept.app, kept.restored_from, kept.healthy) == ("prod", "shop", "e" * 40, False)


def test_an_on_demand_rollback_with_nothing_healthy_removes_the_application(ledger):
    fail(ledger, "rel-1", "dev", rolled_back=False)
    ledger.record_on_demand_rollback(OnDemandRollback(
        release_id="rollback-2", environment="dev", app="shop", actor="user:ops", reason="clean up",
        git_revision="d" * 40, restored_from=None))

    dev = by_env(environment_overview(ledger, path=PATH))[("dev", "shop")]

    assert (dev.deployed, dev.health) == (False, Health.MISSING)


def test_the_same_ledger_renders_the_same_markdown(ledger):
    deploy(ledger, "rel-1", "dev", approvers=("user:a|b",))
    drift_check(ledger, "dev", found=0)

    first = render_overview(environment_overview(ledger, path=PATH))

    assert first == render_overview(environment_overview(ledger, path=PATH))
    assert "user:a\\|b" in first  # a pipe in a cell does not break the table
