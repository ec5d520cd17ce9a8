"""A release's timeline from its sources, and the ``timeline-<release>`` artifact agents read with one REST call.

:func:`release_timeline` gathers the entries of :mod:`delivery.timeline` from the ledger, the
release's commits in local repositories, and (when the API answers) the events of its trace.
``delivery release trace`` prints it. :func:`publish_timeline` keeps it as a Prefect table artifact
(``GET /api/artifacts/timeline-<release>/latest``; its ``data`` is the rows as a JSON string, oldest
first). It is republished with the release's summary (every stage, recovery, retry, cancel,
rollback and incident) and after each drift check that names the release, so an agent needs
neither the ledger nor a flow run to read it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from blocks.git_repository import commits_with_trailer
from delivery.errors import DeliveryError, TransientError
from delivery.ledger import Ledger
from delivery.timeline import (
    TRACE_PAGE_SIZE,
    TimelineEntry,
    TraceEvent,
    collect_trace_events,
    commit_entries,
    event_entries,
    ledger_entries,
    merge,
    trace_events_filter,
)

logger = logging.getLogger(__name__)


def timeline_key(release_id: str) -> str:
    """The artifact's key for a release (lowercase letters, digits and dashes)."""
    return "timeline-" + re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")


def release_timeline(release_id: str, *, ledger: Ledger, repositories: dict[str, Path],
                     trace_events: Callable[[str], Iterable[TraceEvent]] | None,
                     ) -> tuple[list[TimelineEntry], list[str]]:
    """The release's timeline, oldest first, and notes on the sources that could not be read.

    Args:
        release_id: the release.
        ledger: where its decisions are.
        repositories: local bare repositories by name (application repositories and the GitOps one).
        trace_events: reads a trace's ``delivery.*`` events from Prefect, oldest first; None leaves them out.
    """
    recorded = ledger_entries(ledger, release_id)
    found = {name: commits_with_trailer(path, "Release-Id", release_id) for name, path in repositories.items()}
    commits = [entry for name, trailed in found.items() for entry in commit_entries(trailed, repository=name)]
    missing: list[str] = []
    events: list[TimelineEntry] = []
    # the ledger knows the trace once a plan exists; before that (a failed build), the commits' trailer does
    trace_id = next((plan.trace_id for plan in ledger.plans(release_id=release_id)), None) or next(
        (commit.trailers["Trace-Id"][0] for trailed in found.values() for commit in trailed
         if commit.trailers.get("Trace-Id")), None)
    if trace_id is None:
        missing.append("no trace id in the ledger or Git: Prefect's events left out")
    elif trace_events is None:
        missing.append("no Prefect API found: its events left out")
    else:
        try:
            events = event_entries(trace_events(trace_id))
        except DeliveryError as exc:
            missing.append(f"Prefect's events left out: {exc}")
    if not repositories:
        missing.append("no local repository known: Git's commits left out")
    return merge(recorded, commits, events), missing


def configured_repositories() -> dict[str, Path]:
    """The local repositories of the configured blocks: the Git host's (when local) and the GitOps one's."""
    from blocks.git_host import GitHost, LocalGitHost
    from blocks.gitops_repo import GitOpsRepo
    from blocks.loading import load_configured_block

    found: dict[str, Path] = {}
    host = load_configured_block("git_host", GitHost)
    if isinstance(host, LocalGitHost):
        found.update({path.name.removesuffix(".git"): path for path in sorted(Path(host.root).glob("*.git"))})
    gitops = Path(load_configured_block("gitops_repo", GitOpsRepo).url)
    if gitops.exists():
        found["gitops"] = gitops
    return found


def prefect_trace_events(trace_id: str, *, limit: int = 500) -> list[TraceEvent]:
    """A trace's ``delivery.*`` events, oldest first, through the Prefect client of this process.

    Raises:
        TransientError: the API could not be read.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter

    try:
        with get_client(sync_client=True) as client:
            first = client.read_events(filter=EventFilter.model_validate(trace_events_filter(trace_id)),
                                       limit=TRACE_PAGE_SIZE)
            return collect_trace_events(
                first.model_dump(mode="json"),
                lambda url: client.read_events_page(url).model_dump(mode="json"), limit=limit)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a missing source, said as such
        raise TransientError(f"Prefect's events could not be read: {type(exc).__name__}: {exc}") from exc


def publish_timeline(release_id: str, ledger: Ledger | None = None) -> None:
    """Republish the release's ``timeline-<release>`` table artifact. Never raises (logged): it is a view."""
    from prefect.artifacts import create_table_artifact

    try:
        entries, missing = release_timeline(release_id, ledger=ledger or Ledger(),
                                            repositories=configured_repositories(), trace_events=prefect_trace_events)
        rows = [entry.model_dump(mode="json") for entry in entries]
        create_table_artifact(key=timeline_key(release_id), table=rows,
                              description=f"Timeline of release {release_id}: {len(rows)} entries, oldest first"
                                          + (f" ({'; '.join(missing)})" if missing else ""))
    except Exception as exc:  # noqa: BLE001 - a view: the next change republishes it
        logger.warning("could not publish the timeline of %s: %s: %s", release_id, type(exc).__name__, exc)


__all__ = ["configured_repositories", "prefect_trace_events", "publish_timeline", "release_timeline", "timeline_key"]
