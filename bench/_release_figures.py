"""The figures of ``bench/release.py``, computed from what the API and the provider timings file hold.

A helper of that bench (``make bench`` runs ``bench/[!_]*.py``: not this). Times are epoch seconds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TARGET = 1.3
FLOW_CODE = "(flow code)"
GAPS = 6


def _at(value: str | datetime) -> float:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value)).timestamp()


@dataclass
class Figures:
    """One release's times: the run's phases, its stages, its provider calls and commit-to-converged."""

    wall: float = 0.0
    first_pickup: float = 0.0
    running: float = 0.0
    executions: list[tuple[float, float]] = field(default_factory=list)  # Running from, to
    approval_waits: list[float] = field(default_factory=list)
    resume_pickups: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # task run name -> wall seconds
    provider: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # task run name -> seconds
    by_call: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # Class.method -> seconds
    converged: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # env -> (s, commits, checks)
    cached: list[float] = field(default_factory=list)  # task runs that read a stored result: seconds each
    flow_code: list[float] = field(default_factory=list)  # per execution: Running, no task run
    gaps: list[tuple[float, float, str]] = field(default_factory=list)  # flow code: (s, provider s, where)

    @classmethod
    def of(cls, *, states: list[dict[str, Any]], task_runs: list[dict[str, Any]], events: list[Any],
           calls: list[dict[str, Any]]) -> Figures:
        """Compute the figures from the run's state history, its task runs, its trace's events and calls."""
        figures = cls()
        figures._phases(sorted(states, key=lambda s: s["timestamp"]))
        ran = sorted((t for t in task_runs if t.get("start_time") and t.get("end_time")),
                     key=lambda t: t["start_time"])
        for run in ran:
            seconds = _at(run["end_time"]) - _at(run["start_time"])
            if (run.get("state") or {}).get("name") == "Cached":
                figures.cached.append(seconds)
            else:
                figures.stages[run["name"]] = figures.stages.get(run["name"], 0.0) + seconds
        outside = [c for c in calls if not c["task_run_name"]]
        for number, (begin, end) in enumerate(figures.executions, start=1):
            inside = [t for t in ran if begin <= _at(t["start_time"]) < end]
            figures.flow_code.append(end - begin - sum(_at(t["end_time"]) - _at(t["start_time"]) for t in inside))
            figures._gaps(number, begin, end, inside, outside)
        for call in calls:
            figures.provider[call["task_run_name"] or FLOW_CODE] += call["seconds"]
            figures.by_call[call["call"]] += call["seconds"]
        figures._converged(calls, events)
        return figures

    def _phases(self, states: list[dict[str, Any]]) -> None:
        """Split the run's life: first pick-up, Running, Suspended (approval waits), resumed to Running again."""
        self.wall = _at(states[-1]["timestamp"]) - _at(states[0]["timestamp"])
        started = resumed = False
        for state, after in zip(states, states[1:], strict=False):
            seconds = _at(after["timestamp"]) - _at(state["timestamp"])
            if state["type"] == "PAUSED":
                self.approval_waits.append(seconds)
                if not resumed:
                    self.resume_pickups.append(0.0)
                resumed = True
            elif state["type"] == "RUNNING":
                self.running += seconds
                self.executions.append((_at(state["timestamp"]), _at(after["timestamp"])))
                started = resumed = False
            elif resumed:
                self.resume_pickups[-1] += seconds
            elif not started:
                self.first_pickup += seconds

    def _gaps(self, number: int, begin: float, end: float, inside: list[dict[str, Any]],
              outside: list[dict[str, Any]]) -> None:
        """The flow code between the task runs of execution ``number``, named by the task runs around it."""
        cursor, before = begin, f"run {number} starts"
        for run in [*inside, None]:
            after, start = (run["name"], _at(run["start_time"])) if run else (f"run {number} ends", end)
            provider = sum(c["seconds"] for c in outside if cursor <= c["start"] < start)
            self.gaps.append((start - cursor, provider, f"{before} -> {after}"))
            if run:
                cursor, before = max(cursor, _at(run["end_time"])), run["name"]

    def _converged(self, calls: list[dict[str, Any]], events: list[Any]) -> None:
        commits: dict[str, list[float]] = defaultdict(list)
        for call in calls:
            if call["stage"] == "promote" and call["call"].startswith("GitOpsRepo.write"):
                commits[call["environment"]].append(call["start"] + call["seconds"])
        for environment, ends in commits.items():
            checks = [_at(e.occurred) for e in events
                      if e.event.endswith("HealthChecked") and e.environment == environment]
            if checks:
                self.converged[environment] = (max(checks) - min(ends), len(ends), len(checks))

    @property
    def counted(self) -> float:
        """The wall time, approval waits and the pick-up of resumed runs excluded."""
        return self.wall - sum(self.approval_waits) - sum(self.resume_pickups)

    @property
    def provider_total(self) -> float:
        return sum(self.provider.values())


def print_figures(f: Figures) -> None:
    """The per-stage table, commit-to-converged, the ratio and, above the target, where the rest goes."""
    print(f"{'stage (task run)':<44} {'wall s':>7} {'provider s':>11} {'other s':>8}")
    for name, wall in f.stages.items():
        print(f"{name:<44} {wall:7.2f} {f.provider.get(name, 0.0):11.2f} {wall - f.provider.get(name, 0.0):8.2f}")
    staged = sum(f.stages.values())
    flow_code = f.running - staged
    print(f"{FLOW_CODE + ' outside the stages':<44} {flow_code:7.2f} {f.provider.get(FLOW_CODE, 0.0):11.2f} "
          f"{flow_code - f.provider.get(FLOW_CODE, 0.0):8.2f}")
    print("commit-to-converged (end of the first GitOps commit to the last HealthChecked):")
    for environment, (seconds, commits, checks) in f.converged.items():
        print(f"  {environment:<10} {seconds:6.2f}s  ({commits} commit(s), {checks} health check(s))")
    ratio = f.counted / f.provider_total if f.provider_total else float("inf")
    print(f"release wall {f.wall:.1f}s; excluded: approval waits {sum(f.approval_waits):.1f}s "
          f"({', '.join(f'{s:.1f}' for s in f.approval_waits)}), resumed-run pick-up {sum(f.resume_pickups):.1f}s "
          f"({', '.join(f'{s:.1f}' for s in f.resume_pickups)})")
    print(f"ratio: {f.counted:.1f}s / {f.provider_total:.1f}s of provider work = {ratio:.2f} "
          f"(target {TARGET}: {'met' if ratio <= TARGET else 'missed'}; reported, not asserted)")
    if ratio > TARGET:
        where_the_time_goes(f, flow_code)


def where_the_time_goes(f: Figures, flow_code: float) -> None:
    """The counted time that is no provider work, largest parts first."""
    rest = {name: wall - f.provider.get(name, 0.0) for name, wall in f.stages.items()}
    parts = sorted(rest.items(), key=lambda item: -item[1])[:5]
    print(f"where the other {f.counted - f.provider_total:.1f}s go:")
    print(f"  first pick-up (submitted to Running): {f.first_pickup:.1f}s")
    print(f"  flow code outside the stages, no provider call: {flow_code - f.provider.get(FLOW_CODE, 0.0):.1f}s; "
          f"per execution of the run (it runs again from the top after each approval): "
          f"{', '.join(f'{s:.1f}' for s in f.flow_code)}s; of it, {len(f.cached)} stages read back from stored "
          f"results: {sum(f.cached):.1f}s")
    print("  in stages, no provider call: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in parts))
    gaps = sorted(f.gaps, key=lambda gap: -gap[0])[:GAPS]
    print("  largest stretches of flow code (seconds, of them provider calls): "
          + "; ".join(f"{where} {seconds:.1f}s ({provider:.1f})" for seconds, provider, where in gaps))
    calls = sorted(f.by_call.items(), key=lambda item: -item[1])[:5]
    print("  (largest provider calls: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in calls) + ")")
